#!/usr/bin/env python3
"""Record what a real QEMU answers to libvirt's capability probe (issue 29).

    tools/record_probe.py [QEMU-BINARY]   (default: qemu-system-ppc64 on PATH)
    tools/record_probe.py --powerdown [QEMU-BINARY]

Starts the binary with the command line libvirt 9.0 gives it for the probe (PROBE_ARGV: virsh
domcapabilities --emulatorbin ... --arch ppc64 --machine pseries, seen through a wrapper that logged its
argv; without `-pidfile` and `-daemonize`, which change nothing on QMP), sends PROBE (every command libvirt
sent, in its order, read from its log with log_filters="1:qemu.qemu_monitor": the union of what it sent to
7.2 and to 11.1.3; the typenames of the pseries machine follow the version), then `quit`, and writes

- tests/data/probe-X.Y.json.gz: {"argv", "greeting", "exchanges": [{"send", "receive"}], "exit_status"},
  every answer whole (query-qmp-schema and qom-list-types are large: gzip-compressed);
- vcpu_sched/probe_data/X.Y.json.gz: what `vcpu-sched qemu --qemu-version X.Y` answers from it,
  {"greeting": ..., "answers": {KEY: answer}}, KEY = probe_key(command, arguments).

With --powerdown it records instead what `virsh reboot` meets (libvirt's fake reboot): the binary boots the
real-QEMU kit's Linux guest (`vcpu-sched real`'s kernel and busybox, `python3 tools/dev.py real-qemu`) under
TCG with -no-shutdown and an /init that powers off on SIGUSR2 as busybox's init does; once it is up,
POWERDOWN's commands, every message each brings (system_powerdown's until the STOP event; timestamps
dropped), and the guest's kernel lines about it, to tests/data/libvirt/powerdown-X.Y.json.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from record_qemu_trace import connect_unix  # noqa: E402

from vcpu_sched.probe import probe_key  # noqa: E402

PROBE_ARGV = ["-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=kvm:tcg"]
DEVICES = ["virtio-blk-pci", "virtio-net-pci", "virtio-scsi-pci", "virtio-net-ccw", "virtio-scsi-ccw", "vfio-pci",
           "scsi-hd", "ide-hd", "PIIX4_PM", "usb-redir", "usb-storage", "kvm-pit", "VGA", "vmware-svga",
           "virtio-gpu-pci", "virtio-gpu-device", "ICH9-LPC", "virtio-balloon-pci", "virtio-balloon-ccw",
           "virtio-balloon-device", "spapr-pci-host-bridge", "nvdimm", "pcie-root-port", "usb-host",
           "vhost-user-fs-device", "virtio-iommu-pci"]


def probe(version: str) -> list[dict[str, Any]]:
    """libvirt 9.0's probe of a ppc64 binary, in order (qemu_capabilities.c virQEMUCapsInitQMPMonitor)."""
    out: list[dict[str, Any]] = [{"execute": name} for name in (
        "qmp_capabilities", "query-version", "query-target", "query-qmp-schema", "query-commands", "query-kvm",
        "qom-list-types")]
    out += [{"execute": "device-list-properties", "arguments": {"typename": t}} for t in DEVICES]
    out += [{"execute": "qom-list-properties", "arguments": {"typename": t}}
            for t in ("memory-backend-file", "memory-backend-memfd")]
    out += [{"execute": "query-machines"}]
    out += [{"execute": "qom-list-properties", "arguments": {"typename": t}}
            for t in (f"pseries-{version}-machine", "none-machine")]
    out += [{"execute": name} for name in ("query-cpu-definitions", "query-tpm-models", "query-tpm-types",
                                           "query-command-line-options", "query-migrate-capabilities")]
    out += [{"execute": "query-cpu-model-expansion", "arguments": {"type": "static", "model": {"name": "host"}}}]
    # asked at a domain's start and by the verbs of issue 29 (no balloon, no migration, no guest: answers of
    # the empty machine, which are the static ones)
    out += [{"execute": name} for name in ("query-status", "query-migrate", "query-balloon", "query-chardev",
                                           "query-iothreads", "query-block", "query-named-block-nodes",
                                           "query-events")]
    out += [{"execute": "query-named-block-nodes", "arguments": {"flat": True}}]  # at a domain's start
    return out


def _read_message(sock: socket.socket, buf: bytearray) -> dict[str, Any]:
    while b"\n" not in buf:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise EOFError("QEMU closed the monitor")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    message: dict[str, Any] = json.loads(line)
    return message


def _monitor(binary: str, qemu: subprocess.Popen[bytes], path: Path,
             timeout: float) -> tuple[socket.socket, bytearray, dict[str, Any], str]:
    """The QMP socket QEMU makes at `path` (within 60 s), its greeting and QEMU's version X.Y; `timeout`: for
    each answer."""
    try:
        sock = connect_unix(path, 60, qemu)
    except OSError:
        sys.exit(f"{binary}: no QMP socket")
    sock.settimeout(timeout)
    buf = bytearray()
    greeting = _read_message(sock, buf)
    qemu_version = greeting["QMP"]["version"]["qemu"]
    return sock, buf, greeting, f"{qemu_version['major']}.{qemu_version['minor']}"


