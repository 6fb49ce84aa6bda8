"""libvirt's capability probe (issue 29): the versioned entry points answer it as the real binaries did.

The recordings (tests/data/probe-X.Y.json.gz, tools/record_probe.py) hold every command libvirt 9.0 sent
to QEMU 7.2 and 11.1.3 while probing them, and the real answers. The waits are bounded conditions (a
process exits, a socket answers), never sleeps."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Qemu, wait_for
from vcpu_sched.probe import PROBE_VERSIONS, probe_answer

DATA = Path(__file__).parent / "data"
# libvirt 9.0's probe command line (seen through a wrapper that logged its argv), less the socket and pid file
PROBE_LINE = ["-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=kvm:tcg"]


def recording(version: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress((DATA / f"probe-{version}.json.gz").read_bytes()))
    return data


def shape(value: Any) -> Any:
    """Keys and types, not values: a list by its first member."""
    if isinstance(value, dict):
        return {key: shape(member) for key, member in value.items() if key != "id"}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def test_the_recordings_are_libvirts_probe() -> None:
    for version in PROBE_VERSIONS:
        data = recording(version)
        sent = [e["send"]["execute"] for e in data["exchanges"]]
        assert sent[:3] == ["qmp_capabilities", "query-version", "query-target"] and sent[-1] == "quit"
        static = {"query-qmp-schema", "query-machines", "query-cpu-definitions", "query-migrate-capabilities"}
        assert static <= set(sent)
        assert data["greeting"]["QMP"]["version"]["qemu"]["major"] == int(version.split(".")[0])


@pytest.mark.parametrize("version", PROBE_VERSIONS)
def test_every_probe_answer_has_the_real_answers_shape(version: str) -> None:
    chardevs = [("compat_monitor0", "/run/libvirt/qemu/qmp.monitor")]
    for exchange in recording(version)["exchanges"]:
        command = exchange["send"]
        if command["execute"] in ("qmp_capabilities", "quit"):  # the session's own: test_the_probe_over_qmp
            continue
        ours = probe_answer(version, command["execute"], command.get("arguments", {}), chardevs)
        assert shape(ours) == shape(exchange["receive"][-1]), command


@contextlib.contextmanager
def _connected(path: Path) -> Iterator[tuple[socket.socket, bytearray]]:
    """A client of the QMP socket at `path` (answers awaited 30 s at most) and its buffer of what it has read
    past the last message."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.settimeout(30)
        yield sock, bytearray()


def _receive(sock: socket.socket, buf: bytearray) -> dict[str, Any]:
    """The next message."""
    while b"\n" not in buf:
        chunk = sock.recv(1 << 20)
        assert chunk, "the monitor closed"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    message: dict[str, Any] = json.loads(line)
    return message


