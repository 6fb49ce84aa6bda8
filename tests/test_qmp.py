"""`vcpu-sched qemu` driven by the QEMU project's own QMP client (qemu.qmp), as a management tool would.

These run a real process in real time (guest time = wall time): the waits are bounded conditions (a
socket appears, a console line appears, an answer comes or a timeout passes), never sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import Qemu, wait_for

qmp = pytest.importorskip("qemu.qmp")

SEED_LINE = ["-M", "pseries,accel=kvm", "-smp", "32,sockets=1,cores=32,threads=1", "-cpu", "host", "-m", "32768"]
TRANSCRIPT = Path(__file__).parent / "data" / "qmp-7.2" / "transcript.jsonl"


@pytest.fixture
def seed(tmp_path: Path) -> Iterator[Qemu]:
    q = Qemu(tmp_path, *SEED_LINE)
    yield q
    if q.proc.poll() is None:
        q.proc.kill()
        q.proc.wait()


@pytest.fixture
def fixed(tmp_path: Path) -> Iterator[Qemu]:
    q = Qemu(tmp_path, "--fix", "quiesced", *SEED_LINE)
    yield q
    if q.proc.poll() is None:
        q.proc.kill()
        q.proc.wait()


def test_the_seed_hang_as_a_client_sees_it(seed: Qemu) -> None:
    async def session() -> None:
        client = qmp.QMPClient("test")
        listener = qmp.EventListener()
        client.register_listener(listener)
        await client.connect(str(seed.sock))
        assert await client.execute("query-status") == {"running": False, "singlestep": False, "status": "prelaunch"}
        cpus = await client.execute("query-cpus-fast")
        assert [c["cpu-index"] for c in cpus] == list(range(32))
        real_tids = {t.id for t in psutil.Process(seed.proc.pid).threads()}
        assert all(c["thread-id"] in real_tids for c in cpus)
        assert set(cpus[0]) == {"cpu-index", "props", "qom-path", "target", "thread-id"}
        await client.execute("cont")
        event = await asyncio.wait_for(listener.get(), 10)
        assert event["event"] == "RESUME"
        # The boot reaches its first H_SET_MODE some 50 ms later; from then on CPU 1 spins holding the BQL
        # and in-band commands are never answered (those sent before that are) ...
        answered = 0
        with pytest.raises(asyncio.TimeoutError):
            while answered < 20:
                assert (await asyncio.wait_for(client.execute("query-status"), 3))["status"] == "running"
                answered += 1
        # ... while an out-of-band one is, by the monitor's I/O side.
        assert await asyncio.wait_for(client.execute("query-yank", oob=True), 5) == [
            {"id": "compat_monitor0", "type": "chardev"}]
        await client.disconnect()

    asyncio.run(session())
    seed.proc.send_signal(signal.SIGTERM)
    assert seed.proc.wait(timeout=30) == 143
    last = json.loads(seed.log.read_text().splitlines()[-1])
    assert last["event"] == "run_end" and last["reason"] == "killed (SIGTERM)"


def test_with_the_fix_a_whole_session(fixed: Qemu) -> None:
    async def session() -> list[dict]:
        client = qmp.QMPClient("test")
        listener = qmp.EventListener()
        client.register_listener(listener)
        await client.connect(str(fixed.sock))
        events = []

        async def expect(command: str, event: str) -> None:
            assert await asyncio.wait_for(client.execute(command), 10) == {}
            got = await asyncio.wait_for(listener.get(), 10)
            assert got["event"] == event
            events.append(dict(got))

        await expect("cont", "RESUME")
        await asyncio.get_running_loop().run_in_executor(
            None, wait_for, lambda: "smp: Brought up 1 node, 32 CPUs" in fixed.console(), 60)
        assert (await client.execute("query-status"))["status"] == "running"
        await expect("stop", "STOP")
        assert await client.execute("query-status") == {"running": False, "singlestep": False, "status": "paused"}
        await expect("cont", "RESUME")
        await expect("system_reset", "RESET")
        status = await client.execute("human-monitor-command", {"command-line": "info status"})
        assert status == "VM status: running\r\n"
        commands = {c["name"] for c in await client.execute("query-commands")}  # type: ignore[union-attr]
        assert {"query-status", "cont", "stop", "quit", "query-cpus-fast"} <= commands
        await expect("quit", "SHUTDOWN")
        with contextlib.suppress(EOFError):  # the server hung up after quit, as QEMU does when it exits
            await client.disconnect()
        return events

    events = asyncio.run(session())
    assert [e["event"] for e in events] == ["RESUME", "STOP", "RESUME", "RESET", "SHUTDOWN"]
    assert "data" not in events[0] and "data" not in events[1]
    assert events[3]["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    assert events[4]["data"] == {"guest": False, "reason": "host-qmp-quit"}
    assert fixed.proc.wait(timeout=30) == 0


def _exchange(sock: socket.socket, text: str) -> list[dict]:
    sock.sendall(text.encode() + b"\n")
    data = b""
    sock.settimeout(10)
    while not data.endswith(b"\r\n"):
        data += sock.recv(65536)
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def test_answers_have_the_shapes_and_errors_of_real_qemu(fixed: Qemu) -> None:
    """Every exchange of the real QEMU 7.2 transcript up to `cont`, replayed against ours: same error class
    and wording, same keys in every answer."""
    records = [json.loads(line) for line in TRANSCRIPT.read_text().splitlines()]
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(fixed.sock))
        sock.settimeout(10)
        greeting = json.loads(sock.recv(65536))
        assert set(greeting["QMP"]) == set(records[0]["receive"][0]["QMP"])
        for record in records[1:]:
            if record.get("send") is None or '"cont"' in record["send"]:
                break
            real = record["receive"][-1]
            ours = _exchange(sock, record["send"])[-1]
            assert set(ours) == set(real), record["send"]
            if "error" in real:
                assert ours["error"] == real["error"], record["send"]
            elif isinstance(real["return"], list) and real["return"]:
                assert set(ours["return"][0]) == set(real["return"][0]), record["send"]
            elif isinstance(real["return"], dict) and "name" not in record["send"]:
                assert set(ours["return"]) == set(real["return"]), record["send"]


def test_malformed_messages_get_error_objects_and_the_session_goes_on(fixed: Qemu) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(fixed.sock))
        sock.settimeout(10)
        sock.recv(65536)
        for bad in ('{"execute": nope}', "\x00\xff binary", '"just a string"'):
            answer = _exchange(sock, bad)[-1]
            assert answer["error"]["class"] == "GenericError" and answer["error"]["desc"], bad
        sock.sendall(b"{" * (2 << 20))  # a runaway message with no end
        data = b""
        while not data.endswith(b"\r\n"):
            data += sock.recv(65536)
        assert "too large" in json.loads(data)["error"]["desc"]
        assert "error" in _exchange(sock, "")[-1]  # the rest of it, ended by a newline, is an error too
        assert _exchange(sock, '{"execute": "qmp_capabilities"}')[-1] == {"return": {}}


def test_before_negotiation_every_other_command_is_not_found_with_qemus_hint(fixed: Qemu) -> None:
    """monitor_qmp_dispatch replaces the CommandNotFound of any command before negotiation, unknown ones too
    (Debian's QEMU 7.2.22 answers `no-such-command` so, checked by hand on 2026-12-05)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(fixed.sock))
        sock.settimeout(10)
        sock.recv(65536)
        for command in ("no-such-command", "query-status"):
            answer = _exchange(sock, json.dumps({"execute": command}))[-1]
            assert answer["error"] == {"class": "CommandNotFound",
                                       "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}
        assert _exchange(sock, '{"execute": "qmp_capabilities"}')[-1] == {"return": {}}
        answer = _exchange(sock, '{"execute": "no-such-command"}')[-1]
        assert answer["error"]["desc"] == "The command no-such-command has not been found"


# qmp_capabilities' answers of Debian's QEMU 7.2.22 and 11.1.3 (`-M none -qmp stdio`, checked by hand on
# 2026-12-05; the two say the same).
CAPABILITY_ERRORS = [
    ({"enable": ["foo"]}, "Parameter 'null' does not accept value 'foo'"),
    ({"enable": [1]}, "Invalid parameter type for 'enable[0]', expected: string"),
    ({"enable": "oob"}, "Invalid parameter type for 'enable', expected: array"),
    ({"enable": ["foo", 1]}, "Parameter 'null' does not accept value 'foo'"),
    ({"enable": [1, "foo"]}, "Invalid parameter type for 'enable[0]', expected: string"),
]


def test_qmp_capabilities_refuses_what_qemu_refuses_in_its_words(fixed: Qemu) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(fixed.sock))
        sock.settimeout(10)
        sock.recv(65536)
        for args, desc in CAPABILITY_ERRORS:
            answer = _exchange(sock, json.dumps({"execute": "qmp_capabilities", "arguments": args}))[-1]
            assert answer == {"error": {"class": "GenericError", "desc": desc}}, args
        # none of them negotiated: the session still expects qmp_capabilities
        answer = _exchange(sock, '{"execute": "query-status"}')[-1]
        assert answer["error"]["class"] == "CommandNotFound"
        negotiate = {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}
        assert _exchange(sock, json.dumps(negotiate))[-1] == {"return": {}}


@pytest.mark.parametrize("argv, needle", [
    (["-daemonize"], "-daemonize"),
    (["-qmp", "unix:/tmp/x.sock,server=on,wait=on"], "wait=on"),
    (["-qmp", "bogus:1"], "expected unix:PATH or tcp:HOST:PORT"),
    (["-mon", "chardev=nope,mode=control"], "no -chardev socket with id=nope"),
    (["-M", "q35"], "not modelled"),
])
def test_bad_command_lines_are_one_line_and_status_2(argv: list[str], needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "vcpu_sched", "qemu", *argv], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("qemu-system-ppc64") is None,
                    reason="qemu-system-ppc64 is not installed (apt-get install qemu-system-ppc)")
