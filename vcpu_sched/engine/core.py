"""The engine core: what every engine does with the model's effects, written once and without I/O.

The model's threads yield effects (model/effects.py: BqlLock, BqlUnlock, CondWait, Spend, Block).
`EngineCore.perform` turns one effect into the bookkeeping every engine shares - BQL ownership and its
checks, hold and wait statistics, owed CPU time, the fast-forward rule - and a short sequence of
*primitives*, the only things an engine must know how to do:

    Acquire  take the BQL, waiting while another thread holds it
    Release  let go of the BQL
    Park     sleep until one of some conditions is broadcast (or a timeout passes): returns the ns slept
    Sleep    let `ns` of guest time pass on this thread (busy: a vCPU loop turn burning a host CPU)

`perform` is a generator of primitives (the sans-I/O style of trio's own `unrolled_run` and of h11): an
engine sends back each primitive's result. A Park carries the generations of its conditions taken before
the BQL was released, so an engine that looks at them cannot lose a broadcast, cooperative or threaded.

Choices, and why:
- Fast-forward: if a vCPU loop turn taken with the BQL held from start to end left the CPU exactly as it
  found it (`CPUState.loop_snapshot`), every following turn will do the same until something outside the
  BQL touches the CPU, and all such things broadcast the CPU's halt or kick condition. So the thread parks
  until one does, and is credited elapsed / loop_cost_ns iterations: the count the real thread would have
  made. Engines that spin for real (threads) switch it off.
- Owed time: a Spend is owed, not slept, until a thread owes `quantum_ns` or is about to block, so a
  spinning loop without fast-forward costs one Sleep per quantum rather than one per turn.
- Wake-up latency: a thread woken from a Park starts running 0-`wake_latency_ns` later, drawn from the
  seed (a futex wake-up is not instantaneous), so seeds differ in their interleavings.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from ..errors import ModelError
from ..explain import LIVE_FACT_EVENTS, Facts, failure_chain
from ..model.cpus import CPUState
from ..model.effects import Block, BqlLock, BqlUnlock, CondWait, Effect, QemuCond, Spend, Waiter
from ..result import Lockup, RunResult
from ..verdicts import SPINNING, STUCK_CPU
from ..versions import cpu_events_function
from .bql import BqlBook
from .watchdog import Watchdog

if TYPE_CHECKING:
    from ..model.machine import Machine

NS = 1_000_000_000
QUIT_REASON = "quit (QMP) before the guest finished"  # a served run (vcpu-sched qemu) asked to end


class Acquire(NamedTuple):
    """Take the BQL; an engine blocks here while another thread holds it."""

    site: str


class Release(NamedTuple):
    """Let go of the BQL (the core has already recorded it)."""

    site: str


class Park(NamedTuple):
    """Sleep until one of `conds` is broadcast, or `timeout_ns` passes; send back the guest ns slept.

    `seen` are the conditions' generations when the wait began: if one differs already, do not sleep.
    `waiter` is a condition wait's place among its condition's waiters: a qemu_cond_signal that chose it
    wakes it, and only it (an engine may be told of a signal that chose another: it sleeps on).
    """

    conds: tuple[QemuCond, ...]
    seen: tuple[int, ...]
    timeout_ns: int | None
    waiter: Waiter | None = None

    def woken(self) -> bool:
        conds, seen = self.conds, self.seen
        if len(conds) == 1:  # most Parks (every condition wait): no zip to build
            if conds[0].generation != seen[0]:
                return True
        else:
            for c, g in zip(conds, seen):  # noqa: B905 - as long by construction; strict costs a check
                if c.generation != g:
                    return True
        waiter = self.waiter
        return waiter is not None and waiter.signalled


class Sleep(NamedTuple):
    """Let `ns` of guest time pass on this thread; `busy` when it is a vCPU burning a host CPU."""

    ns: int
    busy: bool


Primitive: TypeAlias = Acquire | Release | Park | Sleep

# One Acquire and one Release per call site, made once: a primitive is read, never changed.
_acquires: dict[str, Acquire] = {}
_releases: dict[str, Release] = {}


def _acquire(site: str) -> Acquire:
    prim = _acquires.get(site)
    if prim is None:
        prim = _acquires[site] = Acquire(site)
    return prim


def _release(site: str) -> Release:
    prim = _releases.get(site)
    if prim is None:
        prim = _releases[site] = Release(site)
    return prim
Perform: TypeAlias = Generator[Primitive, Any, Any]


_GENERATION = attrgetter("generation")


def park_on(conds: tuple[QemuCond, ...], timeout_ns: int | None) -> Park:
    return Park(conds, tuple(map(_GENERATION, conds)), timeout_ns)


def cond_wait_on(cond: QemuCond, thread: str) -> Park:
    """A qemu_cond_wait's Park: the thread joins the condition's waiters when it decides to wait, with the
    BQL still held, as pthread_cond_wait enqueues the waiter before it unlocks the mutex."""
    waiter = Waiter(thread)
    cond.waiters.append(waiter)
    return Park((cond,), (cond.generation,), None, waiter)


def _block_park(block: Block) -> Park:
    if block.seen:
        return Park(block.wake, block.seen, block.timeout_ns)
    return park_on(block.wake, block.timeout_ns)


@dataclass(eq=False, repr=False)
class ThreadRec:
    """What the core knows of one QEMU thread."""

    name: str
    cpu: CPUState | None
    holds_bql: bool = False
    released_since_spend: bool = True
    # Since the last Spend, every release of the BQL was followed by this thread's own retake, with no other
    # thread taking it in between and no wait (the posted EXCP_HLT patch's unlock-relock): as good as kept.
    retook_at_once: bool = False
    released_at_take: int = -1  # the BQL's take count at this thread's last release
    last_snapshot: tuple[Any, ...] | None = None
    ff_since: int | None = None  # guest ns when a fast-forward began
    owed_ns: int = 0
    waited_since: int | None = None


@dataclass(eq=False, repr=False)
class EngineCore:
    """Effects to primitives, the shared records, and the verdict. `now_ns` is the engine's clock."""

    machine: Machine
    now_ns: Callable[[], int]  # the engine's clock
    fast_forward: bool
    quantum_ns: int = 0
    wake_latency_ns: int = 0
    threads: dict[str, ThreadRec] = field(default_factory=dict)
    takes: int = 0  # how often any thread has taken the BQL
    verdict: tuple[str, str, Lockup | None] | None = None
    verdict_ns: int | None = None
    effects: int = 0

    def __post_init__(self) -> None:
        settings = self.machine.settings
        self.book = BqlBook(self.machine.trace, self.now_ns, self.machine.traced)
        self.bql = self.book.stats
        self.rng = random.Random(f"engine:{settings.seed}")
        self.facts = Facts(settings.cpu, settings.accel, cpu_events_function(settings.qemu_version),
                           halt_in_kernel=self.machine.kvm_halt_in_kernel)
        outer, feed = self.machine.tracer, self.facts.feed_live

        def tap(event: str, t_ns: int, fields: dict[str, Any]) -> None:
            feed(event, t_ns, fields)
            outer(event, t_ns, fields)

        if self.machine.logging:
            self.machine.set_tracer(tap)
        else:
            self.machine.set_tracer(feed, only=LIVE_FACT_EVENTS)
        self.watchdog = Watchdog(self.machine, self.bql, int(settings.watchdog_s * NS), self.iterations,
                                 self.facts)
        cpus = {cpu.name: cpu for cpu in self.machine.cpus}
        for name, _ in self.machine.threads():
            self.threads[name] = ThreadRec(name, cpus.get(name))

    def add_thread(self, name: str) -> ThreadRec:
        """A thread started while the machine runs (a hotplugged vCPU's)."""
        cpu = next((c for c in self.machine.cpus if c.name == name), None)
        rec = self.threads[name] = ThreadRec(name, cpu)
        return rec

    # --- effects to primitives -------------------------------------------------------------------

    def perform(self, rec: ThreadRec, effect: Effect) -> Perform:
        """Do `effect` for `rec`: bookkeeping here, waiting through the primitives yielded."""
        self.effects += 1
        # The effects are NamedTuples nobody subclasses: `type() is` is isinstance here, and cheaper.
        if type(effect) is Spend:
            rest = self.spend(rec, effect)
            if rest is not None:
                yield from rest
            return None
        if type(effect) is BqlUnlock:
            self.unlock(rec, effect.site)
            yield _release(effect.site)
            return None
        # A wait's generations are taken where the model decided to wait, before any owed time is paid: a
        # broadcast while the thread still burns that time must wake it.
        waits = (cond_wait_on(effect.cond, rec.name) if type(effect) is CondWait
                 else _block_park(effect) if type(effect) is Block else None)
        if rec.owed_ns:
            yield from self._pay(rec)
        if type(effect) is BqlLock:
            if rec.holds_bql:
                raise ModelError(f"{rec.name} locks the BQL at {effect.site} while it already holds it")
            self.want(rec, effect.site)  # _lock, written out (one generator less per effect)
            yield _acquire(effect.site)
            self.took(rec, effect.site)
            return None
        if type(effect) is CondWait:  # the commonest effect: _park and _lock are written out
            assert waits is not None
            park = waits
            self.unlock(rec, effect.site)
            rec.retook_at_once = False
            yield _release(effect.site)
            self.book.cond_wait(rec.name, rec.cpu, effect.cond.name, effect.site)
            try:
                yield park
                if self.wake_latency_ns:  # as _park: a condition wait has no timeout
                    yield Sleep(self._latency(), False)
            finally:  # woken by a broadcast (or the run ended): no later signal may choose this wait
                if park.waiter in effect.cond.waiters:
                    effect.cond.waiters.remove(park.waiter)
            self.book.cond_woken(rec.name, rec.cpu, effect.cond.name)
            self.want(rec, effect.site)
            yield _acquire(effect.site)
            self.took(rec, effect.site)
            return None
        if type(effect) is Block:
            assert waits is not None
            rec.retook_at_once = False
            if not effect.site:
                return (yield from self._park(waits))
            self.book.event_wait(rec.name, rec.cpu, effect.what, effect.site)
            slept = yield from self._park(waits)
            self.book.event_woken(rec.name, rec.cpu, effect.what)
            return slept
        raise ModelError(f"{rec.name} yielded {effect!r}, which is not an effect")

    def want(self, rec: ThreadRec, site: str) -> None:
        """Taking the BQL, before its Acquire (then `took`)."""
        rec.waited_since = self.book.want(rec.name, rec.cpu, site)

    def took(self, rec: ThreadRec, site: str) -> None:
        """Taking the BQL, once its Acquire is done."""
        self.book.took(rec.name, rec.cpu, site, rec.waited_since)
        rec.holds_bql = True
        rec.retook_at_once = rec.retook_at_once and self.takes == rec.released_at_take
        self.takes += 1

    def contended(self, rec: ThreadRec, site: str) -> None:
        """An engine's Acquire for `rec` has to wait after all (another thread took the BQL first)."""
        since = self.book.contended(rec.name, site)
        if rec.waited_since is None:
            rec.waited_since = since

    def unlock(self, rec: ThreadRec, site: str) -> None:
        if not rec.holds_bql:
            raise ModelError(f"{rec.name} unlocks the BQL at {site} but does not hold it "
                             f"(held by {self.bql.owner or 'nobody'})")
        self.book.released(rec.name, rec.cpu, site)
        rec.holds_bql = False
        if not rec.released_since_spend:
            rec.retook_at_once = True
        rec.released_since_spend = True
        rec.released_at_take = self.takes

    def _park(self, park: Park) -> Perform:
        slept: int = yield park
        if self.wake_latency_ns and (park.timeout_ns is None or slept < park.timeout_ns):
            latency = self._latency()
            yield Sleep(latency, False)
            slept += latency
        return slept

    def _latency(self) -> int:
        """A wake-up latency, 0 to wake_latency_ns: what rng.randint(0, wake_latency_ns) draws, without its
        three calls in Python (randrange, _randbelow) per wake-up."""
        n = self.wake_latency_ns + 1
        bits = n.bit_length()
        getrandbits = self.rng.getrandbits
        r = getrandbits(bits)
        while r >= n:
            r = getrandbits(bits)
        return r

    def spend(self, rec: ThreadRec, effect: Spend) -> Perform | None:
        """A Spend's bookkeeping, done here; the rest of it to perform, or None when it has no primitive
        (most Spends: the time is only owed). An engine may call this instead of `perform` for a Spend
        (counting it in `effects`), so that these need no generator of their own."""
        cpu = effect.spin
        if cpu is not None and self.fast_forward:
            snapshot = cpu.loop_snapshot()
            kept = not rec.released_since_spend or rec.retook_at_once
            unchanged = rec.holds_bql and kept and snapshot == rec.last_snapshot
            rec.last_snapshot, rec.released_since_spend, rec.retook_at_once = snapshot, False, False
            if unchanged:
                return self._spin_parked(rec, cpu, effect, park_on(effect.wake, None))
        rec.owed_ns += effect.ns
        if rec.owed_ns >= self.quantum_ns:
            return self._pay(rec)
        return None

    def _spin_parked(self, rec: ThreadRec, cpu: CPUState, effect: Spend, park: Park) -> Perform:
        """The rest of a Spend whose loop turn changed nothing: pay, fast-forward, then owe the turn."""
        yield from self._pay(rec)
        yield from self._fast_forward(rec, cpu, effect, park)
        rec.owed_ns += effect.ns
        if rec.owed_ns >= self.quantum_ns:
            yield from self._pay(rec)

    def _pay(self, rec: ThreadRec) -> Perform:
        owed, rec.owed_ns = rec.owed_ns, 0
        if owed:
            yield Sleep(owed, rec.cpu is not None)  # positional: cheaper

    def _fast_forward(self, rec: ThreadRec, cpu: CPUState, effect: Spend, park: Park) -> Perform:
        start = rec.ff_since = self.now_ns()
        self.machine.trace("vcpu_spin_fast_forward", cpu=cpu.cpu_index, thread=rec.name,
                           iterations=cpu.stats.get("loop_iterations", 0))
        try:
            yield from self._park(park)
        finally:  # also when the run ends while it spins: the turns it made still count
            skipped = (self.now_ns() - start) // effect.ns
            cpu.count("loop_iterations", skipped)
            rec.ff_since = None
        self.machine.trace("vcpu_spin_resumed", cpu=cpu.cpu_index, thread=rec.name, skipped_iterations=skipped)

    # --- what the engines read -------------------------------------------------------------------

    def spinning(self, rec: ThreadRec) -> bool:
        """The thread is fast-forwarding a spin with the BQL held."""
        return rec.ff_since is not None and rec.holds_bql

    def iterations(self, cpu: CPUState) -> int:
        """Loop turns of a vCPU thread so far, including a fast-forward in progress."""
        done = cpu.stats.get("loop_iterations", 0)
        rec = self.threads.get(cpu.name)
        if rec is not None and rec.ff_since is not None:
            done += (self.now_ns() - rec.ff_since) // self.machine.settings.loop_cost_ns
        return done

    # --- the verdict -----------------------------------------------------------------------------

    def start(self) -> None:
        self.machine.trace("run_start", settings=self.machine.settings.to_dict())

    def finish(self, verdict: str, reason: str, lockup: Lockup | None = None, at_ns: int | None = None) -> bool:
        """Record the run's verdict (the first one wins), reached at `at_ns` (default: now); True if this
        call gave it."""
        if self.verdict is not None:
            return False
        self.verdict = (verdict, reason, lockup)
        self.verdict_ns = self.now_ns() if at_ns is None else at_ns
        self.machine.trace("run_verdict", verdict=verdict, reason=reason)
        return True

    def finish_guest(self) -> None:
        self.finish(*guest_verdict(self.machine))

    def deadline_reason(self, kind: str) -> str:
        """Why a run was cut short: its "guest" or its "wall-clock" deadline came first."""
        settings = self.machine.settings
        limit = settings.deadline_s if kind == "guest" else settings.wall_deadline_s
        return f"{kind} deadline of {limit:g} s reached"

    def check_watchdog(self, now: int) -> Lockup | None:
        """The lockup watchdog, then the progress watchdog (whose verdict has no Lockup report)."""
        lockup = self.watchdog.check(now)
        if lockup is not None:
            self.fire_watchdog(lockup)
            return lockup
        spinning = self.watchdog.spinning(now)
        if spinning is not None:
            self.finish(SPINNING, spinning)
        return None

    def fire_watchdog(self, lockup: Lockup, at_ns: int | None = None) -> bool:
        """The watchdog's verdict; True if it is the run's (the first)."""
        self.machine.trace("watchdog_fired", stuck=lockup.stuck_thread, holder=lockup.bql_holder_thread,
                           held_for_s=lockup.held_for_s, iterations=lockup.holder_iterations,
                           holder_thread=lockup.holder_thread)
        return self.finish("lockup", f"{lockup.stuck_thread} stuck for {self.machine.settings.watchdog_s:g} s "
                                     f"waiting for {lockup.waiting_for}", lockup, at_ns)

    def result(self, wall_s: float) -> RunResult:
        """The RunResult; guest time stops at the verdict. A hold still going on counts in the statistics."""
        assert self.verdict is not None
        end = self.verdict_ns if self.verdict_ns is not None else self.now_ns()
        stats = self.bql
        if stats.owner is not None:
            held = end - stats.owner_since_ns
            s = stats.stats(stats.owner)
            s.hold_ns += held
            s.max_hold_ns = max(s.max_hold_ns, held)
        kind, reason, lockup = self.verdict
        out = self.machine.outcome
        return RunResult(
            verdict=kind, reason=reason, settings=self.machine.settings, cpus_online=len(out.online),
            guest_time_s=end / NS, wall_time_s=wall_s, lockup=lockup,
            failures=[f"{f.kind}: {f.text}" for f in out.failures],
            why=failure_chain(self.facts) if out.failures else [], console=[line for _, line in out.console],
            cpu_stats={cpu.name: {**cpu.stats, "loop_iterations": self.iterations(cpu)} for cpu in self.machine.cpus},
            bql_stats={t: dict(s.__dict__) for t, s in stats.per_thread.items()},
            effects=self.effects,
        )


