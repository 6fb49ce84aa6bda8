"""The Trio engine: the QEMU threads stepped in guest time, on Trio's clock, signals and cancellation.

Its primitives are the scheduler's (sched.py): the BQL is taken when free and otherwise waited for, a
Park waits for a broadcast or its timer, a Sleep is a timer. Whenever no thread can run, guest time jumps
to the next timer - at once on the virtual clock, by `trio.sleep_until` on the real one - and the
watchdog looks at the threads each time it is due.

Choices, and why:
- The threads are not separate Trio tasks: their interleaving would then follow Trio's own scheduler
  (randomised batches, timers due at the same instant ordered by object address), so a seed would not
  always give the same run. The running thread goes on until it waits; then the engine takes the first
  thread that became ready, in the scheduler's seeded order, and runs it in its own contextvars Context,
  as a task would.
- Every `CHECKPOINT_EVERY` steps the engine yields to Trio, so Ctrl-C and SIGTERM are heard while a
  thread spins, and checks the wall-clock deadline.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import trio

from ..errors import RunKilled
from ..model.machine import Machine
from ..result import RunResult
from .core import NS, QUIT_REASON, Engine, EngineCore, takes_sigterm
from .sched import Scheduler

SPEND_QUANTUM_NS = 64_000
WAKE_LATENCY_MAX_NS = 2_000  # a futex wake-up reaches the woken thread after 0-2 us (drawn from the seed)
CHECKPOINT_EVERY = 512


class TrioEngine(Engine):
    """Runs one Machine to a verdict. Use `run()` (own event loop) or `await run_async()`."""

    def __init__(self, machine: Machine, serve: Callable[[], None] | None = None) -> None:
        """`serve`: run like a QEMU process (`vcpu-sched qemu`) - a verdict is reported by calling it, and
        the run goes on until the machine is asked to quit, a signal or the deadline."""
        super().__init__(machine)
        self.serve = serve
        self.settings = machine.settings
        self.core = EngineCore(machine, self.now_ns, fast_forward=self.settings.fast_forward,
                               quantum_ns=SPEND_QUANTUM_NS, wake_latency_ns=WAKE_LATENCY_MAX_NS)
        # A served run (QMP) or one on the real clock can be touched between two steps: each step is its own.
        self.sched = Scheduler(self.core, timed=True, run_on=serve is None and self.settings.clock != "real")
        self._killed = False
        self._wall0: float | None = None

    def now_ns(self) -> int:
        if self.settings.clock == "real" and self._wall0 is not None:  # also while it sleeps to the next timer
            return max(self.sched.now, round((time.monotonic() - self._wall0) * NS))
        return self.sched.now

    async def run_async(self) -> RunResult:
        """Run to a verdict inside the caller's Trio run (on its clock when settings say real)."""
        wall0 = self._wall0 = time.monotonic()
        error: Exception | None = None
        async with trio.open_nursery() as nursery:
            if takes_sigterm():
                nursery.start_soon(self._on_sigterm, nursery.cancel_scope)
            try:
                await self._dispatch(wall0)
            except Exception as e:  # a model error: raised as it is, not inside the nursery's group
                error = e
            finally:
                nursery.cancel_scope.cancel()
                self.sched.close()
        if error is not None:
            raise error
        if self._killed:
            raise RunKilled("SIGTERM")
        return self.core.result(time.monotonic() - wall0)

    def run(self) -> RunResult:
        """Run to a verdict in a fresh Trio event loop."""
        result: RunResult = trio.run(self.run_async)
        return result

    async def _dispatch(self, wall0: float) -> None:
        core, sched, machine = self.core, self.sched, self.machine
        real = self.settings.clock == "real"
        run_on = sched.run_on
        t0 = trio.current_time()
        deadline = round(self.settings.deadline_s * NS)
        wall_deadline = wall0 + self.settings.wall_deadline_s
        watch_at = core.watchdog.next_check_ns(0)
        steps = 0
        current = None
        serve, reported = self.serve, False
        if run_on:
            sched.horizon = min(watch_at, deadline)
        checkpoint_at = CHECKPOINT_EVERY
        sched.start()
        while core.verdict is None or serve is not None:
            if serve is not None:
                if machine.quit_requested:
                    core.finish("deadline", QUIT_REASON)  # the run is cut short unless the guest had finished
                    break
                if sched.now >= deadline or time.monotonic() > wall_deadline:
                    core.finish("deadline", core.deadline_reason("guest" if sched.now >= deadline else "wall-clock"))
                    break
                if core.verdict is not None and not reported:
                    reported = True
                    serve()
            # A thread runs until it waits, as an OS thread does (so an unlock-relock can barge past a
            # waiter, as with a pthread mutex); then the first thread that became ready.
            if current is None or not sched.is_enabled(current):
                current = sched.first_enabled()
            if current is not None:
                sched.step(current)
                if machine.finished:
                    core.finish_guest()
                if run_on:  # the step ran the thread until it had to wait: it cannot step again now
                    current = None
                steps += 1
                if steps + sched.jumps >= checkpoint_at:  # a Sleep passed inside a step counts as a step
                    checkpoint_at = steps + sched.jumps + CHECKPOINT_EVERY
                    await trio.lowlevel.checkpoint()
                    if time.monotonic() > wall_deadline:
                        core.finish("deadline", core.deadline_reason("wall-clock"))
                continue
            due = sched.next_due()
            target = min(watch_at, deadline) if due is None else min(due, watch_at, deadline)
            if real:
                await trio.sleep_until(t0 + target / NS)
            sched.advance_to(target)
            if target >= watch_at:
                if core.verdict is None and core.check_watchdog(sched.now) is not None and serve is None:
                    break
                # Once there is a verdict (a served run goes on) the watchdog has nothing more to say; a
                # thread stuck past its threshold would otherwise ask for a check every nanosecond.
                watch_at = sched.now + core.watchdog.next_check_ns(sched.now) if core.verdict is None else deadline
                if run_on:
                    sched.horizon = min(watch_at, deadline)
                if time.monotonic() > wall_deadline:
                    core.finish("deadline", core.deadline_reason("wall-clock"))
            if target >= deadline:
                core.finish("deadline", core.deadline_reason("guest"))

    async def _on_sigterm(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                self._killed = True
                scope.cancel()
                return
