"""One run with its event log: open the log, run the engine, always close the log with a last line.

The log is line-buffered, so whatever happened before an interruption is already on disk; an
interrupted run (Ctrl-C, SIGTERM) still gets its `run_end` line saying why it ended. Both signals
reach the run through Trio (never a Python signal handler writing to the log, which could deadlock
on the file's buffer lock if the signal lands inside a write).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import RunSettings
from .engine import make_engine
from .engine.core import Engine
from .errors import RunKilled
from .model.machine import Machine
from .result import RunResult


def _is_interrupt(e: BaseException) -> bool:
    """Ctrl-C, possibly wrapped by Trio in an exception group."""
    if isinstance(e, BaseExceptionGroup):
        return e.subgroup(KeyboardInterrupt) is not None
    return isinstance(e, KeyboardInterrupt)


def run(settings: RunSettings, log_path: Path | str | None = None, trace: tuple[str, ...] = (),
        console_out: Callable[[int, str], None] | None = None, log_format: str = "jsonl",
        drive: Callable[[Machine], Engine] | None = None) -> RunResult:
    """Run `settings` on its engine, logging to `log_path` if given (as JSON lines or as QEMU's trace).
    `drive(machine)` makes the engine when the caller runs it otherwise (`vcpu-sched qemu`): it must
    return an engine whose `run()` does that."""
    make = drive or make_engine
    if log_path is None:
        return make(Machine(settings, console_out=console_out)).run()
    with open(log_path, "w", encoding="utf-8", buffering=1) as stream:
        if log_format == "qemu-trace":
            from .qemu_log import QemuTraceLog

            log: Any = QemuTraceLog(stream, trace)
        else:
            from .events import EventLog  # structlog loads only for a logged run

            log = EventLog(stream, trace)
        engine = make(Machine(settings, log, console_out))
        try:
            result = engine.run()
        except BaseException as e:
            # Cut short: the log ends at the guest time reached, so a spin in progress is not understated.
            end = max(log.last_t_ns, engine.now_ns())
            if isinstance(e, RunKilled):
                log.end(end, {"verdict": None, "reason": "killed (SIGTERM)"})
                raise
            if _is_interrupt(e):
                log.end(end, {"verdict": None, "reason": "interrupted (Ctrl-C)"})
                raise KeyboardInterrupt from None
            log.end(end, {"verdict": None, "reason": f"internal error: {type(e).__name__}: {e}"})
            raise
        summary = {"verdict": result.verdict, "reason": result.reason, "cpus_online": result.cpus_online,
                   "guest_time_s": result.guest_time_s,
                   "lockup": result.lockup.to_dict() if result.lockup else None}
        log.end(max(log.last_t_ns, round(result.guest_time_s * 1e9)), summary)  # time never runs backwards
    return result
