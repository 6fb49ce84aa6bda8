"""The explore engine: a deterministic, single-threaded driver that chooses which thread steps next.

The same model generators again; this time a step is one thread performing its pending effect and
running model code up to its next one. At each step the driver knows which threads are *enabled*
(a free BQL for `BqlLock`, a broadcast seen for a `CondWait`, a broadcast or an expired timer for a
`Block`); when more than one is, the choice is a *choice point*. A schedule is the list of choices.

Time: steps take no time; when no thread is enabled, the clock jumps to the earliest timer (as Trio's
autojump clock does). A vCPU whose loop turn, taken with the BQL held throughout, left its state
unchanged is *spinning* (the fast-forward rule of the Trio engine): it stays disabled until one of its
wake-up conditions is broadcast.

Terminal states, checked as properties rather than with a timeout:
- the guest finished: its verdict (booted, completed, or a guest-visible failure);
- livelock (`lockup`): a thread spins with the BQL held and nothing else can run or ever will (no timer);
- deadlock: nothing can run, nothing spins, no timer, and the guest has not finished.

Strategies (explore.py's `explore`): seeded random schedules with a preemption probability (as in PCT),
or an exhaustive depth-first enumeration up to a step bound and a preemption bound, replaying each
schedule from the start with a recorded prefix of choices (stateless, like CHESS and loom), with
pruning of states already visited at no greater depth and preemption count.
"""

from __future__ import annotations

import contextvars
import hashlib
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from ..config import RunSettings
from ..model.cpus import CPUState
from ..model.effects import Block, BqlLock, BqlUnlock, CondWait, Effect, QemuCond, Spend
from ..model.machine import Machine
from .bql import BqlBook
from .outcome import guest_verdict

# Pending-state kinds of a thread
_EFFECT, _WAIT_COND, _RELOCK, _DONE = "effect", "wait-cond", "relock", "done"


@dataclass
class _Thread:
    name: str
    gen: Generator[Effect, Any, Any]
    cpu: CPUState | None
    context: contextvars.Context = field(default_factory=contextvars.copy_context)  # its current_cpu
    kind: str = _EFFECT
    effect: Effect | None = None
    holds_bql: bool = False
    released_since_spend: bool = True
    last_snapshot: tuple[Any, ...] | None = None
    spinning: dict[QemuCond, int] | None = None  # wake conditions and their generations when it began
    seen: dict[QemuCond, int] = field(default_factory=dict)  # cond generations at the start of a wait
    deadline: int | None = None
    wait_start: int = 0
    waited_since: int | None = None


@dataclass
class Step:
    thread: str
    what: str
    events: list[str]


@dataclass
class Outcome:
    """How one schedule ended."""

    verdict: str  # booted | completed | lockup | deadlock | <guest failure> | bound
    reason: str
    choices: list[str]  # the thread chosen at each choice point
    steps: list[Step]
    states: set[str]
    holder: str | None = None


class _Hub:
    def __init__(self) -> None:
        self.now = 0

    def now_ns(self) -> int:
        return self.now

    def notify(self, cond: QemuCond) -> None:
        return None  # waiters compare generations; nothing to wake


