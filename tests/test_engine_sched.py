"""The scheduler's shortcuts change no run: the BQL's waiters, queued again at each release, keep the order
they began waiting in without being sorted each time (Scheduler._wsorted), and their places are a range
while they are consecutive (Scheduler._wseq)."""

from __future__ import annotations

import random
from collections.abc import Callable
from operator import attrgetter

import pytest

from tests.test_engine_core import ToyMachine
from vcpu_sched.config import RunSettings
from vcpu_sched.engine import make_engine
from vcpu_sched.engine.sched import Scheduler
from vcpu_sched.model.effects import Block, BqlLock, BqlUnlock, Spend, Thread
from vcpu_sched.model.machine import Machine


def _release_sorting_each_time(self: Scheduler) -> None:
    """Scheduler._release before it kept track of the waiters' order: the dropped waiters are sorted by
    when they began waiting at every release."""
    ws = self._wstart
    if ws:
        dropped = self._waiting[:ws]
        dropped.sort(key=attrgetter("armed"))
        first = self._qseq + 1
        self._qseq += ws
        del self._waiting[:ws], self._wseq[:ws]
        self._waiting += dropped
        self._wseq += range(first, first + ws)
        self._wstart = 0


def _contender(i: int, turns: int) -> Callable[[Machine], Thread]:
    """A thread that takes the BQL, sometimes burns more than a quantum with it (others queue behind it),
    and between turns sleeps on, or broadcasts, the toy condition: ready threads and BQL waiters interleave,
    so some releases find only part of the waiters dropped."""
    def run(m: Machine) -> Thread:
        assert isinstance(m, ToyMachine)
        rng = random.Random(i)
        for _ in range(turns):
            yield BqlLock(f"t{i}")
            m.log.append(str(i))
            if rng.random() < 0.3:
                m.cond.broadcast()
            yield Spend(rng.choice([1_000, 70_000]))
            yield BqlUnlock(f"t{i}")
            r = rng.random()
            if r < 0.4:
                yield Block((m.cond,), rng.choice([10_000, 100_000]))
            elif r < 0.6:
                m.cond.broadcast()
            yield Spend(rng.choice([1_000, 70_000]))
        if i == 0:
            m.guest_finished()
    return run


def _contended_run() -> tuple[list[str], tuple[object, ...]]:
    settings = RunSettings(smp=1, cores=1, engine="trio", wall_deadline_s=20.0, watchdog_s=5.0, deadline_s=10.0)
    machine = ToyMachine(settings, [_contender(i, 300) for i in range(6)])
    result = make_engine(machine).run()
    return machine.log, (result.verdict, result.guest_time_s, result.effects, result.bql_stats)


def test_waiters_take_the_bql_in_the_same_order_as_when_sorted_at_each_release(
        monkeypatch: pytest.MonkeyPatch) -> None:
    unsorted = ranges = 0
    release = Scheduler._release

    def counting_release(self: Scheduler) -> None:
        nonlocal unsorted, ranges
        if self._wstart and not self._wsorted:
            unsorted += 1
        release(self)
        ranges += type(self._wseq) is range

    monkeypatch.setattr(Scheduler, "_release", counting_release)
    order, summary = _contended_run()
    assert unsorted > 10, "the run must also take the path where the waiters are out of order"
    assert ranges > 10
    assert summary[0] == "booted" and len(order) > 1000

    monkeypatch.setattr(Scheduler, "_release", _release_sorting_each_time)
    assert _contended_run() == (order, summary)
