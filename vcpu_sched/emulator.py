"""The console scripts libvirt is given as `<emulator>` (issue 29): `vcpu-sched qemu --qemu-version X.Y`,
one per release, since libvirt probes the emulator path once and caches what it learns. Unlike `vcpu-sched
qemu` they accept `-daemonize` (libvirt's probe starts the emulator with it)."""

from __future__ import annotations

import sys
from typing import NoReturn

from .cli import _guarded
from .qemu_command import qemu_main


def _emulator(version: str) -> int:
    return _guarded(lambda: qemu_main(["--qemu-version", version, *sys.argv[1:]], emulator=True))


def emulator_7_2() -> NoReturn:
    """vcpu-sched-qemu-7.2: the model answering as QEMU 7.2 (Debian bookworm's 7.2.22)."""
    sys.exit(_emulator("7.2"))


def emulator_11_1() -> NoReturn:
    """vcpu-sched-qemu-11.1: the model answering as QEMU 11.1 (11.1.3, Debian trixie-backports')."""
    sys.exit(_emulator("11.1"))
