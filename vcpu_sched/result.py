"""What a run ends with: the verdict, the lockup diagnosis, and the numbers behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import RunSettings
from .verdicts import SUCCESS


@dataclass(eq=False, repr=False)
class CpuRow:
    """One line of the watchdog's CPU table."""

    cpu: int
    thread: str
    where: str
    halted: bool
    quiesced: bool
    hard: bool
    lpcr: str
    lpcr_decoded: str
    psscr_ec: bool | None
    pending: list[str]
    would_take: str
    loop_iterations: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(eq=False, repr=False)
class Lockup:
    """The watchdog's finding: who is stuck, who holds the BQL and why it never lets go."""

    stuck_cpu: int | None
    stuck_thread: str
    waiting_for: str
    waiting_since_s: float
    wait_site: str
    bql_holder: int | None
    bql_holder_thread: str | None
    holder_site: str
    held_for_s: float
    holder_iterations: int
    chain: list[str]
    cpus: list[CpuRow]
    main_loop_blocked_s: float | None = None
    main_loop_waits_for: str | None = None  # what the blocked main loop waits for (the BQL, an event)
    # threads engine: the spinning thread as the OS sees it (native_id, cpu_percent), and `top -H`
    holder_thread: dict[str, Any] | None = None
    top_threads: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cause(self) -> str:
        return " ".join(self.chain)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stuck_cpu": self.stuck_cpu, "stuck_thread": self.stuck_thread, "waiting_for": self.waiting_for,
            "waiting_since_s": self.waiting_since_s, "wait_site": self.wait_site,
            "bql_holder": self.bql_holder, "bql_holder_thread": self.bql_holder_thread,
            "holder_site": self.holder_site, "held_for_s": self.held_for_s,
            "holder_iterations": self.holder_iterations, "main_loop_blocked_s": self.main_loop_blocked_s,
            "main_loop_waits_for": self.main_loop_waits_for,
            "holder_thread": self.holder_thread, "top_threads": self.top_threads,
            "cause": self.cause, "chain": self.chain, "cpus": [row.to_dict() for row in self.cpus],
        }


@dataclass(eq=False, repr=False)
class RunResult:
    """The outcome of one run, for the CLI, the tests and the benchmarks."""

    verdict: str
    reason: str
    settings: RunSettings
    cpus_online: int
    guest_time_s: float
    wall_time_s: float
    lockup: Lockup | None = None
    failures: list[str] = field(default_factory=list)
    why: list[str] = field(default_factory=list)  # a guest failure's causal chain (explain.failure_chain)
    console: list[str] = field(default_factory=list)
    cpu_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    bql_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    effects: int = 0  # blocking points the engine performed (for benchmarks)
    scenario_settings: RunSettings | None = None  # the scenario's own settings, for the replay command
    schedule: Any = None  # explore engine: the Schedule (choices and steps) this run followed

    @property
    def exit_status(self) -> int:
        return 0 if self.verdict in SUCCESS else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "reason": self.reason, "smp": self.settings.smp,
            "cpus_online": self.cpus_online, "guest_time_s": self.guest_time_s,
            "wall_time_s": self.wall_time_s, "settings": self.settings.to_dict(),
            "lockup": self.lockup.to_dict() if self.lockup else None,
            "failures": self.failures, "why": self.why, "console": self.console,
            "cpu_stats": self.cpu_stats, "bql_stats": self.bql_stats, "effects": self.effects,
        }
