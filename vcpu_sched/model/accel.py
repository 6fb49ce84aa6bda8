"""Guest execution shared by both accelerators: time passing inside KVM_RUN or inside TCG's cpu_exec.

Not a QEMU file: the hardware (KVM) or the translator (TCG) runs guest instructions; here the guest
program's `Compute` and `SpinUntil` operations pass guest time without any QEMU lock, and end early
when the vCPU is kicked. Operations that need the accelerator (hcalls, DEC writes) are handed back.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from .cpus import CPUState
from .effects import Block, Effect
from .guest import Compute, GuestOp, GuestRunner, SpinUntil


def runner_at(cpu: CPUState, addr: int, entry_gen: int) -> GuestRunner | None:
    """The guest program at entry address `addr` of `cpu` (the target's program_at), ready to run; None
    when nothing is modelled there."""
    program = cpu.machine.arch.program_at(cpu.machine, cpu.cpu_index, addr)
    return GuestRunner(program, entry_gen) if program is not None else None


def execute_guest(cpu: CPUState, runner: GuestRunner | None,
                  interrupted: Callable[[], bool]) -> Generator[Effect, Any, GuestOp | None]:
    """Run the guest until an operation the accelerator must handle (returned) or a kick (None).

    The safety invariant of pause_all_vcpus is checked here, where guest code runs: once it has returned,
    until a vCPU is resumed, no vCPU may execute (0ec7e6779f's race broke it)."""
    machine = cpu.machine
    cpu.guest_entries += 1
    if machine.paused_by is not None:
        machine.invariant_violated(
            "no vCPU runs while paused",
            f"CPU {cpu.cpu_index} runs guest code while {machine.paused_by} believes every vCPU paused "
            f"(its pause_all_vcpus returned; CPU {cpu.cpu_index} stopped={cpu.stopped})")
    while True:
        if interrupted():
            return None
        op = runner.op if runner is not None else None
        if op is None:
            # Nothing to run (a CPU never started, or a program that ended): sleep until kicked.
            yield Block((cpu.kick_cond,), None)
            continue
        if isinstance(op, Compute):
            assert runner is not None
            elapsed = yield Block((cpu.kick_cond,), runner.compute_left)
            runner.compute_left -= elapsed
            if runner.compute_left <= 0:
                runner.advance()
            continue
        if isinstance(op, SpinUntil):
            assert runner is not None
            if op.done():
                runner.advance(True)
                continue
            now = machine.now_ns()
            if runner.spin_deadline is None:
                runner.spin_deadline = now + op.timeout_ns
            if now >= runner.spin_deadline:
                runner.advance(False)
                continue
            yield Block((cpu.kick_cond, machine.guest_memory.changed), runner.spin_deadline - now)
            continue
        return op
