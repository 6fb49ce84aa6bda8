"""S390CPU's state as the generic vCPU code sees it: the architected CPU state and has_work.

Mirrors target/s390x/cpu.h (the S390_CPU_STATE_* values), target/s390x/cpu-system.c
(`s390_cpu_has_work`, `s390_cpu_set_state`) and target/s390x/cpu.c (`s390_cpu_halt`, `s390_cpu_unhalt`),
read at upstream 77251365ec. A STOPPED CPU is halted for the common code and never has work, so its
thread sleeps in qemu_wait_io_event until a SIGP queues work on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..cpus import CPU_INTERRUPT_HARD, EXCP_HLT, CPUState

if TYPE_CHECKING:
    from .kvm import S390Kvm

S390_CPU_STATE_UNINITIALIZED = 0x00
S390_CPU_STATE_STOPPED = 0x01
S390_CPU_STATE_CHECK_STOP = 0x02
S390_CPU_STATE_OPERATING = 0x03
S390_CPU_STATE_LOAD = 0x04
STATE_NAMES = {0x00: "UNINITIALIZED", 0x01: "STOPPED", 0x02: "CHECK_STOP", 0x03: "OPERATING", 0x04: "LOAD"}


@dataclass(eq=False, repr=False)
class CPUS390XState:
    """CPUS390XState (target/s390x/cpu.h), the parts the scheduling depends on."""

    cpu_state: int = S390_CPU_STATE_STOPPED
    sigp_order: int = 0  # a STOP (and store status) order in progress
    psw_addr: int = 0
    # Not a QEMU field (as on ppc): a PSW load (IPL, restart interrupt) starts the guest program afresh.
    entry_gen: int = 0

    def loop_state(self) -> tuple[Any, ...]:
        return (self.cpu_state, self.sigp_order, self.psw_addr, self.entry_gen)


def s390_kvm(cpu: CPUState) -> S390Kvm:
    s390 = cpu.machine.s390
    assert s390 is not None
    return s390.kvm


def s390_cpu_halt(cpu: CPUState) -> None:
    """target/s390x/cpu.c s390_cpu_halt: halted for the common code."""
    if not cpu.halted:
        cpu.halted = True
        cpu.exception_index = EXCP_HLT


def s390_cpu_unhalt(cpu: CPUState) -> None:
    """target/s390x/cpu.c s390_cpu_unhalt."""
    if cpu.halted:
        cpu.halted = False
        cpu.exception_index = -1


def s390_count_running_cpus(cpu: CPUState) -> int:
    return sum(1 for c in cpu.machine.cpus
               if c.env.cpu_state in (S390_CPU_STATE_OPERATING, S390_CPU_STATE_LOAD))


def s390_cpu_set_state(cpu_state: int, cpu: CPUState) -> int:
    """target/s390x/cpu-system.c s390_cpu_set_state: halt or unhalt, tell KVM (KVM_SET_MP_STATE), store;
    returns the number of running CPUs."""
    if cpu_state in (S390_CPU_STATE_STOPPED, S390_CPU_STATE_CHECK_STOP):
        s390_cpu_halt(cpu)
    else:
        s390_cpu_unhalt(cpu)  # KVM: a wait PSW is the kernel's business
    if cpu.env.cpu_state != cpu_state:
        s390_kvm(cpu).vcpus[cpu.cpu_index].mp_state = cpu_state  # kvm_s390_set_cpu_state
    cpu.machine.trace("cpu_set_state", cpu=cpu.cpu_index, state=STATE_NAMES[cpu_state])
    cpu.env.cpu_state = cpu_state
    return s390_count_running_cpus(cpu)


def s390_cpu_has_int(cpu: CPUState) -> bool:
    """target/s390x/interrupt.c s390_cpu_has_int: interrupts QEMU keeps pending itself. Under KVM there
    are none: the floating and local interrupts live in the kernel (the FLIC)."""
    return False


def s390_cpu_has_work(cpu: CPUState) -> bool:
    """target/s390x/cpu-system.c s390_cpu_has_work: a STOPPED CPU never wakes; otherwise HARD and a
    pending interrupt."""
    if cpu.env.cpu_state not in (S390_CPU_STATE_LOAD, S390_CPU_STATE_OPERATING):
        return False
    if not cpu.interrupt_request & CPU_INTERRUPT_HARD:
        return False
    return s390_cpu_has_int(cpu)
