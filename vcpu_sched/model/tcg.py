"""The TCG vCPU thread, for the comparison the seed makes ("this was not a problem on TCG").

Mirrors accel/tcg/tcg-accel-ops-mttcg.c `mttcg_cpu_thread_fn` and accel/tcg/cpu-exec.c `cpu_exec` /
`cpu_handle_halt`. Two differences from KVM matter: there is no register sync with a kernel (QEMU's
LPCR and PSSCR are the only copy, so spapr's reset values stay), and the loop drops the BQL around
guest execution whatever the CPU's state; a halted CPU with HARD set leaves halt in cpu_handle_halt.

Departure: hcalls are handled on the vCPU thread with the BQL taken around `spapr_hypercall`, and a
DEC write takes the BQL (ppc_set_irq's guard). Taking an interrupt is reduced to what the scheduling
depends on: MSR[EE] cleared and HARD recomputed; the guest's handler is the code after its current
operation.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .accel import execute_guest, runner_at
from .cpus import (
    CPU_INTERRUPT_HARD,
    EXCP_HALTED,
    EXCP_HLT,
    EXCP_INTERRUPT,
    CPUState,
    async_run_on_cpu,
    cpu_can_run,
    cpu_events,
    cpu_has_work,
    cpu_thread_signal_created,
    current_cpu,
)
from .effects import BqlLock, BqlUnlock, Effect, Spend
from .excp import ppc_next_unmasked_interrupt
from .guest import Hcall, StoreDecr
from .interrupts import ppc_maybe_interrupt
from .ppc import MSR_EE, Interrupt
from .rcu import rcu_read_lock, rcu_read_unlock, rcu_register_thread
from .timebase import cpu_ppc_store_decr


def cpu_handle_halt(cpu: CPUState) -> bool:
    """accel/tcg/cpu-exec.c cpu_handle_halt: stay halted unless there is work (HARD)."""
    if cpu.halted:
        if not cpu_has_work(cpu):
            return True
        cpu.halted = False
    return False


def ppc_cpu_exec_interrupt(cpu: CPUState) -> None:
    """target/ppc/excp_helper.c ppc_cpu_exec_interrupt -> ppc_deliver_interrupt: take the interrupt.

    Taking an asynchronous interrupt clears MSR[EE] (the guest's handler runs with it off), after
    which nothing else is deliverable and HARD is recomputed. The guest's handler is the code that
    follows the operation the CPU was in (typically H_CEDE returning); a DEC's handler, Linux's
    `timer_interrupt` (arch/powerpc/kernel/time.c), first sets DEC to its maximum, which under TCG
    reaches cpu_ppc_store_decr and lowers the level-triggered DEC.
    """
    decision = ppc_next_unmasked_interrupt(cpu.env, cpu.halted, quiesced_guard=cpu.machine.fix_quiesced)
    if decision.interrupt is not None:
        cpu.machine.trace("ppc_cpu_do_interrupt", cpu=cpu.cpu_index, interrupt=decision.name,
                          as_sreset=cpu.env.resume_as_sreset)
        cpu.env.msr &= ~MSR_EE
        cpu.env.resume_as_sreset = False
        if decision.interrupt is Interrupt.DECR:
            cpu_ppc_store_decr(cpu, 0x7FFFFFFF)
    ppc_maybe_interrupt(cpu)


def tcg_cpu_exec(cpu: CPUState) -> Generator[Effect, Any, int]:
    """accel/tcg/cpu-exec.c cpu_exec, entered without the BQL: past cpu_handle_halt, the whole execution
    is an RCU read-side critical section (rcu_read_lock ... rcu_read_unlock, as dd47a8f654 quotes it)."""
    machine = cpu.machine
    if cpu_handle_halt(cpu):
        return EXCP_HALTED
    reader = machine.rcu.registry[cpu.name]
    rcu_read_lock(machine, reader)
    ret = yield from _cpu_exec_loop(cpu)
    rcu_read_unlock(machine, reader)
    return ret


def _cpu_exec_loop(cpu: CPUState) -> Generator[Effect, Any, int]:
    machine = cpu.machine
    if cpu.interrupt_request & CPU_INTERRUPT_HARD:
        yield BqlLock("cpu_handle_interrupt")
        ppc_cpu_exec_interrupt(cpu)
        yield BqlUnlock("cpu_handle_interrupt")
    runner = machine.tcg_runners.get(cpu.cpu_index)
    if runner is None or runner.entry_gen != cpu.env.entry_gen:
        runner = runner_at(cpu, cpu.env.nip, cpu.env.entry_gen)
        if runner is not None:
            machine.tcg_runners[cpu.cpu_index] = runner
    while True:
        op = yield from execute_guest(cpu, runner, lambda: cpu.exit_request)
        if op is None:
            if not machine.new_loop:  # cpu_handle_interrupt's clear, gone in 9a191d3782
                cpu.exit_request = False
            return EXCP_INTERRUPT
        assert runner is not None
        yield BqlLock("cpu_exec")
        if isinstance(op, StoreDecr):
            cpu_ppc_store_decr(cpu, op.value)
            ret: int = 0
        elif isinstance(op, Hcall):
            ret = yield from machine.spapr.spapr_hypercall(cpu, op)
        else:
            assert machine.pnv is not None, f"{op!r} needs a powernv machine"
            ret = machine.pnv.exec_op(cpu, op)
        yield BqlUnlock("cpu_exec")
        runner.advance(ret)
        if cpu.halted:
            return EXCP_HLT


def do_nothing(cpu: CPUState) -> None:
    """accel/tcg/tcg-accel-ops-mttcg.c do_nothing: the work item whose only effect is the kick."""


def mttcg_cpu_thread_fn(cpu: CPUState) -> Generator[Effect, Any, None]:
    """accel/tcg/tcg-accel-ops-mttcg.c mttcg_cpu_thread_fn."""
    machine = cpu.machine
    current_cpu.set(cpu)
    reader = rcu_register_thread(machine, cpu.name)
    if machine.settings.force_rcu:  # dd47a8f654: mttcg_force_rcu kicks the vCPU out of cpu_exec
        reader.force_rcu.append(lambda: async_run_on_cpu(cpu, do_nothing, "do_nothing"))
    yield BqlLock("mttcg_cpu_thread_fn")
    machine.trace("tcg_vcpu_thread_start", cpu=cpu.cpu_index, thread=cpu.name)
    cpu_thread_signal_created(cpu)
    cpu.exit_request = True  # "process any pending work" before the first cpu_exec (review D16)
    turn = Spend(machine.settings.loop_cost_ns, spin=cpu, wake=(cpu.halt_cond, cpu.kick_cond))
    while True:
        yield turn
        cpu.count("loop_iterations")
        if cpu_can_run(cpu):
            yield BqlUnlock("mttcg_cpu_thread_fn")
            yield from tcg_cpu_exec(cpu)
            if not machine.new_loop:  # tcg_cpu_exec's clear, gone in 9a191d3782
                cpu.exit_request = False
            yield BqlLock("mttcg_cpu_thread_fn")
        yield from cpu_events(cpu)
        if cpu.unplug and not cpu_can_run(cpu):
            break
    yield BqlUnlock("mttcg_cpu_thread_fn")