def guest_verdict(machine: Machine) -> tuple[str, str]:
    """The verdict once the guest says it has finished: its first failure, or success."""
    out, settings = machine.outcome, machine.settings
    last_line = out.console[-1][1] if out.console else "guest finished"
    if out.failures:
        return out.failures[0].kind, "; ".join(f.text for f in out.failures)
    wanted = out.wanted or settings.smp
    if len(out.online) != wanted:
        return STUCK_CPU, f"only {len(out.online)} of {wanted} CPUs online"
    return ("booted" if settings.plain_boot else "completed"), last_line


def takes_sigterm() -> bool:
    """Whether a run may turn SIGTERM into RunKilled: only on the main thread (the only one Python gives
    signals to), and not in a worker process whose parent ends it with SIGTERM (matrix)."""
    return threading.current_thread() is threading.main_thread() and not _sigterm_left_to_parent


_sigterm_left_to_parent = False


def leave_sigterm_to_parent() -> None:
    """In a worker process: let SIGTERM end the process at once, as its parent expects."""
    global _sigterm_left_to_parent
    _sigterm_left_to_parent = True


class Engine:
    """What `runner` needs of an engine: build it from a Machine, `run()` it to a RunResult.

    Adding an engine: subclass, implement the primitives on top of an `EngineCore`, and add the class to
    `ENGINES` in engine/__init__.py; `--engine NAME` then reaches it.
    """

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def run(self) -> RunResult:
        raise NotImplementedError

    def now_ns(self) -> int:
        """Guest time now (also after the run was interrupted: where an interrupted log ends)."""
        raise NotImplementedError
