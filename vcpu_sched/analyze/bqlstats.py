"""The BQL figures of an event log's summary, taken from the intervals as the timeline closes them: each
thread's hold and wait lengths, and the longest hold with the waits that overlap it. Nothing here keeps
every interval, so the summary alone costs memory that does not grow with the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # timeline imports this module
    from .timeline import Interval

NS = 1_000_000_000


@dataclass
class Durations:
    """Interval lengths in ns, kept as how many of each length: an exact count, total, max and p99 in memory
    that grows with the lengths that differ (a trace's times are whole microseconds, the model's few), not
    with their number."""

    counts: dict[int, int] = field(default_factory=dict)

    def add(self, ns: int) -> None:
        counts = self.counts
        counts[ns] = counts.get(ns, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        lengths = sorted(self.counts.items())
        count = sum(n for _, n in lengths)
        p99 = 0
        rank = min(count - 1, math.ceil(0.99 * count) - 1)  # the p99's index among the sorted lengths
        seen = 0
        for ns, n in lengths:
            seen += n
            if seen > rank:
                p99 = ns
                break
        return {"count": count, "total_s": sum(ns * n for ns, n in lengths) / NS,
                "max_s": (lengths[-1][0] if lengths else 0) / NS, "p99_s": p99 / NS}


def _order(iv: Interval) -> tuple[str, int, int]:
    """The timeline's order of intervals: by thread, then start, the longer first."""
    return iv.thread, iv.start_ns, -iv.end_ns


class BqlStats:
    """Fed every `BQL held` and `BQL wait` interval as it opens and as it is made (closed, or open at the
    log's end), in the timeline's order of making them."""

    def __init__(self) -> None:
        self.holds: dict[str, Durations] = {}
        self.waits: dict[str, Durations] = {}
        # The longest hold (the first of the timeline's order among equals) and the waits overlapping it.
        self.longest: Interval | None = None
        self._longest_waits: list[Interval] = []
        self._open_holds: dict[str, int] = {}  # thread -> the start of its hold not yet made
        self._open_waits: dict[str, int] = {}
        self._finished: list[Interval] = []  # waits made while a hold was open: they may overlap it
        self._pending: dict[str, int] = {}  # waits open when the longest hold ended: thread -> start

    @property
    def longest_waits(self) -> list[Interval]:
        return sorted(self._longest_waits, key=_order)

    def opened(self, thread: str, kind: str, t: int) -> None:
        (self._open_holds if kind == "BQL held" else self._open_waits)[thread] = t

    def made(self, iv: Interval) -> None:
        if iv.kind == "BQL held":
            self._hold(iv)
        else:
            self._wait(iv)

    @staticmethod
    def _count(iv: Interval, still_open: dict[str, int], lengths: dict[str, Durations]) -> None:
        """`iv` is no longer open; its length counts for its thread."""
        if still_open.get(iv.thread) == iv.start_ns:
            del still_open[iv.thread]
        durations = lengths.get(iv.thread)
        if durations is None:
            durations = lengths[iv.thread] = Durations()
        durations.add(iv.end_ns - iv.start_ns)

    def _wait(self, iv: Interval) -> None:
        self._count(iv, self._open_waits, self.waits)
        thread = iv.thread
        if self._pending.get(thread) == iv.start_ns:
            del self._pending[thread]
            assert self.longest is not None
            if iv.end_ns > self.longest.start_ns:
                self._longest_waits.append(iv)
        if self._open_holds:
            self._finished.append(iv)

    def _hold(self, iv: Interval) -> None:
        self._count(iv, self._open_holds, self.holds)
        ns = iv.end_ns - iv.start_ns
        best = self.longest
        if best is None or ns > best.ns or (ns == best.ns and _order(iv) < _order(best)):
            self.longest = iv
            self._longest_waits = [w for w in self._finished if w.end_ns > iv.start_ns and w.start_ns < iv.end_ns]
            self._pending = {t: start for t, start in self._open_waits.items() if start < iv.end_ns}
        if not self._open_holds:
            self._finished.clear()
        else:
            since = min(self._open_holds.values())
            self._finished = [w for w in self._finished if w.end_ns > since]