class ExploreRun:
    """One schedule: runs the machine, asking `choose` at every choice point."""

    def __init__(self, settings: RunSettings, choose: Callable[[list[str], str | None], str],
                 max_steps: int, tracer: Callable[[str, int, dict[str, Any]], None] | None = None,
                 prune: Callable[[str, int, int], bool] | None = None, prune_from: int = 0) -> None:
        self.hub = _Hub()
        self._events: list[str] = []
        outer = tracer

        def trace(event: str, t_ns: int, fields: dict[str, Any]) -> None:
            self._events.append(event)
            if outer is not None:
                outer(event, t_ns, fields)

        self.machine = Machine(settings, trace)
        self.machine.attach(self.hub)
        self.choose = choose
        self.max_steps = max_steps
        self.prune = prune
        self.prune_from = prune_from
        self.book = BqlBook(self.machine.trace, self.hub.now_ns)
        self.bql = self.book.stats
        self.threads = [_Thread(name, factory(), next((c for c in self.machine.cpus if c.name == name), None))
                        for name, factory in self.machine.threads()]
        self.choices: list[str] = []
        self.steps: list[Step] = []
        self.states: set[str] = set()

    # --- enabledness -----------------------------------------------------------------------------

    def _enabled(self, t: _Thread) -> bool:
        if t.kind == _DONE:
            return False
        if t.kind == _WAIT_COND:
            return any(c.generation != g for c, g in t.seen.items())
        if t.kind == _RELOCK:
            return self.bql.owner is None
        effect = t.effect
        if t.spinning is not None:
            if all(c.generation == g for c, g in t.spinning.items()):
                return False
            t.spinning = None
        if isinstance(effect, BqlLock):
            return self.bql.owner is None
        if isinstance(effect, Block):
            woken = any(c.generation != g for c, g in t.seen.items())
            return woken or (t.deadline is not None and self.hub.now >= t.deadline)
        return True

    def _arm(self, t: _Thread) -> None:
        """Called with a thread's new pending effect: start a Block's wait, note a contended BQL."""
        if isinstance(t.effect, Block):
            t.seen = {c: c.generation for c in t.effect.wake}
            t.deadline = None if t.effect.timeout_ns is None else self.hub.now + t.effect.timeout_ns
            t.wait_start = self.hub.now
        elif isinstance(t.effect, BqlLock):
            self._want_bql(t, t.effect.site)

    def _want_bql(self, t: _Thread, site: str) -> None:
        t.waited_since = self.book.want(t.name, t.cpu, site)

    # --- one step --------------------------------------------------------------------------------

    def _resume(self, t: _Thread, value: Any) -> None:
        try:
            t.effect = t.context.run(t.gen.send, value)
            t.kind = _EFFECT
            self._arm(t)
        except StopIteration:
            t.kind = _DONE

    def _take_bql(self, t: _Thread, site: str) -> None:
        self.book.took(t.name, t.cpu, site, t.waited_since)
        t.holds_bql = True

    def _drop_bql(self, t: _Thread, site: str) -> None:
        self.book.released(t.name, t.cpu, site)
        t.holds_bql = False
        t.released_since_spend = True

    def _step(self, t: _Thread) -> str:
        """Perform t's pending effect (it is enabled) and run to its next one; describe what it did."""
        if t.kind == _WAIT_COND:
            t.kind = _RELOCK
            assert isinstance(t.effect, CondWait)
            self.book.cond_woken(t.name, t.cpu, t.effect.cond.name)
            self._want_bql(t, t.effect.site)
            return f"woken from {t.effect.cond.name}"
        if t.kind == _RELOCK:
            assert isinstance(t.effect, CondWait)
            self._take_bql(t, t.effect.site)
            self._resume(t, None)
            return "retook the BQL"
        effect = t.effect
        if isinstance(effect, BqlLock):
            self._take_bql(t, effect.site)
            self._resume(t, None)
            return f"took the BQL ({effect.site})"
        if isinstance(effect, BqlUnlock):
            self._drop_bql(t, effect.site)
            self._resume(t, None)
            return f"dropped the BQL ({effect.site})"
        if isinstance(effect, CondWait):
            t.seen = {effect.cond: effect.cond.generation}
            self._drop_bql(t, effect.site)
            self.book.cond_wait(t.name, t.cpu, effect.cond.name, effect.site)
            t.kind = _WAIT_COND
            return f"sleeps on {effect.cond.name} ({effect.site})"
        if isinstance(effect, Spend):
            cpu = effect.spin
            if cpu is not None:
                snapshot = cpu.loop_snapshot()
                unchanged = t.holds_bql and not t.released_since_spend and snapshot == t.last_snapshot
                t.last_snapshot, t.released_since_spend = snapshot, False
                if unchanged:
                    t.spinning = {c: c.generation for c in effect.wake}
                    self.machine.trace("vcpu_spin_fast_forward", cpu=cpu.cpu_index, thread=t.name,
                                       iterations=cpu.stats.get("loop_iterations", 0))
                    return "spins: its loop turn changed nothing, with the BQL held"
            self._resume(t, None)
            return "loop turn" if cpu is not None else "works"
        assert isinstance(effect, Block)
        elapsed = self.hub.now - t.wait_start
        t.seen, t.deadline = {}, None
        self._resume(t, elapsed)
        return "runs (guest or poll)"

    # --- the run ---------------------------------------------------------------------------------

    def _state_hash(self) -> str:
        mem, out = self.machine.guest_memory, self.machine.outcome
        parts: list[Any] = [self.hub.now, self.bql.owner, self.machine.runstate, self.machine.finished,
                            sorted(mem.callin_map), sorted(mem.offline_request), sorted(mem.ipi_sent.items()),
                            sorted(mem.ipi_acked.items()), sorted(out.online), len(out.console),
                            [f.kind for f in out.failures]]
        for index, runner in sorted(self.machine.tcg_runners.items()):
            parts.append((index, runner.entry_gen, _frames(runner._program), runner.compute_left))
        for cpu in self.machine.cpus:
            parts.append(cpu.loop_snapshot())
            parts.append([w.name for w in cpu.work_list])
        for t in self.threads:
            woken = any(c.generation != g for c, g in t.seen.items())
            parts.append((t.name, t.kind, _effect_key(t.effect) if t.kind != _DONE else None,
                          t.spinning is not None, t.deadline, woken, _frames(t.gen)))
        kvm = self.machine.kvm
        if kvm is not None:
            for vcpu in kvm.vcpus:
                parts.append((vcpu.vcore.lpcr, vcpu.psscr, vcpu.ceded, vcpu.entry_gen, vcpu.irq_pending,
                              _frames(vcpu.runner._program) if vcpu.runner else None,
                              vcpu.runner.compute_left if vcpu.runner else None))
        return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()

    def run(self) -> Outcome:
        self.machine.trace("run_start", settings=self.machine.settings.to_dict())
        for t in self.threads:
            self._resume(t, None)
        current: str | None = None
        preemptions = 0
        while True:
            if self.machine.finished:
                verdict, reason = guest_verdict(self.machine)
                return self._end(verdict, reason)
            enabled = [t for t in self.threads if self._enabled(t)]
            if not enabled:
                timers = [t.deadline for t in self.threads if t.kind == _EFFECT and t.deadline is not None
                          and t.spinning is None]
                if timers:
                    self.hub.now = max(self.hub.now, min(timers))
                    continue
                spinner = next((t for t in self.threads if t.spinning is not None and t.holds_bql), None)
                if spinner is not None:
                    waiting = [t.name for t in self.threads if t.name in self.bql.blocked]
                    return self._end("lockup", f"livelock: {spinner.name} spins with the BQL held while "
                                               f"{', '.join(waiting) or 'nobody'} wait and nothing else can run",
                                     holder=spinner.name)
                return self._end("deadlock", "deadlock: no thread can run and the guest has not finished")
            if len(self.steps) >= self.max_steps:
                return self._end("bound", f"step bound of {self.max_steps} reached")
            names = [t.name for t in enabled]
            if len(names) > 1:
                chosen = self.choose(names, current)
                if current in names and chosen != current:
                    preemptions += 1
                self.choices.append(chosen)
            else:
                chosen = names[0]
            thread = next(t for t in enabled if t.name == chosen)
            self._events = []
            what = self._step(thread)
            self.steps.append(Step(chosen, what, self._events))
            current = chosen
            state = self._state_hash()
            # Prune at a state that an earlier schedule reached (its continuations are explored from
            # there); a state repeated within this schedule is a loop, left to run into the spin rule.
            if (self.prune is not None and state not in self.states and len(self.choices) >= self.prune_from
                    and self.prune(state, len(self.steps), preemptions)):
                self.states.add(state)
                return self._end("pruned", "state already explored")
            self.states.add(state)

    def _end(self, verdict: str, reason: str, holder: str | None = None) -> Outcome:
        self.machine.trace("run_verdict", verdict=verdict, reason=reason)
        return Outcome(verdict, reason, self.choices, self.steps, self.states, holder)


def _effect_key(effect: Effect | None) -> tuple[Any, ...]:
    """An effect by value (names, not object identities, which differ from one schedule to the next)."""
    if isinstance(effect, BqlLock | BqlUnlock):
        return (type(effect).__name__, effect.site)
    if isinstance(effect, CondWait):
        return ("CondWait", effect.cond.name, effect.site)
    if isinstance(effect, Spend):
        return ("Spend", effect.ns, effect.spin.cpu_index if effect.spin is not None else None)
    if isinstance(effect, Block):
        return ("Block", tuple(c.name for c in effect.wake), effect.timeout_ns)
    return (repr(effect),)


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


def first_enabled(names: list[str], current: str | None) -> str:
    """The non-preemptive default: keep running the current thread, else the first enabled one."""
    return current if current in names else names[0]


def replay_chooser(choices: list[str]) -> Callable[[list[str], str | None], str]:
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


def random_chooser(seed: int, preempt: float) -> Callable[[list[str], str | None], str]:
    rng = random.Random(seed)

    def choose(names: list[str], current: str | None) -> str:
        if current in names and rng.random() >= preempt:
            return current
        return rng.choice(names)

    return choose
