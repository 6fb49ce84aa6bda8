"""The explore engine: the scheduler (sched.py) stepped by a strategy that chooses which thread goes next.

A step is one thread performing its pending primitive and running on to its next blocking point (the
start of its next effect, or a wait). At each step the engine knows which threads are *enabled* (a free
BQL for Acquire, a broadcast seen or a timer expired for Park); when more than one is, the choice is a
*choice point*. A schedule is the list of choices.

Time: steps and Sleeps take no time; when no thread is enabled, the clock jumps to the earliest timer.
A vCPU whose loop turn, taken with the BQL held throughout, left its state unchanged is *spinning* (the
core's fast-forward rule, always on here): it stays disabled until one of its wake-up conditions is
broadcast.

Terminal states, checked as properties rather than with a watchdog:
- the guest finished: its verdict (booted, completed, or a guest-visible failure);
- livelock (`lockup`): a thread spins with the BQL held and nothing else can run or ever will (no timer);
- deadlock: nothing can run, nothing spins, no timer, and the guest has not finished;
- `bound`: the step bound was reached; `pruned`: the strategy cut the schedule at a state it has seen.

Strategies (explore.py): seeded random schedules with a preemption probability (as in PCT), or an
exhaustive depth-first enumeration with a step bound and a preemption bound, replaying each schedule
from the start with a recorded prefix of choices (stateless, like CHESS and loom).
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..model.cpus import CPUState
from ..model.machine import Machine
from ..result import Lockup, RunResult
from .core import Acquire, Engine, EngineCore, Park, Primitive, Release, Sleep
from .sched import Scheduler, Task

Choose = Callable[[list[str], str | None], str]
Prune = Callable[[str, int, int, frozenset[str]], bool]  # state, steps, preemptions, sleeping threads


class SiblingStore(Protocol):
    """What an exhaustive search's chooser knows for sleep sets: the threads it already explored at the
    choice point just decided (with the footprints of their steps), and the footprint of the step taken."""

    def siblings(self) -> dict[str, frozenset[str]]: ...

    def explored(self, footprint: frozenset[str]) -> None: ...


DEFAULT_MAX_STEPS = 100_000
DEFAULT_PREEMPT = 0.1


@dataclass
class Step:
    thread: str
    what: str
    events: list[str]
    footprint: frozenset[str] = frozenset()


# Events of steps that touch state shared outside the BQL without a condition to show it (partial-order
# reduction counts them as objects the step uses).
_SHARED_EVENTS = {"rcu_read_lock": "rcu", "rcu_read_unlock": "rcu", "rcu_wait_for_readers": "rcu",
                  "rcu_callback": "rcu", "kvm_vcpu_ioctl_run": "kvm_vcpu", "kvm_run_exit": "kvm_vcpu",
                  "kvm_vcpu_mutex_wait": "kvm_vcpu", "kvm_vcpu_enable_cap": "kvm_vcpu", "sigp_handle": "sigp",
                  "sigp_busy": "sigp", "sigp_finished": "sigp", "guest_finished": "guest", "console": "guest"}


def dependent(a: frozenset[str], b: frozenset[str]) -> bool:
    """Two steps are dependent when they use a common object: the BQL, a condition one broadcasts or waits
    on, or state shared outside the BQL; otherwise they commute (their order changes no state)."""
    return not a.isdisjoint(b)


@dataclass
class Schedule:
    """How one explored schedule went: the choices made and the steps taken."""

    verdict: str  # booted | completed | lockup | deadlock | <guest failure> | bound | pruned
    reason: str
    choices: list[str]  # the thread chosen at each choice point
    steps: list[Step]
    states: set[str]
    holder: str | None = None

    def lasso(self) -> tuple[list[int], list[int]] | None:
        """A livelock as a lasso, as step numbers (from 1): the stem that leads to it, and the cycle that
        repeats forever - the spinner's last loop turns that changed nothing. Steps of other threads after
        the cycle began (waking, then blocking for good) belong to the stem: they happen once."""
        if self.verdict != "lockup" or self.holder is None:
            return None
        cycle: list[int] = []
        for i in range(len(self.steps) - 1, -1, -1):
            step = self.steps[i]
            if step.thread != self.holder:
                continue
            if not step.what.startswith("spins"):
                break
            cycle.insert(0, i + 1)
        if not cycle:
            return None
        stem = [i for i in range(1, len(self.steps) + 1) if i not in set(cycle)]
        return stem, cycle


def first_enabled(names: list[str], current: str | None) -> str:
    """The non-preemptive default: keep running the current thread, else the first enabled one."""
    return current if current in names else names[0]


def replay_chooser(choices: list[str]) -> Choose:
    """Follow a recorded schedule; past its end, the default choice."""
    queue = list(choices)

    def choose(names: list[str], current: str | None) -> str:
        if queue:
            chosen = queue.pop(0)
            if chosen not in names:
                raise ValueError(f"schedule does not fit this run: {chosen!r} is not runnable here ({names})")
            return chosen
        return first_enabled(names, current)

    return choose


def random_chooser(seed: int, preempt: float) -> Choose:
    rng = random.Random(seed)

    def choose(names: list[str], current: str | None) -> str:
        if current in names and rng.random() >= preempt:
            return current
        return rng.choice(names)

    return choose


def pct_chooser(seed: int, depth: int, steps: int) -> Choose:
    """PCT, probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS 2010):
    every thread gets a random priority above `depth`; `depth - 1` change points are drawn among the first
    `steps` choice points; the enabled thread with the highest priority runs, and at the i-th change point
    the thread about to run drops to priority `depth - i`. A bug of depth d is found with probability at
    least 1 / (n * k^(d-1)) per schedule (n threads, k steps)."""
    rng = random.Random(seed)
    changes = {point: depth - i for i, point in enumerate(sorted(rng.sample(range(1, max(steps, depth) + 1),
                                                                             depth - 1)), 1)}
    priorities: dict[str, float] = {}
    step = 0

    def choose(names: list[str], current: str | None) -> str:
        nonlocal step
        step += 1
        for name in names:
            if name not in priorities:  # a thread's first appearance: a random rank above every change value
                priorities[name] = depth + rng.random()
        chosen = max(names, key=lambda n: priorities[n])
        if step in changes:
            priorities[chosen] = changes[step]
            chosen = max(names, key=lambda n: priorities[n])
        return chosen

    return choose


class ExploreEngine(Engine):
    """Runs one schedule of the machine, asking `choose` at every choice point."""

    def __init__(self, machine: Machine, choose: Choose | None = None, max_steps: int = DEFAULT_MAX_STEPS,
                 prune: Prune | None = None, prune_from: int = 0,
                 track_states: bool = False, wall_deadline: float | None = None, symmetry: bool = False,
                 sleep_sets: bool = False) -> None:
        super().__init__(machine)
        # Symmetry reduction: secondaries (every vCPU but the boot CPU, single-thread cores) are renamed in
        # the state hash in the order of their own state, so states that differ only by which secondary is
        # which hash alike.
        self.symmetry = symmetry and machine.settings.threads == 1 and machine.pnv is None
        self.choose = choose or random_chooser(machine.settings.seed, DEFAULT_PREEMPT)
        # Sleep sets (Godefroid): threads whose next step was explored from an earlier state and commutes
        # with every step taken since: choosing one now would only reorder independent steps.
        self.store: SiblingStore | None = choose if sleep_sets and hasattr(choose, "siblings") else None  # type: ignore[assignment]
        self.sleep: dict[str, frozenset[str]] = {}
        self.max_steps = max_steps
        self.prune = prune
        self.prune_from = prune_from
        self.track_states = track_states or prune is not None  # hashing every state costs O(threads) a step
        self.wall_deadline = wall_deadline
        self._events: list[str] = []
        outer = machine.tracer

        def trace(event: str, t_ns: int, fields: dict[str, Any]) -> None:
            self._events.append(event)
            outer(event, t_ns, fields)

        machine.set_tracer(trace)
        self.core = EngineCore(machine, self.now_ns, fast_forward=True)
        self._vcpu_names = frozenset(cpu.name for cpu in machine.cpus)
        self.sched = Scheduler(self.core, timed=False)
        self.choices: list[str] = []
        self.steps: list[Step] = []
        self.states: set[str] = set()
        self.schedule: Schedule | None = None

    def now_ns(self) -> int:
        return self.sched.now

    def run(self) -> RunResult:
        wall0 = time.monotonic()
        try:
            self.schedule = self._explore()
        finally:
            self.sched.close()
        result = self.core.result(time.monotonic() - wall0)
        result.schedule = self.schedule
        if result.verdict == "deadlock" and result.lockup is not None:
            # As an engine among others: a watched thread blocked for good is what their watchdog calls a
            # lockup (the search itself keeps the finer name).
            result.verdict = "lockup"
        return result

    def _explore(self) -> Schedule:
        core, sched, machine = self.core, self.sched, self.machine
        sched.start()
        current: str | None = None
        preemptions = 0
        while True:
            if machine.finished:
                core.finish_guest()
                return self._end()
            enabled = sorted(sched.enabled(), key=lambda t: t.order)
            if not enabled:
                due = sched.next_due()
                if due is not None:
                    # A watched thread blocked for the watchdog's threshold while others still run on
                    # timers (a deadlock beside a polling main loop): the other engines' lockup.
                    lockup = core.watchdog.check(due)
                    if lockup is not None:
                        core.fire_watchdog(lockup, at_ns=due)
                        return self._end()
                    sched.advance_to(due)
                    continue
                spinner = next((t for t in sched.tasks if core.spinning(t.rec)), None)
                if spinner is not None:
                    waiting = core.bql.waiters()
                    core.finish("lockup", f"livelock: {spinner.name} spins with the BQL held while "
                                          f"{', '.join(waiting) or 'nobody'} wait and nothing else can run",
                                self._lockup())
                    return self._end(spinner.name)
                core.finish("deadlock", "deadlock: no thread can run and the guest has not finished",
                            self._lockup())
                return self._end()
            if len(self.steps) >= self.max_steps:
                core.finish("bound", f"step bound of {self.max_steps} reached")
                return self._end()
            if self.wall_deadline is not None and len(self.steps) % 64 == 0 and time.monotonic() > self.wall_deadline:
                core.finish("bound", "wall-clock limit reached")
                return self._end()
            names = [t.name for t in enabled if t.name not in self.sleep]
            if not names:  # every enabled thread is asleep: whatever runs next was explored elsewhere
                core.finish("pruned", "every enabled thread is in the sleep set")
                return self._end()
            choice_point = len(names) > 1
            if choice_point:
                chosen = self.choose(names, current)
                if current in names and chosen != current:
                    preemptions += 1
                self.choices.append(chosen)
                if self.store is not None:
                    self.sleep.update(self.store.siblings())
            else:
                chosen = names[0]
            task = sched.by_name[chosen]
            self._events = []
            holds = core.bql.owner == chosen
            sched.broadcasts = set() if self.store is not None else None
            performed = sched.step(task)
            footprint = self._footprint(task, performed, holds) if self.store is not None else frozenset()
            self.steps.append(Step(chosen, self._describe(task, performed), self._events, footprint))
            current = chosen
            if self.store is not None:
                if choice_point:
                    self.store.explored(footprint)
                self.sleep = {t: fp for t, fp in self.sleep.items() if t != chosen and not dependent(fp, footprint)}
            if not self.track_states:
                continue
            state = self._state_hash(current)
            # Prune at a state that an earlier schedule reached (its continuations are explored from
            # there); a state repeated within this schedule is a loop, left to run into the spin rule.
            if (self.prune is not None and state not in self.states and len(self.choices) >= self.prune_from
                    and self.prune(state, len(self.steps), preemptions, frozenset(self.sleep))):
                self.states.add(state)
                core.finish("pruned", "state already explored")
                return self._end()
            self.states.add(state)

    def _footprint(self, task: Task, performed: Primitive | None, held: bool) -> frozenset[str]:
        """The objects one step used: the BQL (held, taken or dropped), the conditions it broadcast or
        waited on, and state shared outside the BQL (from its events)."""
        used = set(self.sched.broadcasts or ())
        self.sched.broadcasts = None
        if held or self.core.bql.owner == task.name or isinstance(performed, Acquire | Release):
            used.add("BQL")
        for prim in (performed, task.prim):
            if isinstance(prim, Park):
                used.update(c.name for c in prim.conds)
        used.update(_SHARED_EVENTS[e] for e in self._events if e in _SHARED_EVENTS)
        return frozenset(used)

    def _lockup(self) -> Lockup | None:
        """The watchdog's report for a watched thread that is blocked, as the Trio engine would give it."""
        for thread in self.core.watchdog.watched:
            if thread in self.core.bql.blocked:
                return self.core.watchdog.report(thread, self.sched.now)
        return None

    def _end(self, holder: str | None = None) -> Schedule:
        assert self.core.verdict is not None
        verdict, reason, _ = self.core.verdict
        return Schedule(verdict, reason, self.choices, self.steps, self.states, holder)

    def _describe(self, task: Task, performed: Primitive | None) -> str:
        if isinstance(performed, Acquire):
            what = f"took the BQL ({performed.site})"
        elif isinstance(performed, Release):
            what = f"dropped the BQL ({performed.site})"
        elif isinstance(performed, Park):
            what = f"woken from {', '.join(c.name for c in performed.conds)}"
        elif isinstance(performed, Sleep):
            what = "works"
        else:
            what = "runs"
        if self.core.spinning(task.rec):
            return f"spins: its loop turn changed nothing, with the BQL held (then {what})"
        if isinstance(task.prim, Park) and not task.prim.woken():
            what += f"; sleeps on {', '.join(c.name for c in task.prim.conds)}"
        return what

    def _state_hash(self, current: str | None) -> str:
        """The state, and the running thread (a switch away from it is a preemption, which is bounded)."""
        machine = self.machine
        rename = self._canonical_order() if self.symmetry else None
        index: Callable[[int], int] = (lambda i: rename[i]) if rename else (lambda i: i)
        mem, out = machine.guest_memory, machine.outcome
        parts: list[Any] = [current, self.sched.now, self.core.bql.owner, machine.runstate, machine.finished,
                            sorted(map(index, mem.callin_map)), sorted(map(index, mem.offline_request)),
                            sorted((index(k), v) for k, v in mem.ipi_sent.items()),
                            sorted((index(k), v) for k, v in mem.ipi_acked.items()),
                            sorted(map(index, out.online)), len(out.console), [f.kind for f in out.failures],
                            None if mem.crash_request is None else index(mem.crash_request),
                            sorted(mem.words.items()), _dt_order(mem.dt_cpus, index),
                            sorted(map(index, mem.sprg_paca)), sorted(map(index, mem.cpu_start)),
                            mem.crash.key(index) if mem.crash is not None else None, mem.hold_loop_overwritten,
                            machine.board_key(), machine.rcu.key(self._vcpu_names)]
        for cpu_index, runner in sorted((index(i), r) for i, r in machine.tcg_runners.items()):
            parts.append((cpu_index, runner.entry_gen, _frames(runner._program), runner.compute_left))
        for cpu in sorted(machine.cpus, key=lambda c: index(c.cpu_index)):
            parts.append(self._cpu_part(cpu))
        def task_order(t: Task) -> int:
            return t.order if t.rec.cpu is None else index(t.rec.cpu.cpu_index) + 1

        for t in sorted(self.sched.tasks, key=task_order):
            parts.append(self._task_part(t))
        text = repr(parts)
        if rename:  # every other mention of a vCPU by number: thread names, sites, condition names
            text = _RENAMES.sub(lambda m: _renamed(m, rename), text)
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def _cpu_part(self, cpu: CPUState) -> tuple[Any, ...]:
        reader = self.machine.rcu.registry.get(cpu.name)
        part: tuple[Any, ...] = (cpu.loop_snapshot(), getattr(cpu.env, "compat_pvr", None),
                                 tuple(w.name for w in cpu.work_list), reader.key()[1:] if reader else None,
                                 cpu.running, cpu.has_waiter, cpu.exclusive_context_count)
        kvm = self.machine.kvm
        if kvm is not None:
            vcpu = kvm.vcpus[cpu.cpu_index]
            part += (vcpu.vcore.lpcr, vcpu.psscr, vcpu.ceded, vcpu.entry_gen, vcpu.irq_pending,
                     _frames(vcpu.runner._program) if vcpu.runner else None,
                     vcpu.runner.compute_left if vcpu.runner else None)
        return part

    def _task_part(self, t: Task) -> tuple[Any, ...]:
        prim = t.prim
        woken = isinstance(prim, Park) and prim.woken()
        return (t.name, t.done, _prim_key(prim), t.due if t.timer else None, t.fired, woken,
                t.since if isinstance(prim, Park) else None, self.core.spinning(t.rec),
                t.rec.released_since_spend, t.rec.last_snapshot, _frames(t.gen), _frames(t.perform))

    def _canonical_order(self) -> dict[int, int] | None:
        """Secondary vCPU index -> its name in the canonical state: the secondaries sorted by what they are
        (their own state and thread, with their own number blanked), the boot CPU fixed at 0."""
        machine = self.machine
        if len(machine.cpus) < 3:
            return None
        tasks = {t.rec.cpu.cpu_index: t for t in self.sched.tasks if t.rec.cpu is not None}
        mem, out = machine.guest_memory, machine.outcome

        def signature(cpu: CPUState) -> str:
            i = cpu.cpu_index
            own = (self._cpu_part(cpu), self._task_part(tasks[i]) if i in tasks else None,
                   i in mem.callin_map, i in mem.offline_request, mem.ipi_sent.get(i), mem.ipi_acked.get(i),
                   i in out.online, i in machine.tcg_runners, mem.crash_request == i, i in mem.sprg_paca,
                   i in mem.cpu_start, mem.crash.key(lambda j: int(j == i)) if mem.crash is not None else None)
            return _RENAMES.sub(lambda m: _blank_if(m, i), repr(own))

        secondaries = sorted(machine.cpus[1:], key=signature)
        return {0: 0, **{cpu.cpu_index: n for n, cpu in enumerate(secondaries, 1)}}


