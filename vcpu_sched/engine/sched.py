"""Deterministic stepping of every QEMU thread on one host thread: the Trio and explore engines' core.

Each QEMU thread is a `Task`: its model generator, its contextvars Context (its `current_cpu`), the
`EngineCore.perform` generator of the effect in progress and the primitive it waits on. `step` performs
a task's pending primitive and runs the thread on to its next blocking point: a primitive that may have
to wait (Acquire, Park, a timed Sleep) or the start of its next effect. Between two steps nothing else
runs, so the model is never observed half-way.

Which task steps next is always an explicit choice: the engine picks among `enabled()` (the Trio engine
takes the first, the explorer asks its strategy). Tasks become enabled in an order that is a function of
the model and the seed only: cooperative wake-ups in the order the threads parked, timers in order of
their due time and then of a per-thread key drawn from the seed. Nothing depends on Trio's scheduler,
on memory addresses or on which other runs happened in this process.
"""

from __future__ import annotations

import bisect
import contextvars
import heapq
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any

from ..model.effects import BqlLock, BqlUnlock, Effect, QemuCond, Spend
from .core import Acquire, EngineCore, Park, Perform, Primitive, Release, Sleep, ThreadRec


def _started() -> Perform:
    return None
    yield  # pragma: no cover - makes this a generator that ends at once


@dataclass(eq=False, repr=False)
class Task:
    rec: ThreadRec
    gen: Generator[Effect, Any, Any]
    order: int  # position in the machine's thread list
    key: float  # seeded tie-break between timers due at the same instant
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    perform: Perform = field(default_factory=_started)
    prim: Primitive | None = None
    since: int = 0  # when the pending primitive began
    timer: int = 0  # sequence number of the task's live timer (0: none)
    due: int = 0  # when that timer comes
    fired: bool = False  # its timer has come
    queued: bool = False  # in the ready list (a task waiting on Acquire: see Scheduler._waiting)
    done: bool = False
    qseq: int = 0  # its place in ready order: when it was queued
    armed: int = 0  # when its pending Acquire began, in the same count: the order waiters are queued again

    @property
    def name(self) -> str:
        return self.rec.name


_ARMED = attrgetter("armed")
_PLACE = itemgetter(0)


