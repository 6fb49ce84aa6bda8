"""Recomputing CPU_INTERRUPT_HARD, and the writes that trigger it.

Mirrors target/ppc/excp_helper.c `ppc_maybe_interrupt`, target/ppc/cpu.c `ppc_store_lpcr` and
hw/ppc/ppc.c `ppc_set_irq`. `ppc_maybe_interrupt` always leaves HARD equal to "something is
deliverable now"; it is the only place HARD is set for a ppc CPU, and it runs only when one of these
writes (or an spapr/pnv path) calls it. A register *get* from KVM calls none of them, which is how a
stale HARD (or a stale clear one) survives until the next call.
"""

from __future__ import annotations

from .cpus import CPU_INTERRUPT_HARD, CPUState, cpu_interrupt, cpu_reset_interrupt
from .excp import IrqDecision, ppc_next_unmasked_interrupt
from .ppc import Interrupt, decode_lpcr


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
    cpu.machine.trace("ppc_store_lpcr", cpu=cpu.cpu_index, lpcr_before=hex(old), lpcr=hex(env.lpcr),
                      decoded=decode_lpcr(env.lpcr, env.model))
    ppc_maybe_interrupt(cpu)


def ppc_set_irq(cpu: CPUState, irq: Interrupt, level: bool) -> None:
    """hw/ppc/ppc.c ppc_set_irq: set or clear a pending bit; re-evaluate only if the mask changed.

    Under KVM, `kvmppc_set_interrupt` passes only EXT to the kernel: a DEC pending here is QEMU's own
    bookkeeping, which the kernel never sees.
    """
    env = cpu.env
    old = env.pending_interrupts
    if level:
        env.pending_interrupts |= irq.value
    else:
        env.pending_interrupts &= ~irq.value
    if env.pending_interrupts != old:
        cpu.machine.trace("ppc_set_irq", cpu=cpu.cpu_index, irq=irq.name, level=int(level))
        ppc_maybe_interrupt(cpu)