def _exchange(sock: socket.socket, buf: bytearray, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Send `message`; what comes until its answer, the answer last."""
    sock.sendall(json.dumps(message).encode() + b"\n")
    out = [_receive(sock, buf)]
    while out[-1].get("id") != message["id"]:
        out.append(_receive(sock, buf))
    return out


@pytest.mark.parametrize("version", PROBE_VERSIONS)
def test_the_entry_point_daemonizes_and_answers_the_probe(version: str, tmp_path: Path) -> None:
    """As libvirt starts it: -pidfile and -daemonize; the command returns 0 once the socket listens."""
    sock_path, pidfile = tmp_path / "qmp.monitor", tmp_path / "qmp.pid"
    entry = f"emulator_{version.replace('.', '_')}"
    argv = [sys.executable, "-c", f"from vcpu_sched.emulator import {entry}; {entry}()", *PROBE_LINE,
            "-qmp", f"unix:{sock_path},server=on,wait=off", "-pidfile", str(pidfile), "-daemonize"]
    started = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        real = recording(version)
        with _connected(sock_path) as (sock, buf):
            greeting = _exchange(sock, buf, {"execute": "qmp_capabilities", "id": "libvirt-1"})
            assert greeting[0]["QMP"]["version"]["qemu"] == real["greeting"]["QMP"]["version"]["qemu"]
            assert greeting[1] == {"return": {}, "id": "libvirt-1"}
            for n, exchange in enumerate(real["exchanges"][1:], 2):
                ours = _exchange(sock, buf, {**exchange["send"], "id": f"libvirt-{n}"})
                assert [shape(m) for m in ours] == [shape(m) for m in exchange["receive"]], exchange["send"]
        wait_for(lambda: not pidfile.exists(), 30)  # quit: the process ends and removes its pid file
        assert not sock_path.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _probe_process(sock_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`vcpu-sched qemu` answering the probe as 11.1 on `sock_path`, once it listens; killed if still there."""
    proc = subprocess.Popen([sys.executable, "-m", "vcpu_sched", "qemu", "--qemu-version", "11.1", *PROBE_LINE,
                             "-qmp", f"unix:{sock_path},server=on,wait=off"], stderr=subprocess.DEVNULL)
    try:
        wait_for(sock_path.exists, 60)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_ends_the_probe_process(tmp_path: Path) -> None:
    sock_path = tmp_path / "qmp.monitor"
    with _probe_process(sock_path) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not sock_path.exists()


def test_the_probe_refuses_bad_capabilities_as_qemu_does(tmp_path: Path) -> None:
    """The same answers as the model's own QMP server (test_qmp.CAPABILITY_ERRORS, from QEMU 7.2 and 11.1)."""
    from tests.test_qmp import CAPABILITY_ERRORS

    sock_path = tmp_path / "qmp.monitor"
    with _probe_process(sock_path), _connected(sock_path) as (sock, buf):
        _receive(sock, buf)  # the greeting
        for n, (args, desc) in enumerate(CAPABILITY_ERRORS):
            answer = _exchange(sock, buf, {"execute": "qmp_capabilities", "arguments": args, "id": n})
            assert answer[-1] == {"error": {"class": "GenericError", "desc": desc}, "id": n}, args
        answer = _exchange(sock, buf, {"execute": "query-version", "id": "after"})
        assert answer[-1]["error"]["class"] == "CommandNotFound"  # none of them negotiated
        answer = _exchange(sock, buf, {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 9})
        assert answer[-1] == {"return": {}, "id": 9}


@pytest.mark.parametrize("extra, needle", [
    ([], "-machine none: answers libvirt's probe as a recorded QEMU (no --qemu-version"),
    (["--qemu-version", "10.0"], "(--qemu-version 10.0; recorded: 7.2, 11.1)"),
    (["--qemu-version", "7.2", "-daemonize"], "-daemonize: only the versioned entry points"),
    (["--qemu-version", "7.2", "-machine", "none,accel=hvf"], "accelerator 'hvf' is not modelled"),
])
def test_bad_probe_command_lines_are_one_line_and_status_2(extra: list[str], needle: str, tmp_path: Path) -> None:
    argv = [*PROBE_LINE, "-qmp", f"unix:{tmp_path}/qmp.monitor,server=on,wait=off", *extra]
    proc = subprocess.run([sys.executable, "-m", "vcpu_sched", "qemu", *argv], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _libvirt_probe(emulator: str, root: Path) -> str:
    """`virsh domcapabilities` through libvirt's embedded QEMU driver: it probes the emulator in-process,
    no libvirtd to start or stop."""
    proc = subprocess.run(["virsh", "-c", f"qemu:///embed?root={root}", "domcapabilities", "--emulatorbin",
                           emulator, "--arch", "ppc64", "--machine", "pseries"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.replace(emulator, "EMULATOR")


@pytest.mark.real
@pytest.mark.skipif(shutil.which("virsh") is None, reason="libvirt is not installed (apt-get install libvirt-clients "
                                                          "libvirt-daemon-driver-qemu)")
@pytest.mark.skipif(os.geteuid() != 0, reason="libvirt's embedded QEMU driver runs the emulator as libvirt-qemu: root")
@pytest.mark.skipif(shutil.which("qemu-system-ppc64") is None, reason="qemu-system-ppc64 (7.2) is not installed")
def test_libvirt_learns_the_same_capabilities_from_the_model_as_from_qemu_72() -> None:
    entry = shutil.which("vcpu-sched-qemu-7.2") or str(Path(sys.executable).parent / "vcpu-sched-qemu-7.2")
    # libvirt runs the emulator as libvirt-qemu, which must reach the sockets: not under pytest's 0700 tmp_path
    root = Path(tempfile.mkdtemp(prefix="vcpu-sched-libvirt-"))
    try:
        root.chmod(0o755)
        real = _libvirt_probe(str(shutil.which("qemu-system-ppc64")), root / "real")
        ours = _libvirt_probe(entry, root / "ours")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert "<machine>pseries-7.2</machine>" in ours
    assert ours == real


# what libvirt asks a running domain, answered by a pseries run of the model as by the real binary of its release
DOMAIN_COMMANDS = ["query-version", "query-status", "query-migrate-capabilities", "query-migrate", "query-balloon",
                   "query-iothreads", "query-block", "query-qmp-schema", "query-commands"]


@pytest.mark.parametrize("version", PROBE_VERSIONS)
def test_a_domain_run_answers_as_its_release(version: str, tmp_path: Path) -> None:
    real = {e["send"]["execute"]: e["receive"][-1] for e in recording(version)["exchanges"]}
    q = Qemu(tmp_path, "--qemu-version", version, "-M", "pseries", "-smp", "2")
    try:
        with _connected(q.sock) as (sock, buf):
            greeting = _exchange(sock, buf, {"execute": "qmp_capabilities", "id": 0})
            assert greeting[0]["QMP"]["version"]["qemu"] == recording(version)["greeting"]["QMP"]["version"]["qemu"]
            for n, name in enumerate(DOMAIN_COMMANDS, 1):
                ours = _exchange(sock, buf, {"execute": name, "id": n})[-1]
                assert shape(ours) == shape(real[name]), name
            cpus = _exchange(sock, buf, {"execute": "query-cpus-fast", "id": "f"})[-1]["return"]
            # measured on both binaries (-M pseries -smp 2 -cpu POWER9): 11.1 adds qom-type (10.1's 6ca2eba6d3)
            assert ("qom-type" in cpus[0]) == (version == "11.1")
            names = {c["name"] for c in _exchange(sock, buf, {"execute": "query-commands", "id": "c"})[-1]["return"]}
            assert {"query-qmp-schema", "query-machines", "cont", "query-cpus-fast"} <= names
    finally:
        q.proc.kill()
        q.proc.wait()


def test_libvirts_domain_command_line_is_understood() -> None:
    """virsh domxml-to-native qemu-argv of a pseries domain of 4 vCPUs (8 at most) whose emulator is
    vcpu-sched-qemu-7.2 (libvirt 9.0): -smp's topology multiplies out to maxcpus, as QEMU's machine-smp.c
    wants; the options the model does not act on are reported."""
    from vcpu_sched.qemu_cmdline import parse_words

    line = parse_words(["-name", "guest=hang,debug-threads=on", "-S", "-machine",
                        "pseries-7.2,usb=off,dump-guest-core=off,memory-backend=ppc_spapr.ram", "-accel", "tcg",
                        "-cpu", "POWER9", "-m", "1024", "-overcommit", "mem-lock=off",
                        "-smp", "4,maxcpus=8,sockets=1,dies=1,cores=8,threads=1",
                        "-uuid", "b642e9c9-1478-475d-92fb-05ff7c5e145d", "-display", "none", "-no-user-config",
                        "-nodefaults", "-rtc", "base=utc", "-no-shutdown", "-boot", "strict=on",
                        "-sandbox", "on,obsolete=deny", "-msg", "timestamp=on"])
    assert line.overrides | {"smp": 4, "maxcpus": 8, "cores": 4, "cpu": "POWER9", "accel": "tcg"} == line.overrides
    assert {"-uuid", "-overcommit", "-rtc", "-no-shutdown", "-boot", "-sandbox", "-msg"} <= {o for o, _ in line.other}


def test_libvirts_monitor_fd_pty_devices_and_capabilities(tmp_path: Path) -> None:
    """As libvirt starts a domain: the monitor a listening socket passed as fd=N, the console a pty, -device
    lines with ids (qom-list /machine/peripheral), migration events turned on."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "monitor.sock"))
    listener.listen(1)
    fd = listener.fileno()
    argv = [sys.executable, "-m", "vcpu_sched", "qemu", "--qemu-version", "7.2", "-S", "-M", "pseries-7.2",
            "-smp", "2", "-chardev", f"socket,id=charmonitor,fd={fd},server=on,wait=off",
            "-mon", "chardev=charmonitor,id=monitor,mode=control", "-chardev", "pty,id=charserial0",
            "-device", '{"driver":"spapr-vty","chardev":"charserial0","id":"serial0","reg":805306368}']
    proc = subprocess.Popen(argv, pass_fds=[fd], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    listener.close()
    try:
        with _connected(tmp_path / "monitor.sock") as (sock, buf):

            def ask(name: str, **args: Any) -> dict[str, Any]:
                return _exchange(sock, buf, {"execute": name, "arguments": args, "id": name})[-1]

            assert ask("qmp_capabilities") == {"return": {}, "id": "qmp_capabilities"}
            chardevs = {c["label"]: c["filename"] for c in ask("query-chardev")["return"]}
            assert chardevs["charmonitor"] == f"unix:{tmp_path / 'monitor.sock'},server=on"
            assert chardevs["charserial0"].startswith("pty:/dev/pts/")
            assert ask("qom-list", path="/machine/peripheral")["return"] == [
                {"name": "type", "type": "string"}, {"name": "serial0", "type": "child<spapr-vty>"}]
            assert ask("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}]) == {
                "return": {}, "id": "migrate-set-capabilities"}
            states = {c["capability"]: c["state"] for c in ask("query-migrate-capabilities")["return"]}
            assert states["events"] is True and states["xbzrle"] is False
            bad = ask("migrate-set-capabilities", capabilities=[{"capability": "warp", "state": True}])
            assert bad["error"] == {"class": "GenericError",
                                    "desc": "Parameter 'capabilities[0].capability' does not accept value 'warp'"}
            assert ask("query-named-block-nodes", flat=True)["return"] == []
            powerdown = _exchange(sock, buf, {"execute": "system_powerdown", "id": "p"})
            assert [m.get("event") for m in powerdown] == ["POWERDOWN", None] and powerdown[-1]["return"] == {}
            # both binaries, measured: an id that names no device
            assert ask("device_del", id="core9")["error"] == {"class": "DeviceNotFound",
                                                               "desc": "Device 'core9' not found"}
    finally:
        proc.kill()
        proc.wait()


def test_a_chardev_fd_that_is_not_a_listening_socket_is_bad_input() -> None:
    proc = subprocess.run([sys.executable, "-m", "vcpu_sched", "qemu", "-chardev",
                           "socket,id=m,fd=0,server=on,wait=off", "-mon", "chardev=m,mode=control"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "fd=0 is not a listening stream socket" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.real
@pytest.mark.skipif(shutil.which("virsh") is None, reason="libvirt is not installed (apt-get install libvirt-clients "
                                                          "libvirt-daemon-driver-qemu)")
@pytest.mark.skipif(os.geteuid() != 0, reason="libvirt's embedded QEMU driver starts domains as root here")
def test_virsh_starts_suspends_resumes_and_destroys_a_domain_of_the_model() -> None:
    """libvirt's embedded QEMU driver (no libvirtd to leave running); the emulator runs as root (qemu.conf
    user/group), since the venv's interpreter may sit where libvirt-qemu cannot reach, and logs to a file
    (stdio_handler), since no virtlogd runs."""
    entry = shutil.which("vcpu-sched-qemu-7.2") or str(Path(sys.executable).parent / "vcpu-sched-qemu-7.2")
    root = Path(tempfile.mkdtemp(prefix="vcpu-sched-libvirt-"))
    try:
        (root / "etc").mkdir()
        (root / "etc" / "qemu.conf").write_text('stdio_handler = "file"\nuser = "root"\ngroup = "root"\n')
        xml = root / "domain.xml"
        xml.write_text((DATA / "libvirt" / "pseries.xml").read_text().replace("EMULATOR", entry))
        name = "vcpu-sched-pseries"
        script = (f"define {xml}; start {name}; domstate {name}; suspend {name}; domstate {name}; resume {name}; "
                  f"domstate {name}; destroy {name}; domstate {name}")
        proc = subprocess.run(["virsh", "-c", f"qemu:///embed?root={root}", script], capture_output=True,
                              text=True, timeout=300)
        states = [line for line in proc.stdout.splitlines() if line in ("running", "paused", "shut off")]
        assert states == ["running", "paused", "running", "shut off"], proc.stdout + proc.stderr
        assert f"Domain '{name}' destroyed" in proc.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _embedded_root() -> Path:
    """A root for libvirt's embedded QEMU driver that libvirt-qemu can reach; the emulator runs as root
    (the venv's interpreter may sit where libvirt-qemu cannot reach it) and logs to a file (no virtlogd)."""
    root = Path(tempfile.mkdtemp(prefix="vcpu-sched-libvirt-"))
    root.chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc" / "qemu.conf").write_text('stdio_handler = "file"\nuser = "root"\ngroup = "root"\n')
    return root


def _end_domain(root: Path, name: str) -> None:
    """Whatever virsh left running (a domain outlives the embedded driver) ends: its pid, from libvirt."""
    pidfile = root / "run" / "qemu" / f"{name}.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
                 .lower(), 30)


@pytest.mark.real
@pytest.mark.skipif(shutil.which("virsh") is None, reason="libvirt is not installed (apt-get install libvirt-clients "
                                                          "libvirt-daemon-driver-qemu)")
@pytest.mark.skipif(os.geteuid() != 0, reason="libvirt's embedded QEMU driver starts domains as root here")
@pytest.mark.parametrize("fix", [False, True])
def test_through_virsh_the_hang_blocks_suspend_and_the_fix_does_not(fix: bool) -> None:
    """virsh start of tests/data/libvirt/hang.xml (32 vCPUs, the model's KVM), then suspend once the guest
    has had time to reach its first H_SET_MODE (0.2 s of guest time; virsh's event wait gives it 3 s).
    Without the fix libvirt's `stop` is never answered: virsh is still waiting when the timeout ends it."""
    entry = shutil.which("vcpu-sched-qemu-11.1") or str(Path(sys.executable).parent / "vcpu-sched-qemu-11.1")
    name = "vcpu-sched-hang"
    root = _embedded_root()
    try:
        text = (DATA / "libvirt" / "hang.xml").read_text().replace("EMULATOR", entry)
        if fix:
            text = text.replace("<qemu:arg value='--fix'/><qemu:arg value='none'/>", "")
        (root / "domain.xml").write_text(text)
        script = (f"define {root / 'domain.xml'}; start {name}; event --all --timeout 3; suspend {name}; "
                  f"domstate {name}; resume {name}; domstate {name}; destroy {name}")
        argv = ["virsh", "-c", f"qemu:///embed?root={root}", script]
        env = {**os.environ, "LIBVIRT_LOG_FILTERS": "1:qemu.qemu_monitor",
               "LIBVIRT_LOG_OUTPUTS": f"1:file:{root / 'monitor.log'}"}
        if fix:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
            states = [line for line in proc.stdout.splitlines() if line in ("running", "paused")]
            assert states == ["paused", "running"], proc.stdout + proc.stderr
            assert f"Domain '{name}' destroyed" in proc.stdout
            return
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(argv, capture_output=True, timeout=20, env=env)
        sent = [line for line in (root / "monitor.log").read_text().splitlines() if "QEMU_MONITOR_SEND_MSG" in line]
        assert '"execute":"stop"' in sent[-1]  # the last command libvirt sent, and no reply to it
        log = (root / "log" / "qemu" / f"{name}.log").read_text()
        assert "holding the BQL" in log
    finally:
        _end_domain(root, name)
        shutil.rmtree(root, ignore_errors=True)


def test_a_hot_added_core_is_named_by_its_id_everywhere(tmp_path: Path) -> None:
    """As libvirt's `setvcpus --live` adds one (device_add driver, id=vcpuN, core-id, node-id): QOM puts it at
    /machine/peripheral/ID (qdev_set_id), and query-hotpluggable-cpus, query-cpus-fast and qom-list agree."""
    q = Qemu(tmp_path, "--qemu-version", "11.1", "-M", "pseries", "-smp", "1,maxcpus=3", "-cpu", "POWER10")
    try:
        with _connected(q.sock) as (sock, buf):

            def ask(name: str, **args: Any) -> Any:
                return _exchange(sock, buf, {"execute": name, "arguments": args, "id": name})[-1]

            ask("qmp_capabilities")
            driver = ask("query-hotpluggable-cpus")["return"][0]["type"]
            assert ask("device_add", driver=driver, id="vcpu1", **{"core-id": 1, "node-id": 0}) == {
                "return": {}, "id": "device_add"}
            assert ask("device_add", driver=driver, **{"core-id": 2}) == {"return": {}, "id": "device_add"}
            slots = {s["props"]["core-id"]: s.get("qom-path") for s in ask("query-hotpluggable-cpus")["return"]}
            assert slots == {0: "/machine/unattached/device[1]", 1: "/machine/peripheral/vcpu1",
                             2: "/machine/peripheral-anon/device[0]"}
            paths = [c["qom-path"] for c in ask("query-cpus-fast")["return"]]
            assert paths == [f"{slots[n]}/thread[0]" for n in range(3)]
            peripherals = ask("qom-list", path="/machine/peripheral")["return"]
            assert {"name": "vcpu1", "type": f"child<{driver}>"} in peripherals
    finally:
        q.proc.kill()
        q.proc.wait()


# A libvirtd of the test's own: Debian's daemon as root, but in a mount namespace (unshare) where libvirt's
# directories are ones under a temporary root, so its qemu.conf (the emulator runs as root and logs to a
# file, no cgroups), its domains, sockets, logs and capability cache are the test's, and the system's
# libvirt - running or not - is not touched. virsh, outside the namespace, reaches it by its socket path.
LIBVIRT_DIRS = {"etc": "/etc/libvirt", "run": "/run", "lib": "/var/lib/libvirt", "log": "/var/log/libvirt",
                "cache": "/var/cache/libvirt"}


def needs_libvirtd(test: Any) -> Any:
    for mark in [
        pytest.mark.skipif(os.geteuid() != 0, reason="libvirtd's QEMU driver starts domains as root here"),
        pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is not installed"),
        pytest.mark.skipif(shutil.which("virsh") is None or shutil.which("libvirtd") is None,
                           reason="libvirt is not installed (apt-get install libvirt-daemon-system libvirt-clients)"),
        pytest.mark.real,
    ]:
        test = mark(test)
    return test


class Libvirtd:
    def __init__(self, root: Path, proc: subprocess.Popen[bytes]) -> None:
        self.root, self.proc = root, proc
        self.uri = f"qemu:///system?socket={root / 'run' / 'libvirt' / 'libvirt-sock'}"

    def virsh(self, *words: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["virsh", "-c", self.uri, *words], capture_output=True, text=True, timeout=timeout)

    def background(self, *words: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["virsh", "-c", self.uri, *words], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def monitor_log(self) -> str:
        """What libvirtd sent each domain's monitor and heard back (log_filters qemu.qemu_monitor)."""
        path = self.root / "log" / "libvirtd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def domain_log(self, name: str) -> str:
        path = self.root / "log" / "qemu" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def end_domain(self, name: str) -> None:
        """A domain outlives its libvirtd: whatever the test left running ends, by the pid libvirt wrote."""
        pidfile = self.root / "run" / "libvirt" / "qemu" / f"{name}.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30)


@contextlib.contextmanager
def private_libvirtd() -> Iterator[Libvirtd]:
    root = Path(tempfile.mkdtemp(prefix="vcpu-sched-libvirtd-"))
    root.chmod(0o755)  # the emulator reaches its files here
    for name in LIBVIRT_DIRS:
        (root / name).mkdir()
    (root / "run" / "libvirt").mkdir()
    (root / "etc" / "qemu.conf").write_text('stdio_handler = "file"\nuser = "root"\ngroup = "root"\n'
                                            'cgroup_controllers = [ ]\n')
    (root / "etc" / "libvirtd.conf").write_text('log_filters = "1:qemu.qemu_monitor"\n'
                                                'log_outputs = "1:file:/var/log/libvirt/libvirtd.log"\n')
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip("unshare --mount is not allowed here (a container without CAP_SYS_ADMIN)")
    mounts = " && ".join(f"mount --bind {root / name} {target}" for name, target in LIBVIRT_DIRS.items())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBVIRT_", "VIRSH_"))}
    with (root / "libvirtd.out").open("wb") as out:
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                 f"mkdir -p {' '.join(LIBVIRT_DIRS.values())} && {mounts} && exec libvirtd"],
                                stdout=subprocess.DEVNULL, stderr=out, env=env)
    daemon = Libvirtd(root, proc)
    try:
        sock = root / "run" / "libvirt" / "libvirt-sock"
        wait_for(lambda: sock.exists() or proc.poll() is not None, 60)
        assert proc.poll() is None, (root / "libvirtd.out").read_text()
        yield daemon
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _hang_domain(daemon: Libvirtd, fix: bool) -> str:
    """tests/data/libvirt/hang.xml on vcpu-sched-qemu-11.1, with the model's event log (--log) in the
    daemon's root; `fix`: the --fix line removed (11.1 carries the fix) and 16 of the 32 vCPUs started."""
    entry = shutil.which("vcpu-sched-qemu-11.1") or str(Path(sys.executable).parent / "vcpu-sched-qemu-11.1")
    text = (DATA / "libvirt" / "hang.xml").read_text().replace("EMULATOR", entry)
    events = daemon.root / "events.jsonl"
    text = text.replace("<qemu:commandline>", f"<qemu:commandline>\n    <qemu:arg value='--log'/>"
                                              f"<qemu:arg value='{events}'/>")
    if fix:
        text = text.replace("<qemu:arg value='--fix'/><qemu:arg value='none'/>", "")
        text = text.replace("<vcpu placement='static'>32</vcpu>", "<vcpu placement='static' current='16'>32</vcpu>")
    (daemon.root / "domain.xml").write_text(text)
    return str(daemon.root / "domain.xml")


def _event_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@needs_libvirtd
def test_through_libvirtd_a_second_command_meets_the_state_change_lock() -> None:
    """As production meets the hang: libvirtd's first `virsh suspend` sends `stop`, which the model never
    answers (a vCPU holds the BQL), and holds the domain's job while it waits; a second `virsh suspend`
    and a `virsh setvcpus` wait libvirt's 30 s for that job and fail with its own error. `virsh destroy`
    (which needs no job) ends the emulator with SIGTERM, and the model's event log ends with its run_end."""
    name = "vcpu-sched-hang"
    with private_libvirtd() as daemon:
        first: subprocess.Popen[str] | None = None
        try:
            xml = _hang_domain(daemon, fix=False)
            assert daemon.virsh("define", xml).returncode == 0
            started = daemon.virsh("start", name)
            assert started.returncode == 0, started.stderr
            wait_for(lambda: "holding the BQL" in daemon.domain_log(name), 120)  # the model's lockup report
            first = daemon.background("suspend", name)
            wait_for(lambda: '"execute":"stop"' in daemon.monitor_log(), 60)  # it holds the job, waiting
            second = daemon.background("suspend", name)
            setvcpus = daemon.background("setvcpus", name, "8", "--live")
            lock = "cannot acquire state change lock (held by monitor=remoteDispatchDomainSuspend)"
            for proc in (second, setvcpus):
                out, err = proc.communicate(timeout=120)
                assert proc.returncode == 1 and f"error: Timed out during operation: {lock}" in err, out + err
            assert first.poll() is None  # still waiting for stop's answer
            destroyed = daemon.virsh("destroy", name)
            assert destroyed.returncode == 0 and f"Domain '{name}' destroyed" in destroyed.stdout, destroyed.stderr
            _, err = first.communicate(timeout=60)
            assert first.returncode == 1 and "error: Failed to suspend domain" in err
            assert daemon.virsh("domstate", name).stdout.strip() == "shut off"
            events = _event_log(daemon.root / "events.jsonl")
            assert events[0]["event"] == "run_start" and events[-1]["event"] == "run_end"
            assert events[-1]["reason"] == "killed (SIGTERM)"  # SIGTERM from libvirt's destroy, the log closed
            assert [e["holder"] for e in events if e["event"] == "watchdog_fired"] == ["CPU 1/KVM"]  # the report
            log = daemon.domain_log(name)
            assert "vcpu-sched: killed" in log and "shutting down, reason=destroyed" in log
        finally:
            if first is not None and first.poll() is None:
                first.kill()
                first.wait()
            daemon.end_domain(name)


def _console_lines(path: Path) -> list[str]:
    """The guest's console lines in the model's event log (the domain's console is a pty nobody reads)."""
    if not path.exists():
        return []
    return [e["text"] for e in _event_log(path) if e["event"] == "console"]


@needs_libvirtd
def test_through_libvirtd_the_fix_lets_suspend_setvcpus_and_reboot_work() -> None:
    """With the fix (hang.xml less its --fix line, 16 of 32 vCPUs started): suspend and resume; `setvcpus
    17 --live` hot-adds a core (device_add), which the guest onlines on the hotplug event; `virsh reboot`
    sends system_powerdown, the guest takes the EPOW event and powers off through RTAS, QEMU stops in
    run state shutdown (-no-shutdown) and libvirt's fake reboot sends system_reset and cont: the guest
    boots again, with the added CPU. Then destroy."""
    name = "vcpu-sched-hang"
    with private_libvirtd() as daemon:
        watcher: subprocess.Popen[str] | None = None
        try:
            xml = _hang_domain(daemon, fix=True)
            log = daemon.root / "events.jsonl"
            assert daemon.virsh("define", xml).returncode == 0
            watcher = daemon.background("event", "--domain", name, "--all", "--loop")
            started = daemon.virsh("start", name)
            assert started.returncode == 0, started.stderr
            wait_for(lambda: "smp: Brought up 1 node, 16 CPUs" in _console_lines(log), 120)
            for verb, state in [("suspend", "paused"), ("resume", "running")]:
                done = daemon.virsh(verb, name)
                assert done.returncode == 0, done.stderr
                assert daemon.virsh("domstate", name).stdout.strip() == state
            added = daemon.virsh("setvcpus", name, "17", "--live")
            assert added.returncode == 0, added.stderr
            wait_for(lambda: "smp: 17 CPUs online after the hotplug" in _console_lines(log), 60)
            assert daemon.virsh("vcpucount", name, "--live", "--active").stdout.strip() == "17"
            rebooted = daemon.virsh("reboot", name)
            assert rebooted.returncode == 0 and f"Domain '{name}' is being rebooted" in rebooted.stdout, rebooted.stderr
            wait_for(lambda: _console_lines(log).count("smp: Brought up 1 node, 17 CPUs") == 1, 120)
            lines = _console_lines(log)
            assert lines.index("Power off requested") < lines.index("reboot: Power down") < lines.index(
                "smp: Brought up 1 node, 17 CPUs")
            assert daemon.virsh("domstate", name).stdout.strip() == "running"
            sent = [line.split("msg=", 1)[1] for line in daemon.monitor_log().splitlines()
                    if "QEMU_MONITOR_SEND_MSG" in line and "msg=" in line]
            after = sent[next(i for i, m in enumerate(sent) if "system_powerdown" in m):]
            assert ['"execute":"system_reset"' in m for m in after[1:3]] == [True, False], after[:4]
            assert '"execute":"cont"' in after[2], after[:4]
            heard = [line for line in daemon.monitor_log().splitlines() if "QEMU_MONITOR_RECV_EVENT" in line]
            assert any('"SHUTDOWN"' in line and '"reason": "guest-shutdown"' in line for line in heard), heard
            destroyed = daemon.virsh("destroy", name)
            assert destroyed.returncode == 0, destroyed.stderr
        finally:
            if watcher is not None:
                watcher.terminate()
                out, _ = watcher.communicate(timeout=30)
                print(out)
            daemon.end_domain(name)


@pytest.mark.parametrize("version", PROBE_VERSIONS)
def test_system_powerdown_goes_as_with_real_qemu_and_a_real_guest(version: str, tmp_path: Path) -> None:
    """tests/data/libvirt/powerdown-X.Y.json (tools/record_probe.py --powerdown): the real binary booted a
    real Linux guest with -no-shutdown; system_powerdown, then what libvirt's fake reboot sends. The model,
    on the same command line once its guest idles, sends the same messages in the same order (timestamps
    aside) and its guest prints the same kernel lines: the EPOW event, orderly_poweroff, RTAS power-off,
    run state shutdown; cont refused until system_reset, which leaves prelaunch."""
    real = json.loads((DATA / "libvirt" / f"powerdown-{version}.json").read_text())
    q = Qemu(tmp_path, "--qemu-version", version, *[w for w in real["argv"] if w not in ("-nographic", "-serial",
                                                                                         "stdio")],
             paused=False)
    try:
        wait_for(lambda: "smp: Brought up 1 node, 2 CPUs" in q.console(), 60)
        wait_for(lambda: any(json.loads(line)["event"] == "guest_finished"
                             for line in q.log.read_text().splitlines()), 60)  # the boot CPU idles
        with _connected(q.sock) as (sock, buf):
            _exchange(sock, buf, {"execute": "qmp_capabilities", "id": "qmp_capabilities"})
            for exchange in real["exchanges"]:
                name = exchange["send"]["execute"]
                ours = _exchange(sock, buf, {"execute": name, "id": name})
                while len(ours) < len(exchange["receive"]):  # system_powerdown's events after its answer
                    ours.append(_receive(sock, buf))
                assert [{k: v for k, v in m.items() if k != "timestamp"} for m in ours] == exchange["receive"], name
        kernel = [line for line in q.console().splitlines() if line in real["console"]]
        assert kernel == real["console"]
        wait_for(lambda: q.console().count("smp: Brought up 1 node, 2 CPUs") == 2, 60)  # it boots again
    finally:
        q.proc.kill()
        q.proc.wait()
