#!/usr/bin/env python3
"""Record what a real QEMU answers to libvirt's capability probe (issue 29).

    tools/record_probe.py [QEMU-BINARY]   (default: qemu-system-ppc64 on PATH)

Starts the binary with the command line libvirt 9.0 gives it for the probe (PROBE_ARGV: virsh
domcapabilities --emulatorbin ... --arch ppc64 --machine pseries, seen through a wrapper that logged its
argv; without `-pidfile` and `-daemonize`, which change nothing on QMP), sends PROBE (every command libvirt
sent, in its order, read from its log with log_filters="1:qemu.qemu_monitor": the union of what it sent to
7.2 and to 11.1.3; the typenames of the pseries machine follow the version), then `quit`, and writes

- tests/data/probe-X.Y.json.gz: {"argv", "greeting", "exchanges": [{"send", "receive"}], "exit_status"},
  every answer whole (query-qmp-schema and qom-list-types are large: gzip-compressed);
- vcpu_sched/probe_data/X.Y.json.gz: what `vcpu-sched qemu --qemu-version X.Y` answers from it,
  {"greeting": ..., "answers": {KEY: answer}}, KEY = probe_key(command, arguments).
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


def record(binary: str) -> tuple[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "qmp.monitor"
        argv = [*PROBE_ARGV, "-qmp", f"unix:{path},server=on,wait=off"]
        proc = subprocess.Popen([binary, *argv], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not path.exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit(f"{binary}: no QMP socket")
                time.sleep(0.05)
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(path))
            sock.settimeout(30)
            buf = bytearray()
            greeting = _read_message(sock, buf)
            qemu = greeting["QMP"]["version"]["qemu"]
            version = f"{qemu['major']}.{qemu['minor']}"
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
    binary = sys.argv[1] if len(sys.argv) > 1 else shutil.which("qemu-system-ppc64")
    if binary is None:
        sys.exit("qemu-system-ppc64 is not installed (apt-get install qemu-system-ppc)")
    version, recording = record(binary)
    _write(ROOT / "tests" / "data" / f"probe-{version}.json.gz", recording)
    _write(ROOT / "vcpu_sched" / "probe_data" / f"{version}.json.gz", answers(recording))


if __name__ == "__main__":
    main()
