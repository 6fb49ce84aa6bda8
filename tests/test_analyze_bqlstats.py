"""The summary's BQL figures, taken as the intervals are made, are what the kept intervals give."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from vcpu_sched.analyze.bqlstats import BqlStats, Durations
from vcpu_sched.analyze.timeline import Interval

THREADS = ("CPU 0/KVM", "CPU 1/KVM", "main")
KINDS = ("BQL held", "BQL wait")
# (time step, thread, kind, open or close)
STEPS = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(THREADS), st.sampled_from(KINDS), st.booleans()),
                 max_size=60)


def _naive(intervals: list[Interval]) -> tuple[Interval | None, list[Interval]]:
    """What the summary computed from every interval, sorted as the timeline sorts them."""
    ordered = sorted(intervals, key=lambda iv: (iv.thread, iv.start_ns, -iv.end_ns))
    holds = [iv for iv in ordered if iv.kind == "BQL held"]
    if not holds:
        return None, []
    longest = max(holds, key=lambda iv: iv.ns)
    return longest, [iv for iv in ordered if iv.kind == "BQL wait"
                     and iv.start_ns < longest.end_ns and iv.end_ns > longest.start_ns]


@settings(max_examples=400, deadline=None)
@given(STEPS, st.integers(0, 3))
def test_the_longest_hold_and_its_waiters_as_from_every_interval(steps: list[tuple[int, str, str, bool]],
                                                                 tail: int) -> None:
    """As timeline.build feeds it: an opener replaces an interval still open, a closer makes one, a wait of
    no length is none, and what is open at the end is made then."""
    stats, made = BqlStats(), []
    opened: dict[tuple[str, str], int] = {}
    t = 0

    def make(iv: Interval) -> None:
        if iv.kind != "BQL wait" or iv.ns > 0 or iv.open:
            made.append(iv)
            stats.made(iv)

    for step, thread, kind, opening in steps:
        t += step
        if opening:
            opened[(thread, kind)] = t
            stats.opened(thread, kind, t)
        elif (thread, kind) in opened:
            make(Interval(thread, kind, opened.pop((thread, kind)), t))
    for (thread, kind), start in opened.items():
        make(Interval(thread, kind, start, t + tail, open=True))
    longest, waits = _naive(made)
    assert stats.longest is longest
    assert [id(w) for w in stats.longest_waits] == [id(w) for w in waits]
    for thread in THREADS:
        for kind, durations in (("BQL held", stats.holds), ("BQL wait", stats.waits)):
            lengths = [iv.ns for iv in made if iv.thread == thread and iv.kind == kind]
            if lengths:
                assert durations[thread].to_dict() == _reference(lengths)
            else:
                assert thread not in durations


def _reference(values: list[int]) -> dict[str, float | int]:
    v = sorted(values)
    p99 = v[min(len(v) - 1, math.ceil(0.99 * len(v)) - 1)] if v else 0
    return {"count": len(v), "total_s": sum(v) / 1e9, "max_s": (v[-1] if v else 0) / 1e9, "p99_s": p99 / 1e9}


@given(st.lists(st.integers(0, 10**12), max_size=400) | st.lists(st.sampled_from([0, 1000, 2000, 10**9]),
                                                                 max_size=400))
def test_durations_count_total_max_and_p99_exactly(values: list[int]) -> None:
    durations = Durations()
    for ns in values:
        durations.add(ns)
    assert durations.to_dict() == _reference(values)
    assert len(durations.counts) == len(set(values))  # memory for the lengths that differ