def record(binary: str) -> tuple[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "qmp.monitor"
        argv = [*PROBE_ARGV, "-qmp", f"unix:{path},server=on,wait=off"]
        proc = subprocess.Popen([binary, *argv], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sock, buf, greeting, version = _monitor(binary, proc, path, 30)
            exchanges = []
            for n, command in enumerate([*probe(version), {"execute": "quit"}], 1):
                sock.sendall(json.dumps({**command, "id": f"libvirt-{n}"}).encode() + b"\n")
                received = []
                while True:
                    message = _read_message(sock, buf)
                    received.append(message)
                    if message.get("id") == f"libvirt-{n}":
                        break
                exchanges.append({"send": command, "receive": received})
            status = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    argv[-1] = "unix:QMP.monitor,server=on,wait=off"
    return version, {"argv": argv, "greeting": greeting, "exchanges": exchanges, "exit_status": status}


POWERDOWN_LINE = ["-M", "pseries", "-accel", "tcg", "-smp", "2", "-m", "1G", "-nographic", "-nodefaults",
                  "-serial", "stdio", "-no-shutdown"]
POWERDOWN = ["system_powerdown", "query-status", "cont", "system_reset", "query-status", "cont", "query-status"]
POWERDOWN_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
trap 'poweroff -f' USR2
echo vcpu-sched-guest-up
while :; do sleep 1; done
"""
KERNEL_LINES = ("Power off requested", "reboot: Power down")


def record_powerdown(binary: str) -> tuple[str, dict[str, Any]]:
    import re

    from vcpu_sched.real.kit import boot_initramfs, find_kit

    kit = find_kit()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        initrd = boot_initramfs(kit, POWERDOWN_INIT, None, work)
        path, console = work / "qmp.monitor", work / "console.txt"
        argv = [*POWERDOWN_LINE, "-kernel", str(kit.vmlinux), "-initrd", str(initrd), "-append", "console=hvc0",
                "-qmp", f"unix:{path},server=on,wait=off"]
        with console.open("wb") as out:
            proc = subprocess.Popen([binary, *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            sock, buf, _, version = _monitor(binary, proc, path, 120)

            def exchange(name: str, until_event: str | None = None) -> dict[str, Any]:
                sock.sendall(json.dumps({"execute": name, "id": name}).encode() + b"\n")
                received: list[dict[str, Any]] = []

                def done() -> bool:
                    return any(m.get("id") == name for m in received) and (
                        until_event is None or any(m.get("event") == until_event for m in received))

                while not done():
                    message = _read_message(sock, buf)
                    message.pop("timestamp", None)
                    received.append(message)
                return {"send": {"execute": name}, "receive": received}

            exchange("qmp_capabilities")
            deadline = time.monotonic() + 600
            while b"vcpu-sched-guest-up" not in console.read_bytes():
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit(f"{binary}: the guest did not come up")
                time.sleep(0.5)
            exchanges = [exchange(name, "STOP" if name == "system_powerdown" else None) for name in POWERDOWN]
            exchange("quit")
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = console.read_text(errors="replace")
    lines = [re.sub(r"^\[ *[0-9.]+\] ", "", line.strip()) for line in text.splitlines()]
    kernel = [line for line in lines if line in KERNEL_LINES]
    return version, {"argv": POWERDOWN_LINE, "guest": {"kernel": kit.kernel_release, "init": POWERDOWN_INIT},
                     "exchanges": exchanges, "console": kernel}


def answers(recording: dict[str, Any]) -> dict[str, Any]:
    """What the model answers from a recording: every answer but those the model gives itself."""
    out = {}
    for exchange in recording["exchanges"]:
        command = exchange["send"]
        answer = {k: v for k, v in exchange["receive"][-1].items() if k != "id"}
        if command["execute"] in ("qmp_capabilities", "quit", "query-chardev"):  # the model's own
            continue
        out[probe_key(command["execute"], command.get("arguments", {}))] = answer
    return {"greeting": recording["greeting"], "answers": out}


def _write(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(text, mtime=0))
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes", file=sys.stderr)


def main() -> None:
    args = sys.argv[1:]
    powerdown = args[:1] == ["--powerdown"]
    if powerdown:
        args = args[1:]
    binary = args[0] if args else shutil.which("qemu-system-ppc64")
    if binary is None:
        sys.exit("qemu-system-ppc64 is not installed (apt-get install qemu-system-ppc)")
    if powerdown:
        version, recording = record_powerdown(binary)
        path = ROOT / "tests" / "data" / "libvirt" / f"powerdown-{version}.json"
        path.write_text(json.dumps(recording, indent=1) + "\n")
        print(f"{path.relative_to(ROOT)}: {len(recording['exchanges'])} exchanges", file=sys.stderr)
        return
    version, recording = record(binary)
    _write(ROOT / "tests" / "data" / f"probe-{version}.json.gz", recording)
    _write(ROOT / "vcpu_sched" / "probe_data" / f"{version}.json.gz", answers(recording))


if __name__ == "__main__":
    main()
