"""X86CPU's state as the generic vCPU code sees it.

Mirrors target/i386/cpu.h (CPUX86State: `mp_state`, the SynIC MSRs) read at upstream 77251365ec. With the
in-kernel irqchip (KVM's LAPIC), halted and waiting-for-SIPI vCPUs wait inside KVM_RUN, not in QEMU:
kvm_arch_process_async_events returns 0 before it looks at `halted`, and kvm_halt_in_kernel() makes
cpu_thread_is_idle false for them (cpus.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..cpus import CPU_INTERRUPT_HARD, CPUState

if TYPE_CHECKING:
    from .kvm import X86Kvm

KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_UNINITIALIZED = 1  # an AP waiting for INIT/SIPI
KVM_MP_STATE_HALTED = 3
MP_STATE_NAMES = {0: "RUNNABLE", 1: "UNINITIALIZED", 3: "HALTED"}

# The SynIC MSRs whose writes KVM hands to QEMU (Linux arch/x86/kvm/hyperv.c synic_set_msr -> synic_exit).
HV_X64_MSR_SCONTROL = 0x40000080
HV_X64_MSR_SIEFP = 0x40000082
HV_X64_MSR_SIMP = 0x40000083
HV_SYNIC_ENABLE = 1
HV_SIMP_ENABLE = 1
HV_SIEFP_ENABLE = 1
TARGET_PAGE_MASK = ~0xFFF


@dataclass(eq=False, repr=False)
class CPUX86State:
    """CPUX86State (target/i386/cpu.h), the parts the scheduling depends on."""

    apic_id: int = 0
    mp_state: int = KVM_MP_STATE_UNINITIALIZED
    eip: int = 0  # where the vCPU starts: the reset vector (the BSP); APs start where their SIPI says
    # Not a QEMU field (as on ppc and s390x): a reset's new entry point starts the guest program afresh.
    entry_gen: int = 0
    msr_hv_synic_control: int = 0
    msr_hv_synic_msg_page: int = 0
    msr_hv_synic_evt_page: int = 0

    def loop_state(self) -> tuple[Any, ...]:
        return (self.mp_state, self.entry_gen, self.msr_hv_synic_control, self.msr_hv_synic_msg_page,
                self.msr_hv_synic_evt_page)


def x86_kvm(cpu: CPUState) -> X86Kvm:
    board = cpu.machine.x86
    assert board is not None
    return board.kvm


def x86_cpu_has_work(cpu: CPUState) -> bool:
    """target/i386/cpu.c x86_cpu_has_work, the part the model keeps: CPU_INTERRUPT_HARD (QEMU raises none
    under the in-kernel irqchip, so this is false)."""
    return bool(cpu.interrupt_request & CPU_INTERRUPT_HARD)
