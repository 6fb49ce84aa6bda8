"""The s390-ccw-virtio board: its CPUs, its kernel and its reset (hw/s390x/s390-virtio-ccw.c at upstream
77251365ec: `s390_machine_reset` resets every CPU - which leaves it STOPPED - and then IPLs the boot CPU
alone with `run_on_cpu(..., s390_do_cpu_ipl)`, which loads the IPL PSW and makes it OPERATING)."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ..arch import Arch
from ..cpus import CPUState, run_on_cpu
from ..effects import Effect
from .cpu import (
    S390_CPU_STATE_OPERATING,
    S390_CPU_STATE_STOPPED,
    STATE_NAMES,
    s390_cpu_has_work,
    s390_cpu_set_state,
)
from .guest import IPL_PSW_ADDR, program_at
from .kvm import (
    S390Kvm,
    S390KvmVcpu,
    kvm_arch_handle_exit,
    kvm_arch_process_async_events,
    kvm_arch_put_registers,
    kvm_vcpu_ioctl_run,
)

if TYPE_CHECKING:
    from ..machine import Machine

MACHINE_TYPE = "s390-ccw-virtio"


class S390CcwMachine:
    """The board's state: the fake kernel and the SIGP mutex (who holds it, None when free)."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.kvm = S390Kvm([S390KvmVcpu() for _ in range(machine.settings.smp)])
        self.sigp_mutex: str | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.sigp_mutex, tuple(v.key() for v in self.kvm.vcpus))


def s390_cpu_reset(cpu: CPUState) -> None:
    """target/s390x/cpu.c s390_cpu_reset_hold (S390_CPU_RESET_INITIAL): STOPPED, no order pending."""
    cpu.interrupt_request = 0
    cpu.env.sigp_order = 0
    s390_cpu_set_state(S390_CPU_STATE_STOPPED, cpu)


def s390_do_cpu_ipl(cpu: CPUState) -> None:
    """hw/s390x/s390-virtio-ccw.c s390_do_cpu_ipl: s390_ipl_prepare_cpu (the IPL PSW), then OPERATING."""
    cpu.env.psw_addr = IPL_PSW_ADDR
    cpu.env.entry_gen += 1
    s390_cpu_set_state(S390_CPU_STATE_OPERATING, cpu)


def _post_reset(cpu: CPUState) -> None:
    kvm_arch_put_registers(cpu, 2)  # do_kvm_cpu_synchronize_post_reset
    cpu.vcpu_dirty = False


def s390_machine_reset(machine: Machine) -> Generator[Effect, Any, None]:
    """s390_machine_reset (S390_RESET_EXTERNAL): reset every CPU, IPL the first, put the state into KVM."""
    for cpu in machine.cpus:
        s390_cpu_reset(cpu)
    yield from run_on_cpu(machine.cpus[0], s390_do_cpu_ipl, "s390_do_cpu_ipl")
    for cpu in machine.cpus:
        yield from run_on_cpu(cpu, _post_reset, "do_kvm_cpu_synchronize_post_reset")


class S390Arch(Arch):
    """target/s390x under KVM, on this board."""

    name = "s390x"
    cpu_has_work = staticmethod(s390_cpu_has_work)
    kvm_arch_process_async_events = staticmethod(kvm_arch_process_async_events)
    kvm_arch_put_registers = staticmethod(kvm_arch_put_registers)
    kvm_vcpu_ioctl_run = staticmethod(kvm_vcpu_ioctl_run)
    kvm_arch_handle_exit = staticmethod(kvm_arch_handle_exit)
    program_at = staticmethod(program_at)

    def cpu_state_text(self, cpu: CPUState) -> str:
        return f"cpu_state={STATE_NAMES[cpu.env.cpu_state]}"

    def machine_reset(self, machine: Machine) -> Generator[Effect, Any, None]:
        return s390_machine_reset(machine)
