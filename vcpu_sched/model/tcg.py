"""The TCG vCPU thread, for the comparison the seed makes ("this was not a problem on TCG").

Mirrors accel/tcg/tcg-accel-ops-mttcg.c `mttcg_cpu_thread_fn` and accel/tcg/cpu-exec.c `cpu_exec` /
`cpu_handle_halt`. Two differences from KVM matter: there is no register sync with a kernel (QEMU's
LPCR and PSSCR are the only copy, so spapr's reset values stay), and the loop drops the BQL around
guest execution whatever the CPU's state; a halted CPU with HARD set leaves halt in cpu_handle_halt.

Departure: hcalls are handled on the vCPU thread with the BQL taken around `spapr_hypercall`, and a
DEC write takes the BQL (ppc_set_irq's guard); interrupt *delivery* to a running TCG CPU is not modelled.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .accel import execute_guest
from .cpus import (
    EXCP_HALTED,
    EXCP_HLT,
    EXCP_INTERRUPT,
    CPUState,
    cpu_can_run,
    cpu_has_work,
    current_cpu,
    qemu_wait_io_event,
)
from .effects import BqlLock, BqlUnlock, Effect, Spend
from .guest import GuestRunner, Hcall, StoreDecr, program_at
from .timebase import cpu_ppc_store_decr


def cpu_handle_halt(cpu: CPUState) -> bool:
    """accel/tcg/cpu-exec.c cpu_handle_halt: stay halted unless there is work (HARD)."""
    if cpu.halted:
        if not cpu_has_work(cpu):
            return True
        cpu.halted = False
    return False


def tcg_cpu_exec(cpu: CPUState) -> Generator[Effect, Any, int]:
    """accel/tcg/cpu-exec.c cpu_exec, entered without the BQL."""
    machine = cpu.machine
    if cpu_handle_halt(cpu):
        return EXCP_HALTED
    runner = machine.tcg_runners.get(cpu.cpu_index)
    if runner is None or runner.nip != cpu.env.nip:
        program = program_at(machine, cpu.cpu_index, cpu.env.nip)
        runner = GuestRunner(program, cpu.env.nip) if program is not None else None
        if runner is not None:
            machine.tcg_runners[cpu.cpu_index] = runner
    while True:
        op = yield from execute_guest(cpu, runner, lambda: cpu.exit_request)
        if op is None:
            cpu.exit_request = False
            return EXCP_INTERRUPT
        assert runner is not None
        yield BqlLock("cpu_exec")
        if isinstance(op, StoreDecr):
            cpu_ppc_store_decr(cpu, op.value)
            ret: int = 0
        else:
            assert isinstance(op, Hcall)
            ret = yield from machine.spapr.spapr_hypercall(cpu, op)
        yield BqlUnlock("cpu_exec")
        runner.advance(ret)
        if cpu.halted:
            return EXCP_HLT


def mttcg_cpu_thread_fn(cpu: CPUState) -> Generator[Effect, Any, None]:
    """accel/tcg/tcg-accel-ops-mttcg.c mttcg_cpu_thread_fn."""
    machine = cpu.machine
    current_cpu.set(cpu)
    yield BqlLock("mttcg_cpu_thread_fn")
    machine.trace("tcg_vcpu_thread_start", cpu=cpu.cpu_index, thread=cpu.name)
    while True:
        yield Spend(machine.settings.loop_cost_ns, spin=cpu, wake=(cpu.halt_cond, cpu.kick_cond))
        cpu.count("loop_iterations")
        if cpu_can_run(cpu):
            yield BqlUnlock("mttcg_cpu_thread_fn")
            yield from tcg_cpu_exec(cpu)
            yield BqlLock("mttcg_cpu_thread_fn")
        cpu.exit_request = False
        yield from qemu_wait_io_event(cpu)
        if cpu.unplug and not cpu_can_run(cpu):
            break
    yield BqlUnlock("mttcg_cpu_thread_fn")
