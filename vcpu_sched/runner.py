"""One run with its event log: open the log, run the engine, always close the log with a last line.

The log is line-buffered, so whatever happened before an interruption is already on disk; an
interrupted run (Ctrl-C, SIGTERM) still gets its `run_end` line saying why it ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from .config import RunSettings
from .engine.trio_engine import TrioEngine
from .events import EventLog
from .model.machine import Machine
from .result import RunResult


@contextlib.contextmanager
def _end_log_on_sigterm(log: EventLog) -> Iterator[None]:
    def on_term(signum: int, frame: FrameType | None) -> None:
        log.end(log.last_t_ns, {"verdict": None, "reason": "killed (SIGTERM)"})
        os._exit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(settings: RunSettings, log_path: Path | str | None = None, trace: tuple[str, ...] = (),
        console_out: Callable[[int, str], None] | None = None) -> RunResult:
    """Run `settings` on the Trio engine, logging to `log_path` if given."""
    if log_path is None:
        return TrioEngine(Machine(settings, console_out=console_out)).run()
    with open(log_path, "w", encoding="utf-8", buffering=1) as stream:
        log = EventLog(stream, trace)
        engine = TrioEngine(Machine(settings, log, console_out))
        with _end_log_on_sigterm(log):
            try:
                result = engine.run()
            except KeyboardInterrupt:
                log.end(log.last_t_ns, {"verdict": None, "reason": "interrupted (Ctrl-C)"})
                raise
            except BaseException as e:
                log.end(log.last_t_ns, {"verdict": None, "reason": f"internal error: {type(e).__name__}"})
                raise
        summary = {"verdict": result.verdict, "reason": result.reason, "cpus_online": result.cpus_online,
                   "guest_time_s": result.guest_time_s,
                   "lockup": result.lockup.to_dict() if result.lockup else None}
        log.end(round(result.guest_time_s * 1e9), summary)
    return result