def test_same_shapes_as_the_installed_qemu(tmp_path: Path) -> None:
    line = ["-M", "pseries", "-smp", "4", "-m", "1G", "-S", "-nographic", "-serial", "null"]
    real_sock, ours = tmp_path / "real.sock", Qemu(tmp_path, *line[:-4])
    real = subprocess.Popen(["qemu-system-ppc64", *line, "-monitor", "none", "-qmp",
                             f"unix:{real_sock},server=on,wait=off"], stdin=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    async def ask(path: Path) -> dict[str, object]:
        client = qmp.QMPClient("test")
        await client.connect(str(path))
        out = {cmd: await client.execute(cmd) for cmd in ("query-status", "query-cpus-fast",
                                                          "query-hotpluggable-cpus", "query-kvm")}
        await client.execute("quit")
        with contextlib.suppress(EOFError):
            await client.disconnect()
        return out

    try:
        wait_for(real_sock.exists, 60)
        theirs, mine = asyncio.run(ask(real_sock)), asyncio.run(ask(ours.sock))
    finally:
        real.kill()
        ours.proc.kill()
        real.wait()
        ours.proc.wait()
    assert mine["query-status"] == theirs["query-status"] == {"running": False, "singlestep": False,
                                                             "status": "prelaunch"}
    assert mine["query-kvm"] == theirs["query-kvm"]
    for cmd in ("query-cpus-fast", "query-hotpluggable-cpus"):
        assert len(mine[cmd]) == len(theirs[cmd]) == 4  # type: ignore[arg-type]
        for a, b in zip(mine[cmd], theirs[cmd], strict=True):  # type: ignore[call-overload]
            assert set(a) == set(b) and a["props"] == b["props"] and a["qom-path"] == b["qom-path"]


def test_sigint_ends_it_with_the_log_complete(seed: Qemu) -> None:
    seed.proc.send_signal(signal.SIGINT)
    assert seed.proc.wait(timeout=30) == 130
    assert json.loads(seed.log.read_text().splitlines()[-1])["event"] == "run_end"
    assert os.path.exists(seed.log)


def test_tcp_several_clients_one_after_another(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "vcpu_sched", "qemu", "-M", "pseries", "-smp", "2", "-S",
                             "-name", "guest=vm1,debug-threads=on", "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def one(last: bool) -> object:
        client = qmp.QMPClient("test")
        await client.connect(("127.0.0.1", port))
        name = await client.execute("query-name")
        if last:
            await client.execute("quit")
        with contextlib.suppress(EOFError):
            await client.disconnect()
        return name

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, 60)
        assert [asyncio.run(one(last)) for last in (False, False, True)] == [{"name": "vm1"}] * 3
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_threads_engine_thread_ids_are_the_vcpus_own_threads(tmp_path: Path) -> None:
    """With --engine threads each vCPU is its own OS thread: the thread-id libvirt would pin is that thread,
    named as QEMU names it, and the one that spins is CPU 1's."""
    q = Qemu(tmp_path, "--engine", "threads", "-M", "pseries,accel=kvm", "-smp", "4", "-cpu", "host")

    async def session() -> list[dict]:
        client = qmp.QMPClient("test")
        await client.connect(str(q.sock))
        cpus = await client.execute("query-cpus-fast")
        await client.execute("cont")
        with pytest.raises(asyncio.TimeoutError):
            for _ in range(20):
                await asyncio.wait_for(client.execute("query-status"), 3)
        await client.disconnect()
        return cpus  # type: ignore[return-value]

    try:
        cpus = asyncio.run(session())
        ids = [c["thread-id"] for c in cpus]
        assert len(set(ids)) == 4
        names = {tid: Path(f"/proc/{q.proc.pid}/task/{tid}/comm").read_text().strip() for tid in ids}
        assert [names[tid] for tid in ids] == [f"CPU {i}/KVM" for i in range(4)]
        spinner = psutil.Process(q.proc.pid)
        busy = {t.id: t.user_time + t.system_time for t in spinner.threads()}
        assert max(busy, key=lambda tid: busy[tid]) == ids[1]
        q.proc.send_signal(signal.SIGTERM)
        assert q.proc.wait(timeout=30) == 143
    finally:
        q.proc.kill()
        q.proc.wait()


def test_a_client_that_resets_the_connection_does_not_end_qemu(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "vcpu_sched", "qemu", "-M", "pseries", "-smp", "2", "-S",
                             "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def connect() -> socket.socket:
        deadline = time.monotonic() + 60
        while True:
            sock = socket.socket()
            try:
                sock.connect(("127.0.0.1", port))
                return sock
            except ConnectionRefusedError:
                sock.close()
                assert time.monotonic() < deadline
                time.sleep(0.05)

    try:
        with connect() as sock:
            sock.settimeout(10)
            sock.recv(65536)
            sock.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "query-status"}\n')
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
        with connect() as sock:  # the next client is served
            sock.settimeout(10)
            assert "QMP" in json.loads(sock.recv(65536))
            assert _exchange(sock, '{"execute": "qmp_capabilities"}')[-1] == {"return": {}}
            _exchange(sock, '{"execute": "quit"}')
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


# Without the fix the kdump kernel waits 5 s for a CPU that never calls in, on the wall clock here: slow.
# The default suite keeps inject-nmi over QMP (with the fix) and the scenario's verdicts (test_scenarios).
@pytest.mark.parametrize("nmi_fix,console_line", [
    pytest.param(False, "start-cpu failed: -1", marks=pytest.mark.slow),
    (True, "smp: Brought up 1 node, 4 CPUs")])
def test_inject_nmi_over_qmp_dumps_the_guest(tmp_path: Path, nmi_fix: bool, console_line: str) -> None:
    """What `virsh inject-nmi` does: QMP inject-nmi resets every CPU (spapr_nmi), the guest dumps itself,
    and its kdump kernel cannot start the CPUs it never started - unless spapr_nmi skips quiesced ones."""
    q = Qemu(tmp_path, "--scenario", "spapr-nmi-kdump", "--set", "monitor=[]",
             "--set", f"nmi_fix={str(nmi_fix).lower()}", "-M", "pseries,accel=kvm", "-smp", "4", "-cpu", "host")

    async def session() -> object:
        client = qmp.QMPClient("test")
        await client.connect(str(q.sock))
        await client.execute("cont")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, wait_for, lambda: "idle: waiting for an NMI" in q.console(), 60)
        answer = await client.execute("inject-nmi")
        await loop.run_in_executor(None, wait_for, lambda: "kdump: kernel booted" in q.console(), 60)
        await client.execute("quit")
        with contextlib.suppress(EOFError):
            await client.disconnect()
        return answer

    try:
        assert asyncio.run(session()) == {}
        assert console_line in q.console()
        assert q.proc.wait(timeout=30) == 0
    finally:
        if q.proc.poll() is None:
            q.proc.kill()
            q.proc.wait()
