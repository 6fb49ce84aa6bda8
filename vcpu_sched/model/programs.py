"""Which guest program a POWER vCPU runs from an entry address: the pseries kernel's boot and secondary entry
points and its system-reset handler (guest.py, kdump.py), or the powernv firmware's (pnv.py). The target's
`Arch.program_at` hook; the accelerators call it when QEMU puts a new entry point into a vCPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .guest import GENERIC_SECONDARY_SMP_INIT, GuestProgram, boot_cpu_program, secondary_program
from .kdump import system_reset_program
from .spapr_abi import SPAPR_ENTRY_POINT

if TYPE_CHECKING:
    from .machine import Machine


def program_at(machine: Machine, cpu_index: int, nip: int) -> GuestProgram | None:
    """The program the guest has at an entry address (None: nothing to run there)."""
    if machine.pnv is not None:
        from .pnv import FIRMWARE_ENTRY, SECONDARY_IDLE_ENTRY, firmware_program, idle_thread_program  # powernv only

        if nip == FIRMWARE_ENTRY:
            return firmware_program(machine)
        if nip == SECONDARY_IDLE_ENTRY:
            return idle_thread_program(machine, cpu_index)
        return None
    kernel_runs = bool(machine.guest_memory.sprg_paca)
    # 0x100 is both QEMU's entry point and the system-reset vector: once a kernel runs, a reset that finds
    # no FWNMI handler lands in the kernel's own 0x100 handler; before, only the boot CPU has a program
    # there (a reset of another CPU inside the firmware is not modelled).
    if nip == machine.spapr.fwnmi_system_reset_addr or (nip == SPAPR_ENTRY_POINT and kernel_runs):
        return system_reset_program(machine, cpu_index)
    if nip == SPAPR_ENTRY_POINT:
        return boot_cpu_program(machine) if cpu_index == 0 else None
    if nip == GENERIC_SECONDARY_SMP_INIT:
        return secondary_program(machine, cpu_index)
    return None
