"""Lock and thread bookkeeping every engine shares: who holds the BQL, who waits, and since when.

The statistics mirror what trio's primitives expose (`*Statistics`) and what `analyze` and the
watchdog report: per thread, hold and wait counts, totals and maxima in guest nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HoldStats:
    holds: int = 0
    hold_ns: int = 0
    max_hold_ns: int = 0
    waits: int = 0
    wait_ns: int = 0
    max_wait_ns: int = 0


@dataclass
class Blocked:
    """A thread that is not running: what it waits for, since when, and where it called from."""

    what: str  # "BQL" or a condition's name
    since_ns: int
    site: str


@dataclass
class BqlStatistics:
    """The BQL's owner and history, plus every thread's current blocking point."""

    owner: str | None = None
    owner_since_ns: int = 0
    owner_site: str = ""
    per_thread: dict[str, HoldStats] = field(default_factory=dict)
    blocked: dict[str, Blocked] = field(default_factory=dict)

    def stats(self, thread: str) -> HoldStats:
        return self.per_thread.setdefault(thread, HoldStats())

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