def _dt_order(dt_cpus: list[int], index: Callable[[int], int]) -> list[int] | None:
    """The guest's device-tree CPU order, when a hotplug has changed it (a boot's own order, every CPU in
    turn, says nothing a renaming of identical vCPUs may change)."""
    return None if dt_cpus == list(range(len(dt_cpus))) else [index(i) for i in dt_cpus]


# A vCPU named in text: "CPU 3/KVM", "-> CPU 3", "halt_cond[3]", "kick[3]".
_RENAMES = re.compile(r"(CPU |\[)(\d+)")


def _renamed(m: re.Match[str], rename: dict[int, int]) -> str:
    return f"{m.group(1)}{rename.get(int(m.group(2)), int(m.group(2)))}"


def _blank_if(m: re.Match[str], own: int) -> str:
    return f"{m.group(1)}#" if int(m.group(2)) == own else m.group(0)


def _prim_key(prim: Primitive | None) -> tuple[Any, ...]:
    """A primitive by value (names, not object identities, which differ from one schedule to the next)."""
    if isinstance(prim, Park):
        return ("Park", tuple(c.name for c in prim.conds), prim.timeout_ns)
    return (repr(prim),)


def _frames(gen: Any) -> tuple[Any, ...]:
    """Where a generator (and everything it yields from) is suspended: code names and offsets."""
    where = []
    while gen is not None:
        frame = getattr(gen, "gi_frame", None)
        if frame is None:
            break
        where.append((frame.f_code.co_name, frame.f_lasti))
        gen = getattr(gen, "gi_yieldfrom", None)
    return tuple(where)
