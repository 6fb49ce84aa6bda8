#!/usr/bin/env python3
"""The side-by-side table of docs/libvirt.md (issue 29): what libvirt asks a running pseries domain, the
answer's shape from the real binary and from the model at the same release and on the same command line.

    tools/libvirt_table.py     (QEMU 7.2 at /usr/bin, 11.1 from `python3 tools/dev.py real-qemu`)

Runs `qemu-system-ppc64 LINE` and `vcpu-sched qemu --qemu-version X.Y LINE` for each release, sends COMMANDS
in order to both, and prints a markdown table: the shape of each answer (its members, or its error class),
"same" where ours matches. The probe's own answers need no table: the model answers them from the
recordings (tests/data/probe-X.Y.json.gz), so they are the real ones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BINARIES = {"7.2": "/usr/bin/qemu-system-ppc64",
            "11.1": str(Path.home() / ".cache/vcpu_sched/real/qemu-11.1/qemu-system-ppc64")}
LINE = ["-M", "pseries", "-smp", "2,maxcpus=4", "-cpu", "POWER9", "-m", "1G", "-S", "-nographic", "-nodefaults"]
# libvirt 9.0 starting a domain (its monitor log), then the verbs of issue 29
COMMANDS: list[tuple[str, dict[str, Any]]] = [
    ("qmp_capabilities", {}), ("query-version", {}), ("query-status", {}), ("query-kvm", {}),
    ("query-migrate-capabilities", {}),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}),
    ("query-chardev", {}), ("query-hotpluggable-cpus", {}), ("query-cpus-fast", {}), ("query-iothreads", {}),
    ("query-named-block-nodes", {"flat": True}), ("qom-list", {"path": "/machine/peripheral"}),
    ("query-block", {}), ("query-migrate", {}), ("query-balloon", {}), ("cont", {}), ("stop", {}),
    ("system_reset", {}), ("query-status", {}), ("device_del", {"id": "core1"}), ("system_powerdown", {}),
    ("quit", {})]


def session(argv: list[str], path: str) -> list[dict[str, Any]]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(path):
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit(f"{argv[0]}: no QMP socket")
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
            sock.settimeout(30)
            stream = sock.makefile("rwb")
            stream.readline()  # the greeting
            answers = []
            for n, (name, args) in enumerate(COMMANDS):
                stream.write(json.dumps({"execute": name, "arguments": args, "id": n}).encode() + b"\n")
                stream.flush()
                while True:
                    message: dict[str, Any] = json.loads(stream.readline())
                    if message.get("id") == n:
                        answers.append(message)
                        break
        proc.wait(timeout=30)
        return answers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def shape(answer: dict[str, Any]) -> str:
    if "error" in answer:
        return f"error {answer['error']['class']}"
    value = answer["return"]
    if isinstance(value, list):
        if not value:
            return "[]"
        first = value[0]
        if isinstance(first, dict):
            return f"list of {{{', '.join(sorted(first))}}}"
        return f"list of {type(first).__name__}"
    if isinstance(value, dict):
        return "{" + ", ".join(sorted(value)) + "}"
    return type(value).__name__


def main() -> None:
    shapes: dict[str, tuple[list[str], list[str]]] = {}
    for version, binary in BINARIES.items():
        with tempfile.TemporaryDirectory() as tmp:
            real_answers = session([binary, *LINE, "-qmp", f"unix:{tmp}/real.sock,server=on,wait=off"],
                                   f"{tmp}/real.sock")
            our_answers = session([sys.executable, "-m", "vcpu_sched", "qemu", "--qemu-version", version, *LINE,
                            "-qmp", f"unix:{tmp}/ours.sock,server=on,wait=off"], f"{tmp}/ours.sock")
        shapes[version] = ([shape(a) for a in real_answers], [shape(a) for a in our_answers])
    print("| command | 7.2 real | 7.2 ours | 11.1 real | 11.1 ours |")
    print("| --- | --- | --- | --- | --- |")
    for n, (name, _) in enumerate(COMMANDS):
        cells = []
        for version in BINARIES:
            real, ours = shapes[version][0][n], shapes[version][1][n]
            cells += [f"`{real}`", "same" if ours == real else f"`{ours}`"]
        print(f"| `{name}` | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
