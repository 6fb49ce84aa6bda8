"""The Trio engine: every QEMU thread a Trio task, the BQL one lock, guest time a (mock) clock.

Choices, and why:
- The BQL behaves like a default pthread mutex, not like `trio.Lock`: unlocking wakes one waiter but
  hands nothing over, so a thread that unlocks and relocks at once can take it again first (barging).
  glibc's mutex does the same, and a FIFO hand-off would hide starvation QEMU really has. It is built on
  `trio.lowlevel.ParkingLot`, as Trio's own primitives are, and it is never "broken" by a task that
  ends while holding it (a `trio.Lock` would be).
- Conditions are not `trio.Condition` (whose notify needs the lock, while QEMU kicks without the BQL):
  each wait registers a `trio.Event`, and `notify` sets them. A CondWait drops the BQL and registers
  its event with no checkpoint in between, so no broadcast can be lost.
- A vCPU loop turn costs `loop_cost_ns` of guest time (`Spend`). If a turn taken with the BQL held
  from start to end left the CPU exactly as it found it (`CPUState.loop_snapshot`), every following
  turn will do the same until something outside the BQL touches the CPU - and all such things
  broadcast the CPU's halt or kick condition. So the engine sleeps until one does and credits
  elapsed / loop_cost_ns iterations: the count the real thread would have made. `fast_forward=False`
  runs every turn, to check this.
- Timing jitter comes from the seed: guest work durations (the guest's RNG) and the latency with
  which a woken thread starts running (this engine's RNG), so different seeds give different
  interleavings and the same seed gives the same run, byte for byte.
- Spent time is owed, not slept, until a thread has owed `SPEND_QUANTUM_NS` or is about to block:
  each `Spend` is then one Trio checkpoint instead of one timer, which keeps a spinning loop without
  fast-forward within a small factor of a bare checkpoint loop. Other tasks still run at every
  checkpoint; only the clock moves in steps of at most one quantum.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

from ..model.cpus import CPUState
from ..model.effects import Block, BqlLock, BqlUnlock, CondWait, Effect, QemuCond, Spend
from ..model.machine import Machine
from ..result import Lockup, RunResult
from ..watchdog import Watchdog
from .bql import BqlBook, cpu_field
from .outcome import guest_verdict, make_result

NS = 1_000_000_000
SPEND_QUANTUM_NS = 64_000
WAKE_LATENCY_MAX_NS = 2_000  # a futex wake-up reaches the woken thread after 0-2 us (drawn from the seed)
_WALL_CHECK_EVERY = 4096


class RunKilled(Exception):
    """The process got SIGTERM: the run was stopped before a verdict."""


@dataclass
class _ThreadState:
    name: str
    cpu: CPUState | None

    holds_bql: bool = False
    released_since_spend: bool = True
    last_snapshot: tuple[Any, ...] | None = None
    ff_since: int | None = None
    owed_ns: int = 0


class TrioEngine:
    """Runs one Machine to a verdict. Use `run()` (own event loop) or `await run_async()`."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.settings = machine.settings
        self.book = BqlBook(machine.trace, self.now_ns)
        self.bql = self.book.stats
        self._bql_lot = trio.lowlevel.ParkingLot()
        self._waiters: dict[QemuCond, set[trio.Event]] = {}
        self._threads: dict[str, _ThreadState] = {}
        self._t0 = 0.0
        self._wall0 = 0.0
        self._effects = 0
        self._verdict: tuple[str, str, Lockup | None] | None = None
        self._cancel: trio.CancelScope | None = None
        self._killed = False
        self._rng = random.Random(f"engine:{self.settings.seed}")
        self.watchdog = Watchdog(machine, self.bql, int(self.settings.watchdog_s * NS), self.iterations)
        machine.attach(self)

    # --- WakeHub ---------------------------------------------------------------------------------

    def now_ns(self) -> int:
        return round((trio.current_time() - self._t0) * NS)

    def notify(self, cond: QemuCond) -> None:
        events = self._waiters.pop(cond, None)
        if events:
            for event in events:
                event.set()

    async def _wait_any(self, conds: tuple[QemuCond, ...], timeout_ns: int | None) -> int:
        """Sleep until one of `conds` is broadcast or the timeout passes; return the guest ns slept."""
        event = trio.Event()
        for cond in conds:
            self._waiters.setdefault(cond, set()).add(event)
        start = self.now_ns()
        try:
            if timeout_ns is None:
                await event.wait()
            else:
                with trio.move_on_after(timeout_ns / NS):
                    await event.wait()
                if not event.is_set():
                    return timeout_ns
            await trio.sleep(self._rng.randint(0, WAKE_LATENCY_MAX_NS) / NS)
        finally:
            for cond in conds:
                waiting = self._waiters.get(cond)
                if waiting is not None:
                    waiting.discard(event)
        return max(0, self.now_ns() - start)

    # --- the BQL ---------------------------------------------------------------------------------

    def _trace(self, event: str, st: _ThreadState, **fields: Any) -> None:
        self.machine.trace(event, cpu=cpu_field(st.cpu), thread=st.name, **fields)

    async def _lock(self, st: _ThreadState, site: str) -> None:
        waited_since = self.book.want(st.name, st.cpu, site)
        while self.bql.owner is not None:
            await self._bql_lot.park()
        self.book.took(st.name, st.cpu, site, waited_since)
        st.holds_bql = True

    def _unlock(self, st: _ThreadState, site: str) -> None:
        self.book.released(st.name, st.cpu, site)
        st.holds_bql = False
        st.released_since_spend = True
        self._bql_lot.unpark(count=1)

    # --- effects ---------------------------------------------------------------------------------

    async def _perform(self, st: _ThreadState, effect: Effect) -> Any:
        self._effects += 1
        if self._effects % _WALL_CHECK_EVERY == 0:
            self._check_wall()
        if isinstance(effect, Spend):
            await self._spend(st, effect)
            return None
        if st.owed_ns and not isinstance(effect, BqlUnlock):
            await self._pay(st)
        if isinstance(effect, BqlLock):
            await self._lock(st, effect.site)
            return None
        if isinstance(effect, BqlUnlock):
            self._unlock(st, effect.site)
            return None
        if isinstance(effect, CondWait):
            self._unlock(st, effect.site)
            self.book.cond_wait(st.name, st.cpu, effect.cond.name, effect.site)
            await self._wait_any((effect.cond,), None)
            self.book.cond_woken(st.name, st.cpu, effect.cond.name)
            await self._lock(st, effect.site)
            return None
        if isinstance(effect, Block):
            return await self._wait_any(effect.wake, effect.timeout_ns)
        raise TypeError(f"unknown effect {effect!r}")

    async def _spend(self, st: _ThreadState, effect: Spend) -> None:
        cpu = effect.spin
        if cpu is not None and self.settings.fast_forward:
            snapshot = cpu.loop_snapshot()
            unchanged = st.holds_bql and not st.released_since_spend and snapshot == st.last_snapshot
            st.last_snapshot = snapshot
            st.released_since_spend = False
            if unchanged:
                await self._pay(st)
                await self._fast_forward(st, cpu, effect)
        st.owed_ns += effect.ns
        if st.owed_ns >= SPEND_QUANTUM_NS:
            await self._pay(st)
        else:
            await trio.lowlevel.checkpoint()

    async def _pay(self, st: _ThreadState) -> None:
        owed, st.owed_ns = st.owed_ns, 0
        await trio.sleep(owed / NS)

    async def _fast_forward(self, st: _ThreadState, cpu: CPUState, effect: Spend) -> None:
        start = self.now_ns()
        st.ff_since = start
        self._trace("vcpu_spin_fast_forward", st, iterations=cpu.stats.get("loop_iterations", 0))
        try:
            elapsed = await self._wait_any(effect.wake, None)
        finally:
            skipped = (self.now_ns() - start) // effect.ns
            cpu.count("loop_iterations", skipped)
            st.ff_since = None
        self._trace("vcpu_spin_resumed", st, skipped_iterations=elapsed // effect.ns)

    def iterations(self, cpu: CPUState) -> int:
        """Loop turns of a vCPU thread so far, including a fast-forward in progress."""
        done = cpu.stats.get("loop_iterations", 0)
        st = self._threads.get(cpu.name)
        if st is not None and st.ff_since is not None:
            done += (self.now_ns() - st.ff_since) // self.settings.loop_cost_ns
        return done

    async def _drive(self, name: str, factory: Callable[[], Generator[Effect, Any, Any]]) -> None:
        cpu = next((c for c in self.machine.cpus if c.name == name), None)
        st = self._threads[name] = _ThreadState(name, cpu)
        gen = factory()
        value: Any = None
        while True:
            try:
                effect = gen.send(value)
            except StopIteration:
                return
            value = await self._perform(st, effect)

    # --- ending the run --------------------------------------------------------------------------

    def _finish(self, verdict: str, reason: str, lockup: Lockup | None = None) -> None:
        if self._verdict is None:
            self._verdict = (verdict, reason, lockup)
            self.machine.trace("run_verdict", verdict=verdict, reason=reason)
        if self._cancel is not None:
            self._cancel.cancel()

    def _check_wall(self) -> None:
        if time.monotonic() - self._wall0 > self.settings.wall_deadline_s:
            self._finish("deadline", f"wall-clock deadline of {self.settings.wall_deadline_s:g} s reached")

    async def _watch(self) -> None:
        while True:
            await trio.sleep(self.watchdog.next_check_ns(self.now_ns()) / NS)
            self._check_wall()
            lockup = self.watchdog.check(self.now_ns())
            if lockup is not None:
                self.machine.trace("watchdog_fired", stuck=lockup.stuck_thread, holder=lockup.bql_holder_thread,
                                   held_for_s=lockup.held_for_s, iterations=lockup.holder_iterations)
                self._finish("lockup", f"{lockup.stuck_thread} stuck for {self.settings.watchdog_s:g} s "
                                       f"waiting for {lockup.waiting_for}", lockup)
                return

    async def _guest_done(self) -> None:
        await self._wait_any((self.machine.finished_cond,), None)
        self._finish(*guest_verdict(self.machine))

    async def _deadline(self) -> None:
        await trio.sleep(self.settings.deadline_s)
        self._finish("deadline", f"guest deadline of {self.settings.deadline_s:g} s reached")

    async def _on_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread can receive signals; they are the caller's business
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                self._killed = True
                if self._cancel is not None:
                    self._cancel.cancel()
                return

    async def run_async(self) -> RunResult:
        """Run to a verdict inside the caller's Trio run (and clock)."""
        seed_trio_scheduler(self.settings.seed)
        self._t0 = trio.current_time()
        self._wall0 = time.monotonic()
        self.machine.trace("run_start", settings=self.settings.to_dict())
        with trio.CancelScope() as scope:
            self._cancel = scope
            async with trio.open_nursery() as nursery:
                for name, factory in self.machine.threads():
                    nursery.start_soon(self._drive, name, factory, name=name)
                nursery.start_soon(self._watch, name="watchdog")
                nursery.start_soon(self._guest_done, name="guest")
                nursery.start_soon(self._deadline, name="deadline")
                nursery.start_soon(self._on_sigterm, name="sigterm")
        if self._killed:
            raise RunKilled("SIGTERM")
        return self._result()

    def run(self) -> RunResult:
        """Run to a verdict in a fresh Trio event loop (virtual clock unless settings say real)."""
        clock = trio.testing.MockClock(autojump_threshold=0) if self.settings.clock == "virtual" else None
        result: RunResult = trio.run(self.run_async, clock=clock)
        return result

    def _result(self) -> RunResult:
        assert self._verdict is not None
        return make_result(self.machine, self._verdict, self.now_ns(), time.monotonic() - self._wall0, self.bql,
                           self.iterations, self._effects)


def seed_trio_scheduler(seed: int) -> None:
    """Make Trio's choice between runnable tasks a function of `seed` (as Trio's own determinism test
    does); its private RNG is the only other source of scheduling order."""
    rng = getattr(getattr(trio, "_core", None), "_run", None)
    rng = getattr(rng, "_r", None)
    if rng is not None:
        rng.seed(seed)
