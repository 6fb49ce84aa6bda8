"""Progress of a long `analyze` on stderr (issue 25 item 9).

On a terminal: one line rewritten in place, from the first second on, at most four times a second, and
erased when the analysis ends, so the report that follows is all that stays. Not on a terminal (a pipe, a
file, CI): nothing for the first five seconds - a short analysis prints nothing - then a plain line every
five seconds. The readers (qemu_trace.TraceFiles, logread.read_log) count the characters of the lines they
read through `counted`, and say where a pass over the input starts (`next_pass`); the command sets the
reporter for the duration of the analysis (`reporting`). stdout, the report, is never touched.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import TextIO

TTY_DELAY_S, TTY_EVERY_S = 1.0, 0.25
PIPE_DELAY_S, PIPE_EVERY_S = 5.0, 5.0
CHECK_LINES = 8192  # the clock is read once per this many lines


class Progress:
    def __init__(self, label: str, total_bytes: int, passes: int, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, tty: bool | None = None) -> None:
        self.label, self.total, self.passes = label, max(total_bytes, 1), max(passes, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.clock = clock
        self.started = clock()
        self.next_at = self.started + (TTY_DELAY_S if self.tty else PIPE_DELAY_S)
        self.every = TTY_EVERY_S if self.tty else PIPE_EVERY_S
        self.pass_number = 0
        self.done = 0  # characters read in this pass
        self.shown = 0  # lines or rewrites written
        self.width = 0

    def next_pass(self) -> None:
        self.pass_number += 1
        self.done = 0

    def advance(self, chars: int) -> None:
        self.done += chars
        now = self.clock()
        if now >= self.next_at:
            self.next_at = now + self.every
            self._show(now)

    def _show(self, now: float) -> None:
        number = min(max(self.pass_number, 1), self.passes)
        share = min(((number - 1) * self.total + min(self.done, self.total)) / (self.passes * self.total), 1.0)
        text = (f"analyze: {self.label}: {share:.0%} (pass {number} of {self.passes}, "
                f"{min(self.done, self.total) / 1e6:,.1f} of {self.total / 1e6:,.1f} MB), {now - self.started:.0f} s")
        try:
            if self.tty:
                self.stream.write("\r" + text.ljust(self.width))
                self.width = len(text)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or full: progress is never worth failing for
            return
        self.shown += 1

    def finish(self) -> None:
        if self.tty and self.shown:
            try:
                self.stream.write("\r" + " " * self.width + "\r")
                self.stream.flush()
            except (OSError, ValueError):
                pass


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


_current: Progress | None = None


@contextmanager
def reporting(paths: list[str], passes: int, stream: TextIO | None = None,
              clock: Callable[[], float] = time.monotonic, tty: bool | None = None) -> Iterator[Progress]:
    """Report the progress of reading `paths` `passes` times while the block runs."""
    global _current
    total = 0
    for path in paths:
        with suppress(OSError):
            total += os.stat(path).st_size
    label = paths[0] if len(paths) == 1 else f"{len(paths)} files"
    progress = Progress(label, total, passes, stream, clock, tty)
    before, _current = _current, progress
    try:
        yield progress
    finally:
        _current = before
        progress.finish()


def next_pass() -> None:
    if _current is not None:
        _current.next_pass()


def current() -> Progress | None:
    """The progress being reported, for a reader that counts its characters itself (every CHECK_LINES lines)."""
    return _current


def counted(lines: Iterable[str]) -> Iterator[str]:
    """The lines, their characters counted towards the current progress (if any)."""
    progress = _current
    if progress is None:
        yield from lines
        return
    n = chars = 0
    for line in lines:
        n += 1
        chars += len(line)
        if n == CHECK_LINES:
            progress.advance(chars)
            n = chars = 0
        yield line
    progress.advance(chars)
