"""Lock and thread bookkeeping every engine shares: who holds the BQL, who waits, and since when.

The statistics mirror what trio's primitives expose (`*Statistics`) and what `analyze` and the
watchdog report: per thread, hold and wait counts, totals and maxima in guest nanoseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model.cpus import CPUState


@dataclass(eq=False, repr=False)
class HoldStats:
    holds: int = 0
    hold_ns: int = 0
    max_hold_ns: int = 0
    waits: int = 0
    wait_ns: int = 0
    max_wait_ns: int = 0


@dataclass(eq=False, repr=False)
class Blocked:
    """A thread that is not running: what it waits for, since when, and where it called from."""

    what: str  # "BQL" or a condition's name
    since_ns: int
    site: str


@dataclass(eq=False, repr=False)
class BqlStatistics:
    """The BQL's owner and history, plus every thread's current blocking point."""

    owner: str | None = None
    owner_since_ns: int = 0
    owner_site: str = ""
    per_thread: dict[str, HoldStats] = field(default_factory=dict)
    blocked: dict[str, Blocked] = field(default_factory=dict)

    def stats(self, thread: str) -> HoldStats:
        s = self.per_thread.get(thread)
        if s is None:  # not setdefault: that would build a HoldStats on every call
            s = self.per_thread[thread] = HoldStats()
        return s

    def took(self, thread: str, site: str, now: int, waited_since: int | None) -> None:
        self.owner, self.owner_since_ns, self.owner_site = thread, now, site
        s = self.stats(thread)
        s.holds += 1
        if waited_since is not None:
            waited = now - waited_since
            s.waits += 1
            s.wait_ns += waited
            s.max_wait_ns = max(s.max_wait_ns, waited)

    def released(self, thread: str, now: int) -> int:
        held = now - self.owner_since_ns
        s = self.stats(thread)
        s.hold_ns += held
        s.max_hold_ns = max(s.max_hold_ns, held)
        self.owner = None
        return held

    def waiters(self) -> list[str]:
        return [t for t, b in self.blocked.items() if b.what == "BQL"]


def cpu_field(cpu: CPUState | None) -> int | str:
    """The `cpu` field of an engine event: the vCPU's index, or "main" for the main thread."""
    return cpu.cpu_index if cpu is not None else "main"


class BqlBook:
    """The BQL's bookkeeping every engine shares: statistics, blocked threads and the trace events.

    Engines differ in how a thread waits; what is recorded (and logged, for `analyze`) about taking,
    holding and dropping the BQL and about condition waits is the same for all of them.
    """

    def __init__(self, trace: Callable[..., None], now_ns: Callable[[], int],
                 traced: Callable[[str], bool] = lambda event: True) -> None:
        self.stats = BqlStatistics()
        self._trace = trace
        self._now = now_ns
        self._traced = traced

    # The commonest events: each method asks `_traced` first and builds nothing when nobody listens (not
    # even the keyword arguments of a call: most runs trace none of them).

    def want(self, thread: str, cpu: CPUState | None, site: str) -> int | None:
        """A thread is about to take the BQL: the time its wait started, or None if the BQL is free."""
        owner = self.stats.owner
        if self._traced("qemu_mutex_lock"):
            self._trace("qemu_mutex_lock", cpu=cpu_field(cpu), thread=thread, site=site, owner=owner)
        if owner is None:
            return None
        self.contended(thread, site)
        return self._now()

    def contended(self, thread: str, site: str) -> int:
        """A thread that found the BQL free when it asked finds it taken when it tries: it waits from now
        (or since the condition wait it came from). Returns when its wait began."""
        blocked = self.stats.blocked.get(thread)
        if blocked is None or blocked.what != "BQL":
            blocked = self.stats.blocked[thread] = Blocked("BQL", blocked.since_ns if blocked else self._now(), site)
        return blocked.since_ns

    def took(self, thread: str, cpu: CPUState | None, site: str, waited_since: int | None) -> None:
        now = self._now()
        self.stats.blocked.pop(thread, None)
        self.stats.took(thread, site, now, waited_since)
        if self._traced("qemu_mutex_locked"):
            self._trace("qemu_mutex_locked", cpu=cpu_field(cpu), thread=thread, site=site,
                        waited_ns=now - waited_since if waited_since is not None else 0)

    def released(self, thread: str, cpu: CPUState | None, site: str) -> None:
        held = self.stats.released(thread, self._now())
        if self._traced("qemu_mutex_unlock"):
            self._trace("qemu_mutex_unlock", cpu=cpu_field(cpu), thread=thread, site=site, held_ns=held)

    def cond_wait(self, thread: str, cpu: CPUState | None, cond: str, site: str) -> None:
        self.stats.blocked[thread] = Blocked(cond, self._now(), site)
        if self._traced("qemu_cond_wait"):
            self._trace("qemu_cond_wait", cpu=cpu_field(cpu), thread=thread, cond=cond, site=site)

    def cond_woken(self, thread: str, cpu: CPUState | None, cond: str) -> None:
        if self._traced("qemu_cond_woken"):
            self._trace("qemu_cond_woken", cpu=cpu_field(cpu), thread=thread, cond=cond)

    def event_wait(self, thread: str, cpu: CPUState | None, what: str, site: str) -> None:
        """A wait that is neither the BQL nor a condition wait on it (a QemuEvent, a kernel mutex)."""
        self.stats.blocked[thread] = Blocked(what, self._now(), site)
        if self._traced("qemu_event_wait"):
            self._trace("qemu_event_wait", cpu=cpu_field(cpu), thread=thread, what=what, site=site)

    def event_woken(self, thread: str, cpu: CPUState | None, what: str) -> None:
        self.stats.blocked.pop(thread, None)
        if self._traced("qemu_event_woken"):
            self._trace("qemu_event_woken", cpu=cpu_field(cpu), thread=thread, what=what)
