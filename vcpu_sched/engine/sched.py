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

import contextvars
import heapq
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from ..model.effects import Effect, QemuCond
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
    queued: bool = False  # in the ready list
    done: bool = False

    @property
    def name(self) -> str:
        return self.rec.name


class Scheduler:
    """The tasks, their timers and wake-ups; also the machine's WakeHub (its clock and broadcasts).
    `timed`: Sleeps take guest time (Trio) or none (explore)."""

    def __init__(self, core: EngineCore, timed: bool) -> None:
        self.core = core
        self.timed = timed
        self.now = 0
        rng = self._rng = random.Random(f"sched:{core.machine.settings.seed}")
        self.tasks = [Task(core.threads[name], factory(), i, rng.random())
                      for i, (name, factory) in enumerate(core.machine.threads())]
        self.by_name = {t.name: t for t in self.tasks}
        self._ready: list[Task] = []
        self._acquiring: list[Task] = []  # tasks whose pending primitive is Acquire
        self._parked: dict[QemuCond, list[Task]] = {}
        self._timers: list[tuple[int, float, int, Task]] = []
        self._seq = 0
        self.broadcasts: set[str] | None = None  # when a set: the names of the conditions broadcast
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
                self._dropped(task)
        if len(ready) != len(self._ready):
            self._ready = ready
        return ready

    def first_enabled(self) -> Task | None:
        """The first task in ready order that can step now (what `enabled()[0]` would be, without
        looking at the rest of the list)."""
        ready = self._ready
        bql_held = self.core.bql.owner is not None
        found = None
        dropped = 0
        # Every waiter is queued again at each release of the BQL, so with thousands of vCPUs this loop
        # mostly drops Acquires while the BQL is held: those are decided without is_enabled.
        for task in ready:
            prim = task.prim
            if type(prim) is Acquire and not task.done:
                if not bql_held:
                    found = task
                    break
            elif self.is_enabled(task):
                found = task
                break
            dropped += 1
            self._dropped(task)
        if dropped:
            del ready[:dropped]
        return found

    def _dropped(self, task: Task) -> None:
        task.queued = False
        prim = task.prim
        # core.contended only changes something the first time an Acquire is found taken (it then sets
        # waited_since), so a waiter dropped again at every release skips it.
        if isinstance(prim, Acquire) and task.rec.waited_since is None:
            self.core.contended(task.rec, prim.site)

    def _queue(self, task: Task) -> None:
        if not task.queued:
            task.queued = True
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
        self._ready.remove(task)
        task.queued = False
        value: Any = None
        if type(prim) is Park:
            value = prim.timeout_ns if (task.fired and not prim.woken()) else self.now - task.since
            for cond in prim.conds:
                waiting = self._parked.get(cond)
                if waiting is not None and task in waiting:
                    waiting.remove(task)
        elif type(prim) is Release:
            self._release()
        elif type(prim) is Acquire:
            self._acquiring.remove(task)
        task.timer, task.fired, task.prim = 0, False, None
        task.context.run(self._advance, task, value)
        return prim

    def _advance(self, task: Task, value: Any) -> None:
        new_effect = False
        while True:
            try:
                prim = task.perform.send(value)
            except StopIteration as stop:
                try:
                    effect = task.gen.send(stop.value)
                except StopIteration:
                    task.done = True
                    return
                task.perform = self.core.perform(task.rec, effect)
                value, new_effect = None, True
                continue
            kind = type(prim)
            if new_effect or kind is Acquire or kind is Park or (kind is Sleep and self.timed):
                self._arm(task, prim)
                return
            if kind is Release:
                self._release()
            value = None

    def _arm(self, task: Task, prim: Primitive) -> None:
        task.prim, task.since = prim, self.now
        if type(prim) is Acquire:
            self._acquiring.append(task)
        elif type(prim) is Park:
            if not prim.woken():
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
        # _acquiring holds exactly the tasks whose pending primitive is Acquire (_arm adds, step removes).
        ready = self._ready
        for task in self._acquiring:
            if not task.queued:
                task.queued = True
                ready.append(task)

    # --- the end ---------------------------------------------------------------------------------

    def close(self) -> None:
        """End every thread where it is (its `finally` blocks run), in thread order."""
        for task in self.tasks:
            task.context.run(task.perform.close)
            task.context.run(task.gen.close)

