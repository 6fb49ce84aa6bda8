"""The project's own exceptions, in one place so that no layer imports another just to raise one."""

from __future__ import annotations


class BadInput(Exception):
    """Input the user must fix: a one-line message, exit status 2."""


class ModelError(Exception):
    """The model broke one of QEMU's rules (the BQL unlocked by a thread that does not hold it, or locked
    twice): a bug in the model, never in the guest, so the run stops and the error is raised."""


class WorkerLost(Exception):
    """A worker process of matrix died before it gave its result (killed, out of memory)."""


class RunKilled(Exception):
    """The process got SIGTERM: the run was stopped before a verdict."""
