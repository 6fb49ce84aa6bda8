"""Worker processes on the local cores, for `matrix` and `sweep` (standard library only).

A worker leaves Ctrl-C to the parent (the terminal sends it to the whole group), lets SIGTERM end it at
once, and dies with its parent even if that one is SIGKILLed. `stop` ends the workers now, not after the
queued tasks: an interrupted command leaves no process behind.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from typing import Any

from .engine.core import leave_sigterm_to_parent
from .errors import RunKilled


def worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    leave_sigterm_to_parent()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def local_pool(jobs: int | None) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(jobs or os.cpu_count() or 1, initializer=worker_init,
                                                  mp_context=multiprocessing.get_context("fork"))


def stop(executor: concurrent.futures.ProcessPoolExecutor) -> None:
    """Drop the queued tasks and end the workers now."""
    workers = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(5)


def raise_killed(signum: int, frame: Any) -> None:
    """SIGTERM in the parent: end the command as a killed run (exit 143), the workers with it."""
    raise RunKilled("SIGTERM")


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, what: str = "runs", command: str = "matrix") -> None:
        self.total, self.done, self.tty = total, 0, sys.stderr.isatty()
        self.what, self.command = what, command

    def step(self, n: int = 1, extra: str = "") -> None:
        before, self.done = self.done, self.done + n
        if self.tty:
            filled = 30 * self.done // max(self.total, 1)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {extra}")
            if self.done >= self.total:
                sys.stderr.write("\n")
        elif self.done >= self.total or self.done // max(self.total // 10, 1) != before // max(self.total // 10, 1):
            sys.stderr.write(f"{self.command}: {self.done}/{self.total} {self.what} {extra}\n")
        sys.stderr.flush()
