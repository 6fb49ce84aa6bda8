#!/usr/bin/env python3
"""Record what a real QEMU answers on QMP, for tests/data/qmp-7.2/ (qemu-system-ppc64 installed).

    tools/record_qmp.py OUT.jsonl

Starts `qemu-system-ppc64 -M pseries -smp 4 -m 1G -S -nographic` under TCG with a QMP socket, sends each
input of INPUTS in turn (raw bytes, so malformed ones too) and writes one JSON line per exchange:
{"send": text, "receive": [each message that came back, events included]}. Ends with `quit`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INPUTS = [
    '{"execute": "query-status"}',  # before negotiation
    '{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
    '{"execute": "qmp_capabilities"}',
    '{"execute": "query-status"}',
    '{"execute": "query-cpus-fast"}',
    '{"execute": "query-hotpluggable-cpus"}',
    '{"execute": "query-version"}',
    '{"execute": "query-name"}',
    '{"execute": "query-kvm"}',
    '{"execute": "query-yank"}',
    '{"exec-oob": "query-yank", "id": 7}',
    '{"exec-oob": "yank", "arguments": {"instances": []}, "id": 8}',
    '{"exec-oob": "migrate-pause", "id": 9}',
    '{"exec-oob": "query-status", "id": 10}',
    '{"execute": "no-such-command"}',
    '{"execute": "query-status", "arguments": {"bogus": 1}}',
    '{"execute": "human-monitor-command", "arguments": {}}',
    '{"execute": 42}',
    '{"foo": 1}',
    '[1, 2]',
    '{"execute": "human-monitor-command", "arguments": {"command-line": "info status"}}',
    '{"execute": "device_add"}',  # qmp_device_add's failure path (drain_call_rcu)
    '{"execute": "device_add", "arguments": {"driver": "no-such-device"}}',
    '{"execute": "inject-nmi"}',  # spapr_nmi: a system reset queued on every CPU
    '{"execute": "human-monitor-command", "arguments": {"command-line": "nmi"}}',
    '{"execute": "cont", "id": "c1"}',
    '{"execute": "human-monitor-command", "arguments": {"command-line": "info status"}}',
    '{"execute": "query-status"}',
    '{"execute": "stop"}',
    '{"execute": "query-status"}',
    '{"execute": "cont"}',
    '{"execute": "system_reset"}',
    '{"execute": "human-monitor-command", "arguments": {"command-line": "info cpus"}}',
    '{"execute": "quit"}',
]


def receive(sock: socket.socket, settle: float = 0.5) -> list[dict[str, object]]:
    """Every message that arrives until none has for `settle` seconds."""
    data = b""
    sock.settimeout(settle)
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def main() -> None:
    out = Path(sys.argv[1])
    qemu = shutil.which("qemu-system-ppc64")
    if qemu is None:
        sys.exit("qemu-system-ppc64 is not installed (apt-get install qemu-system-ppc)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "qmp.sock"
        proc = subprocess.Popen([qemu, "-M", "pseries", "-smp", "4", "-m", "1G", "-S", "-nographic", "-monitor", "none",
                                 "-serial", "null", "-qmp", f"unix:{path},server=on,wait=off"],
                                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not path.exists():
            time.sleep(0.05)
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(path))
        records: list[dict[str, object]] = [{"send": None, "receive": receive(sock)}]
        for text in INPUTS:
            sock.sendall(text.encode() + b"\n")
            records.append({"send": text, "receive": receive(sock)})
        proc.wait(timeout=10)
        records.append({"exit_status": proc.returncode})
    out.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    print(f"{out}: {len(records)} records", file=sys.stderr)


if __name__ == "__main__":
    main()
