"""Timebase and decrementer, and what commit e8291ec16da8 changed at reset.

Mirrors hw/ppc/ppc.c: `cpu_ppc_tb_reset`, the public `cpu_ppc_store_decr` and the internal
`__cpu_ppc_store_decr`. Book3S 64 has a level-triggered DEC (PPC_DECR_UNDERFLOW_LEVEL): a negative
value *is* "DEC pending". The public store returns at once under KVM (the kernel owns the DEC).
Before e8291ec16da8 reset used the public store, so under KVM no DEC was raised in QEMU; after it,
reset calls the internal store with time 0, bypassing that check, so every reset leaves
PPC_INTERRUPT_DECR pending in QEMU, also under KVM. Nothing lowers it while the CPU stays halted.

Departure from QEMU: no DEC timer runs; only values written at reset and by the guest matter here.
"""

from __future__ import annotations

from .cpus import CPUState
from .interrupts import ppc_set_irq
from .ppc import Interrupt


def _sign_extend(value: int, nr_bits: int) -> int:
    value &= (1 << nr_bits) - 1
    return value - (1 << nr_bits) if value >> (nr_bits - 1) else value


def __cpu_ppc_store_decr(cpu: CPUState, value: int, nr_bits: int = 64) -> None:
    """hw/ppc/ppc.c __cpu_ppc_store_decr, level-triggered (Book3S 64): negative raises, else lowers."""
    env = cpu.env
    env.decr = _sign_extend(value, nr_bits)
    if env.decr < 0:
        ppc_set_irq(cpu, Interrupt.DECR, True)
    else:
        ppc_set_irq(cpu, Interrupt.DECR, False)


def cpu_ppc_store_decr(cpu: CPUState, value: int) -> None:
    """hw/ppc/ppc.c cpu_ppc_store_decr: returns at once under KVM (since 2023, "Read time only once")."""
    if cpu.machine.settings.accel == "kvm":
        return
    __cpu_ppc_store_decr(cpu, value, 32)


def cpu_ppc_tb_reset(cpu: CPUState) -> None:
    """hw/ppc/ppc.c cpu_ppc_tb_reset: lower DEC, then store DEC = -1 (spapr has no HDEC: vhyp)."""
    ppc_set_irq(cpu, Interrupt.DECR, False)
    if cpu.machine.settings.timebase_reset == "applied":
        # e8291ec16da8: the internal store at time 0, which does not look at kvm_enabled().
        __cpu_ppc_store_decr(cpu, -1, 64)
    else:
        cpu_ppc_store_decr(cpu, -1)
    cpu.machine.trace("cpu_ppc_tb_reset", cpu=cpu.cpu_index, timebase_reset=cpu.machine.settings.timebase_reset,
                      dec_pending=cpu.env.pending(Interrupt.DECR))
