"""Recomputing CPU_INTERRUPT_HARD, and the writes that trigger it.

Mirrors target/ppc/excp_helper.c `ppc_maybe_interrupt`, target/ppc/cpu.c `ppc_store_lpcr`,
target/ppc/helper_regs.c `hreg_store_msr`, hw/ppc/ppc.c `ppc_set_irq`, and the CPU reset that goes
through them, target/ppc/cpu_init.c `ppc_cpu_reset_hold`, and the system reset interrupt,
target/ppc/excp_helper.c `ppc_cpu_do_system_reset`. `ppc_maybe_interrupt` always leaves HARD equal
to "something is deliverable now"; it is the only place HARD is set for a ppc CPU, and it runs only when one of these
writes (or an spapr/pnv path) calls it. A register *get* from KVM calls none of them, which is how a
stale HARD (or a stale clear one) survives until the next call.
"""

from __future__ import annotations

from .cpus import CPU_INTERRUPT_HARD, CPUState, cpu_interrupt, cpu_reset, cpu_reset_interrupt
from .excp import IrqDecision, ppc_next_unmasked_interrupt
from .kvm import kvmppc_set_interrupt
from .ppc import HRESET_VECTOR, LPCR_LPES0, LPCR_LPES1, MSR_HV, MSR_ME, MSR_SF, Interrupt, decode_lpcr

SRESET_VECTOR = 0x100


def ppc_maybe_interrupt(cpu: CPUState) -> IrqDecision:
    """target/ppc/excp_helper.c ppc_maybe_interrupt."""
    env = cpu.env
    decision = ppc_next_unmasked_interrupt(env, cpu.halted, quiesced_guard=cpu.machine.fix_quiesced)
    before = bool(cpu.interrupt_request & CPU_INTERRUPT_HARD)
    if decision.interrupt is not None:
        cpu_interrupt(cpu, CPU_INTERRUPT_HARD)
    else:
        cpu_reset_interrupt(cpu, CPU_INTERRUPT_HARD)
    after = bool(cpu.interrupt_request & CPU_INTERRUPT_HARD)
    cpu.machine.trace("ppc_maybe_interrupt", cpu=cpu.cpu_index, interrupt=decision.name, rule=decision.rule,
                      hard_before=before, hard=after, halted=cpu.halted, quiesced=env.quiesced)
    return decision


def ppc_store_lpcr(cpu: CPUState, val: int) -> None:
    """target/ppc/cpu.c ppc_store_lpcr: mask with the class's lpcr_mask, then re-evaluate."""
    env = cpu.env
    old = env.lpcr
    env.lpcr = val & env.model.lpcr_mask
    if cpu.machine.traced("ppc_store_lpcr"):  # decoding costs more than the store: only for a log
        cpu.machine.trace("ppc_store_lpcr", cpu=cpu.cpu_index, lpcr_before=hex(old), lpcr=hex(env.lpcr),
                          decoded=decode_lpcr(env.lpcr, env.model))
    ppc_maybe_interrupt(cpu)


def ppc_set_irq(cpu: CPUState, irq: Interrupt, level: bool) -> None:
    """hw/ppc/ppc.c ppc_set_irq: set or clear a pending bit; re-evaluate only if the mask changed.

    Under KVM, `kvmppc_set_interrupt` passes only EXT to the kernel (raised here only by QEMU's own
    interrupt controller, kernel-irqchip=off): a DEC pending here is QEMU's own bookkeeping, which the
    kernel never sees.
    """
    env = cpu.env
    old = env.pending_interrupts
    if level:
        env.pending_interrupts |= irq._value_
    else:
        env.pending_interrupts &= ~irq._value_
    if env.pending_interrupts != old:
        cpu.machine.trace("ppc_set_irq", cpu=cpu.cpu_index, irq=irq.name, level=int(level))
        ppc_maybe_interrupt(cpu)
        if cpu.machine.kvm is not None and irq is Interrupt.EXT:
            kvmppc_set_interrupt(cpu, level)


def hreg_store_msr(cpu: CPUState, value: int) -> None:
    """target/ppc/helper_regs.c hreg_store_msr: the MSR masked with what the CPU may set, then re-evaluate.
    Under a virtual hypervisor (spapr) the mask has no MSR[HV] (cpu_ppc_set_vhyp); the only mask bits
    the model holds are HV's."""
    if cpu.machine.pnv is None:
        value &= ~MSR_HV
    cpu.env.msr = value
    ppc_maybe_interrupt(cpu)


def ppc_cpu_reset_hold(cpu: CPUState) -> None:
    """target/ppc/cpu_init.c ppc_cpu_reset_hold, in its order: the common CPU reset, the reset MSR through
    hreg_store_msr (which re-evaluates HARD with the interrupts still pending), the reset vector, no stop
    state to resume, no pending interrupt, and every SPR back to its default (LPCR: LPES0|LPES1 from
    register_power5p_lpar_sprs; PSSCR: 0)."""
    env = cpu.env
    cpu_reset(cpu)
    hreg_store_msr(cpu, MSR_HV | MSR_SF)  # MSR_EP is not in a 64-bit server CPU's msr_mask
    env.nip = HRESET_VECTOR
    env.resume_as_sreset = False
    env.pending_interrupts = 0
    env.lpcr = LPCR_LPES0 | LPCR_LPES1
    env.psscr = 0
    if cpu.machine.traced("ppc_cpu_reset"):
        cpu.machine.trace("ppc_cpu_reset", cpu=cpu.cpu_index, msr=hex(env.msr), lpcr=hex(env.lpcr),
                          psscr=hex(env.psscr))


def ppc_cpu_do_system_reset(cpu: CPUState) -> None:
    """target/ppc/excp_helper.c ppc_cpu_do_system_reset: the CPU stops being halted, then powerpc_excp
    delivers POWERPC_EXCP_RESET (powerpc_excp_books: the new MSR keeps ME and, where the CPU may hold it,
    HV, and is 64-bit - no EE; powerpc_set_excp_state stores it with the vector and calls
    ppc_maybe_interrupt). SRR0/SRR1 and a power-saving wake-up's MSR bits are not modelled."""
    env = cpu.env
    cpu.halted = False
    keep = MSR_ME | (MSR_HV if cpu.machine.pnv is not None else 0)
    env.nip = SRESET_VECTOR
    env.msr = (env.msr & keep) | MSR_SF
    ppc_maybe_interrupt(cpu)
