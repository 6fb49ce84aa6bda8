"""The target-specific half of QEMU: what the generic vCPU code calls into, per target.

QEMU builds one binary per target, so the generic code (system/cpus.c, accel/kvm/kvm-all.c, accel/tcg)
calls the target's functions by name: `kvm_arch_process_async_events`, `kvm_arch_put_registers`,
`kvm_arch_handle_exit` (target/<arch>/kvm/kvm.c) and the CPU class's `has_work` (SysemuCPUOps). The
model runs every target in one process, so a Machine carries an `Arch` and the generic code calls it.

Adding a target: subclass `Arch` in model/<target>/, give its CPUs an env class with `loop_state()`
(what one vCPU loop turn reads), a fake kernel behind `kvm_vcpu_ioctl_run`, and a board whose
`machine_reset` and `program_at` start the guest; register it in `ARCHES` under its machine types.
model/s390x/ is the worked example (docs/design.md, "Adding a target").
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from . import kvm, programs
from .cpus import CPU_INTERRUPT_HARD, CPUState
from .effects import Effect

if TYPE_CHECKING:
    from .guest import GuestProgram
    from .kvm import KvmExit
    from .machine import Machine


class Arch:
    """The hooks one target provides. `name` is QEMU's target name (ppc64, s390x)."""

    name = ""

    def cpu_has_work(self, cpu: CPUState) -> bool:
        raise NotImplementedError

    def kvm_arch_process_async_events(self, cpu: CPUState) -> bool:
        raise NotImplementedError

    def kvm_arch_put_registers(self, cpu: CPUState, level: int) -> None:
        raise NotImplementedError

    def kvm_vcpu_ioctl_run(self, cpu: CPUState) -> Generator[Effect, Any, tuple[int, KvmExit | None]]:
        raise NotImplementedError

    def kvm_arch_handle_exit(self, cpu: CPUState, run: KvmExit) -> Generator[Effect, Any, int]:
        raise NotImplementedError

    def machine_reset(self, machine: Machine) -> Generator[Effect, Any, None]:
        raise NotImplementedError

    def cpu_state_text(self, cpu: CPUState) -> str:
        """The CPU's state in a lockup report's CPU table, where ppc shows its LPCR."""
        raise NotImplementedError

    def program_at(self, machine: Machine, cpu_index: int, addr: int, /) -> GuestProgram | None:
        """The guest program a vCPU runs from entry address `addr` (None: nothing modelled there)."""
        raise NotImplementedError


def ppc_cpu_has_work(cpu: CPUState) -> bool:
    """target/ppc/cpu_init.c ppc_cpu_has_work: CPU_INTERRUPT_HARD only."""
    return bool(cpu.interrupt_request & CPU_INTERRUPT_HARD)


class PpcArch(Arch):
    """target/ppc: the pseries and powernv machines. The hooks are the functions themselves (the vCPU
    loop calls some of them every turn)."""

    name = "ppc64"
    cpu_has_work = staticmethod(ppc_cpu_has_work)
    kvm_arch_process_async_events = staticmethod(kvm.kvm_arch_process_async_events)
    kvm_arch_put_registers = staticmethod(kvm.kvm_arch_put_registers)
    kvm_vcpu_ioctl_run = staticmethod(kvm.kvm_vcpu_ioctl_run)
    kvm_arch_handle_exit = staticmethod(kvm.kvm_arch_handle_exit)
    program_at = staticmethod(programs.program_at)

    def machine_reset(self, machine: Machine) -> Generator[Effect, Any, None]:
        if machine.pnv is not None:
            yield from machine.pnv.machine_reset()
            return
        yield from machine.spapr.spapr_machine_reset()
        yield from machine.spapr.cpu_synchronize_all_post_reset()
