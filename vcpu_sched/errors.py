"""The project's own exceptions, in one place so that no layer imports another just to raise one."""

from __future__ import annotations

import reprlib


class BadInput(Exception):
    """Input the user must fix: a one-line message, exit status 2."""


class ModelError(Exception):
    """The model broke one of QEMU's rules (the BQL unlocked by a thread that does not hold it, or locked
    twice): a bug in the model, never in the guest, so the run stops and the error is raised."""


class WorkerLost(Exception):
    """A worker process of matrix died before it gave its result (killed, out of memory)."""


class RunKilled(Exception):
    """The process got SIGTERM: the run was stopped before a verdict."""


class _Shown(reprlib.Repr):
    """repr for a message: bounded in depth and length, and safe for integers Python will not print
    (beyond 4300 digits) and for values nested deeper than the recursion limit."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 3, 80, 80, 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of {x.bit_length()} bits>"
        return repr(x)


def shown(value: object) -> str:
    """`value` as a one-line message shows it: at most a few levels deep and a few dozen characters."""
    try:
        return _Shown().repr(value)
    except (RecursionError, ValueError):
        return f"<a {type(value).__name__}>"