class Scheduler:
    """The tasks, their timers and wake-ups; also the machine's WakeHub (its clock and broadcasts).
    `timed`: Sleeps take guest time (Trio) or none (explore). `run_on`: the engine always steps the task
    it has just stepped again while it can (Trio): `step` then performs at once what it would be stepped
    for next, until the task waits or the guest has finished."""

    def __init__(self, core: EngineCore, timed: bool, run_on: bool = False) -> None:
        self.core = core
        self.timed = timed
        self.run_on = run_on
        self.now = 0
        rng = self._rng = random.Random(f"sched:{core.machine.settings.seed}")
        self.tasks = [Task(core.threads[name], factory(), i, rng.random())
                      for i, (name, factory) in enumerate(core.machine.threads())]
        self.by_name = {t.name: t for t in self.tasks}
        # Ready order is one sequence of places (qseq). Its tasks waiting on Acquire are kept apart, as
        # every one of them is queued again at each release of the BQL and dropped at the next look while
        # it is held: with thousands of vCPUs that is most of a run. _waiting[:_wstart] are the waiters
        # dropped since the last release (`_release` queues them again, in the order they began waiting),
        # _waiting[_wstart:] the queued ones, at the places _wseq[_wstart:]; _uncontended are the queued
        # waiters not yet found contended (core.contended is due when one is first dropped).
        self._ready: list[Task] = []  # the other queued tasks, in ready order
        self._waiting: list[Task] = []
        # After a release that found every waiter dropped their places are consecutive: a range, until a
        # change other than the first waiter leaving (the commonest) makes it a list again.
        self._wseq: list[int] | range = []
        self._wstart = 0
        self._wsorted = True  # _waiting is in the order its tasks began waiting (their `armed`)
        self._uncontended: list[Task] = []
        self._qseq = 0
        self._parked: dict[QemuCond, list[Task]] = {}
        self._timers: list[tuple[int, float, int, Task]] = []
        self._seq = 0
        self.broadcasts: set[str] | None = None  # when a set: the names of the conditions broadcast
        # With run_on, the engine's next look at anything but the tasks (guest ns; None: it never lets a
        # Sleep pass inside a step, see _jump), and how many Sleeps passed so.
        self.horizon: int | None = None
        self.jumps = 0
        core.machine.attach(self)

    def start(self) -> None:
        """Log the run's start, then run every thread to its first blocking point, in thread order."""
        self.core.start()
        for task in self.tasks:
            task.context.run(self._advance, task, None)

    def now_ns(self) -> int:
        return self.now

    # --- the WakeHub side ------------------------------------------------------------------------

    def notify(self, cond: QemuCond) -> None:
        if self.broadcasts is not None:
            self.broadcasts.add(cond.name)
        for task in self._parked.get(cond, ()):
            self._queue(task)

    def spawn(self, name: str, factory: Callable[[], Generator[Effect, Any, Any]]) -> None:
        """A new thread, run at once to its first blocking point (from inside another task's step)."""
        task = Task(self.core.add_thread(name), factory(), len(self.tasks), self._rng.random())
        self.tasks.append(task)
        self.by_name[name] = task
        task.context.run(self._advance, task, None)

    # --- what may run ----------------------------------------------------------------------------

    def is_enabled(self, task: Task) -> bool:
        prim = task.prim
        if task.done or prim is None:
            return False
        # The primitives are NamedTuples nobody subclasses: `type() is` is isinstance here, and cheaper.
        if type(prim) is Acquire:
            return self.core.bql.owner is None
        if type(prim) is Park:
            return task.fired or prim.woken()
        if type(prim) is Sleep:
            return task.fired or not self.timed or prim.ns == 0
        return True

    def enabled(self) -> list[Task]:
        """The tasks that can step now, in the order they became ready. A task dropped here is queued
        again by what can enable it: a broadcast, its timer, or the BQL's release."""
        ready = []
        for task in self._ready:
            if self.is_enabled(task):
                ready.append(task)
            else:
                task.queued = False
        self._ready = ready
        ws = self._wstart
        if self.core.bql.owner is not None:  # no waiter can take it
            self._drop_waiters(None)
            return ready
        places = [(task.qseq, task) for task in ready] + list(zip(self._wseq[ws:], self._waiting[ws:], strict=True))
        places.sort(key=_PLACE)
        return [task for _, task in places]

    def first_enabled(self) -> Task | None:
        """The first task in ready order that can step now (what `enabled()[0]` would be, without
        looking at the rest of the list)."""
        ready, ws = self._ready, self._wstart
        bql_free = self.core.bql.owner is None
        # With the BQL free the first queued waiter can step: nothing queued after it is looked at.
        limit = self._wseq[ws] if bql_free and ws < len(self._wseq) else None
        found = None
        dropped = 0
        for task in ready:
            if limit is not None and task.qseq > limit:
                break
            if self.is_enabled(task):
                found = task
                break
            task.queued = False
            dropped += 1
        if dropped:
            del ready[:dropped]
        if found is None and limit is not None:
            return self._waiting[ws]
        if not bql_free:
            self._drop_waiters(found)
        return found

    def _drop_waiters(self, found: Task | None) -> None:
        """The BQL is held: drop the queued waiters ahead of `found` in ready order (all without it)."""
        end = len(self._wseq) if found is None else bisect.bisect_left(self._wseq, found.qseq, self._wstart)
        if end == self._wstart:
            return
        end_seq = self._wseq[end - 1]
        uncontended = self._uncontended
        while uncontended and uncontended[0].qseq <= end_seq:
            task = uncontended.pop(0)
            assert type(task.prim) is Acquire
            self.core.contended(task.rec, task.prim.site)
        self._wstart = end

    def _queue(self, task: Task) -> None:
        if not task.queued:
            task.queued = True
            self._qseq += 1
            task.qseq = self._qseq
            self._ready.append(task)

    def next_due(self) -> int | None:
        """When the earliest live timer comes, if any."""
        timers = self._timers
        while timers and timers[0][3].timer != timers[0][2]:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def advance_to(self, t: int) -> None:
        """Let guest time reach `t`: every timer due by then fires, earliest (then lowest key) first."""
        self.now = max(self.now, t)
        timers = self._timers
        while timers and timers[0][0] <= self.now:
            _, _, seq, task = heapq.heappop(timers)
            if task.timer == seq:
                task.timer, task.fired = 0, True
                self._queue(task)

    # --- one step --------------------------------------------------------------------------------

    def step(self, task: Task) -> Primitive | None:
        """Perform the task's pending primitive (it is enabled) and run it to its next blocking point.
        Returns the primitive it performed."""
        prim = task.prim
        if type(prim) is Acquire:
            at = self._waiting.index(task, self._wstart)
            del self._waiting[at]
            if at == 0 and type(self._wseq) is range:
                self._wseq = self._wseq[1:]
            else:
                self._wseq_list().pop(at)
            if task in self._uncontended:
                self._uncontended.remove(task)
        else:
            self._ready.remove(task)
        task.queued = False
        value: Any = None
        if type(prim) is Park:
            value = prim.timeout_ns if (task.fired and not prim.woken()) else self.now - task.since
            for cond in prim.conds:
                waiting = self._parked.get(cond)
                if waiting is not None and task in waiting:
                    waiting.remove(task)
        elif type(prim) is Release and self._wstart:
            self._release()
        task.timer, task.fired, task.prim = 0, False, None
        task.context.run(self._advance, task, value, self.run_on)
        return prim

    def _advance(self, task: Task, value: Any, run_on: bool = False) -> None:
        # The hottest loop of a run: `_goes_on` and `_release`'s test are written out here.
        core = self.core
        machine, bql, timed, rec, gen = core.machine, core.bql, self.timed, task.rec, task.gen
        new_effect = False
        while True:
            try:
                prim = task.perform.send(value)
            except StopIteration as stop:
                value = stop.value
                while True:  # the thread's next effect
                    try:
                        effect = gen.send(value)
                    except StopIteration:
                        task.done = True
                        return
                    # Done here without a `perform` generator: a Spend that only owes its time, and with
                    # run_on (until the guest has finished: an effect's start is no choice point then) a
                    # BqlUnlock and a BqlLock of the free BQL. Each does what perform and this loop would
                    # do with its primitives, through perform's own parts (spend, unlock, want, took).
                    value = None
                    if type(effect) is Spend:
                        core.effects += 1
                        rest = core.spend(rec, effect)
                        if rest is None:
                            continue
                        task.perform = rest
                        break
                    if run_on and not machine.finished and core.verdict is None:
                        if type(effect) is BqlUnlock:
                            core.effects += 1
                            core.unlock(rec, effect.site)
                            if self._wstart:
                                self._release()
                            continue
                        if type(effect) is BqlLock and bql.owner is None and not rec.owed_ns and not rec.holds_bql:
                            core.effects += 1
                            core.want(rec, effect.site)
                            core.took(rec, effect.site)
                            continue
                    task.perform = core.perform(rec, effect)
                    break
                new_effect = True
                continue
            kind = type(prim)
            if kind is Release:
                if new_effect and not (run_on and not machine.finished and core.verdict is None):
                    self._arm(task, prim, False)
                    return
                if self._wstart:
                    self._release()
            elif new_effect or kind is Acquire or kind is Park or (kind is Sleep and timed):
                woken = type(prim) is Park and prim.woken()
                goes_on = run_on and not machine.finished and core.verdict is None and (
                    bql.owner is None if type(prim) is Acquire
                    else woken if type(prim) is Park
                    else prim.ns == 0 if type(prim) is Sleep
                    else True)
                if not goes_on and not (type(prim) is Sleep and run_on and self._jump(prim.ns)):
                    self._arm(task, prim, woken)
                    return
                if kind is Park:
                    value = 0  # a Park already woken has slept 0 ns
                    new_effect = False
                    continue
            value, new_effect = None, False

    def _jump(self, ns: int) -> bool:
        """The running task sleeps `ns`: let that time pass here, and go on, when the engine would step
        this task next anyway - nothing else can step now, no other timer comes first or at the same
        instant, and the engine looks at nothing before then (its `horizon`: the watchdog's next check,
        the deadline). What the engine's loop would do in between (find no task ready, advance time,
        step this one) changes nothing else, so the run is the same, without a timer per wake-up."""
        horizon = self.horizon
        machine, core = self.core.machine, self.core
        if horizon is None or machine.finished or core.verdict is not None:
            return False
        due = self.now + ns
        if due >= horizon:
            return False
        if (self._ready or self._wstart < len(self._wseq)) and self.first_enabled() is not None:
            return False
        later = self.next_due()
        if later is not None and later <= due:
            return False
        self.now = due
        self.jumps += 1
        return True

    def _arm(self, task: Task, prim: Primitive, woken: bool) -> None:
        """`woken`: a Park's woken(), as the caller has just found it."""
        task.prim, task.since = prim, self.now
        if type(prim) is Acquire:
            self._qseq += 1
            task.qseq = task.armed = self._qseq  # the latest: appending keeps _wsorted
            if not self._waiting:
                self._wsorted = True
            self._waiting.append(task)
            self._wseq_list().append(task.qseq)
            if task.rec.waited_since is None:  # it found the BQL free when it asked
                self._uncontended.append(task)
            return
        if type(prim) is Park:
            if not woken:
                for cond in prim.conds:
                    self._parked.setdefault(cond, []).append(task)
                if prim.timeout_ns is not None:
                    self._set_timer(task, prim.timeout_ns)
                return
        elif type(prim) is Sleep and self.timed and prim.ns:
            self._set_timer(task, prim.ns)
            return
        self._queue(task)

    def _set_timer(self, task: Task, ns: int) -> None:
        self._seq += 1
        task.timer, task.due = self._seq, self.now + ns
        heapq.heappush(self._timers, (task.due, task.key, self._seq, task))

    def _release(self) -> None:
        # Like a pthread mutex, letting go hands nothing over: every waiter may try, and one gets it.
        ws = self._wstart
        if ws:
            first = self._qseq + 1
            self._qseq += ws
            self._wstart = 0
            if ws == len(self._waiting):  # every waiter was dropped (most releases): they keep their order
                if not self._wsorted:
                    self._waiting.sort(key=_ARMED)
                    self._wsorted = True
                self._wseq = range(first, first + ws)
                return
            dropped = self._waiting[:ws]
            if not self._wsorted:
                dropped.sort(key=_ARMED)
            wseq = self._wseq_list()
            del self._waiting[:ws], wseq[:ws]  # in place: thousands of waiters, a release each turn
            self._waiting += dropped
            wseq += range(first, first + ws)
            self._wsorted = False

    def _wseq_list(self) -> list[int]:
        if type(self._wseq) is range:
            self._wseq = list(self._wseq)
        assert type(self._wseq) is list
        return self._wseq

    # --- the end ---------------------------------------------------------------------------------

    def close(self) -> None:
        """End every thread where it is (its `finally` blocks run), in thread order."""
        for task in self.tasks:
            task.context.run(task.perform.close)
            task.context.run(task.gen.close)

