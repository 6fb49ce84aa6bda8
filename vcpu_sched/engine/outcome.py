"""What every engine concludes the same way: the guest's verdict, and the RunResult."""

from __future__ import annotations

from collections.abc import Callable

from ..model.cpus import CPUState
from ..model.machine import Machine
from ..result import Lockup, RunResult
from ..verdicts import STUCK_CPU
from .bql import BqlStatistics

NS = 1_000_000_000


def guest_verdict(machine: Machine) -> tuple[str, str]:
    """The verdict once the guest says it has finished: its first failure, or success."""
    out, settings = machine.outcome, machine.settings
    last_line = out.console[-1][1] if out.console else "guest finished"
    if out.failures:
        return out.failures[0].kind, "; ".join(f.text for f in out.failures)
    if len(out.online) != settings.smp:
        return STUCK_CPU, f"only {len(out.online)} of {settings.smp} CPUs online"
    return ("booted" if settings.plain_boot else "completed"), last_line


def make_result(machine: Machine, verdict: tuple[str, str, Lockup | None], guest_ns: int, wall_s: float,
                bql: BqlStatistics, iterations: Callable[[CPUState], int], effects: int) -> RunResult:
    kind, reason, lockup = verdict
    out = machine.outcome
    return RunResult(
        verdict=kind, reason=reason, settings=machine.settings, cpus_online=len(out.online),
        guest_time_s=guest_ns / NS, wall_time_s=wall_s, lockup=lockup,
        failures=[f"{f.kind}: {f.text}" for f in out.failures], console=[line for _, line in out.console],
        cpu_stats={cpu.name: {**cpu.stats, "loop_iterations": iterations(cpu)} for cpu in machine.cpus},
        bql_stats={t: dict(s.__dict__) for t, s in bql.per_thread.items()},
        effects=effects,
    )
