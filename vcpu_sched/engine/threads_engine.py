"""The threads engine: one OS thread per QEMU thread around a real `threading.Lock`, hanging for real.

The engine core's primitives (core.py) performed by real threads: `Acquire` is a blocking acquire of one
`threading.Lock`, `Release` releases it, `Park` sleeps on an event in wall time, and a `Sleep` of a vCPU
loop turn is simply the turn being executed (no fast-forward) - so the spinning vCPU of the hang burns a
host core, as the real QEMU thread does, and the boot CPU's thread is blocked in the lock.

Choices, and why:
- Conditions are a `threading.Event` per waiter, not `threading.Condition`: Python's `notify` must hold
  the lock, while QEMU kicks (`qemu_cond_broadcast`) without the BQL. A Park registers its event, then
  compares the generations the core took before the BQL was dropped, so no broadcast is lost.
- The log is kept in time order, and once the watchdog has decided, other threads' events are no longer
  logged: the second of psutil sampling that follows is not part of the run's story, and guest time
  stops at the verdict. SIGTERM (main thread only) raises RunKilled there; the threads are then stopped.
- Guest time is wall time multiplied by `time_scale` (default 20: one wall second is twenty guest
  seconds), so a 2 s boot takes 0.1 s and a 20 s watchdog threshold one second of real spinning.
- Stopping: when the run has its verdict, a stop flag is set and every sleeping thread is woken. Each
  thread checks the flag at its next blocking point (the spinning one at its next loop turn), leaves
  its generator and releases the BQL if it holds it, so every thread ends and is joined.
- Threads are named like QEMU's ("CPU 1/KVM"), also for the OS (prctl on Linux), so `top -H` and the
  watchdog's psutil sampling show the same names.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import RunKilled
from ..model.effects import QemuCond
from ..model.machine import Machine
from ..result import RunResult
from ..verdicts import SPINNING
from .core import (
    NS,
    QUIT_REASON,
    Acquire,
    Engine,
    EngineCore,
    Park,
    Primitive,
    Release,
    Sleep,
    ThreadRec,
    guest_verdict,
    takes_sigterm,
)

SAMPLE_WINDOW_S = 1.0  # psutil sampling window of the watchdog's `top -H`
JOIN_TIMEOUT_S = 5.0


class _Stopped(Exception):
    """Raised inside a thread's driver once the run has its verdict."""


def _set_os_thread_name(name: str) -> None:
    """Name the calling OS thread (15 bytes at most on Linux), for `top -H` and /proc."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None)
            libc.prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)  # PR_SET_NAME
        except (OSError, AttributeError):
            pass


def _os_thread_name(native_id: int) -> str | None:
    try:
        with open(f"/proc/self/task/{native_id}/comm", encoding="utf-8") as comm:
            return comm.read().strip()
    except OSError:
        return None


class ThreadsEngine(Engine):
    """Runs one Machine to a verdict with real threads. Use `run()`."""

    def __init__(self, machine: Machine, serve: Callable[[], None] | None = None) -> None:
        """`serve`: run like a QEMU process (`vcpu-sched qemu`): a verdict is reported by calling it, and
        the threads go on until the machine is asked to quit, `halt()` or the deadline."""
        super().__init__(machine)
        self.serve = serve
        self._halt: str | None = None  # why a served run must end now
        self.scale = machine.settings.time_scale
        self._t0 = time.monotonic()
        self.core = EngineCore(machine, self.now_ns, fast_forward=False)
        self._lock = threading.Lock()
        self._owner: str | None = None  # who holds `_lock`, as the OS sees it
        self._waiters: dict[QemuCond, set[threading.Event]] = {}
        self._sleeping: set[threading.Event] = set()
        self._registry = threading.Lock()
        self._trace_lock = threading.Lock()
        self._verdict_lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()  # the run has its verdict (or is being stopped)
        self._wake_main = threading.Event()
        self._native_ids = machine.thread_ids  # thread name -> OS thread id, as each thread starts
        self._error: BaseException | None = None
        self.leftover_threads: list[str] = []
        self._spawned: list[threading.Thread] = []  # threads started while the machine runs
        self._log_closed = False
        self._last_t_ns = 0
        self._frozen_at: int | None = None
        tracer = machine.tracer

        def locked_tracer(event: str, t_ns: int, fields: dict[str, Any]) -> None:
            with self._trace_lock:  # threads log concurrently; the event log is not thread-safe
                # A thread may read the clock, then wait for this lock behind a later one: the log keeps
                # time in order (by at most the wait for the lock), as analyze requires.
                if self._frozen_at is not None:  # the watchdog has decided: only its own lines remain
                    if event not in ("watchdog_fired", "run_verdict"):
                        return
                    t_ns = self._frozen_at
                t_ns = self._last_t_ns = max(t_ns, self._last_t_ns)
                if not self._log_closed:
                    tracer(event, t_ns, fields)
                # After the verdict the threads only wind down: that is not part of the run's story
                # (a served run goes on after its verdict, and so does its log).
                self._log_closed = self._log_closed or (event == "run_verdict" and self.serve is None)

        machine.tracer = locked_tracer
        machine.attach(self)
        self.settings = machine.settings

    # --- WakeHub ---------------------------------------------------------------------------------

    def now_ns(self) -> int:
        return int((time.monotonic() - self._t0) * NS * self.scale)

    def spawn(self, name: str, factory: Callable[[], Any]) -> None:
        thread = threading.Thread(target=self._drive, args=(self.core.add_thread(name), factory), name=name)
        self._spawned.append(thread)
        thread.start()

    def notify(self, cond: QemuCond) -> None:
        with self._registry:
            events = self._waiters.pop(cond, None)
        for event in events or ():
            event.set()

    # --- the primitives --------------------------------------------------------------------------

    def _primitive(self, rec: ThreadRec, prim: Primitive) -> Any:
        if isinstance(prim, Release):
            self._owner = None
            self._lock.release()
            return None
        if self._stop.is_set():
            raise _Stopped
        if isinstance(prim, Acquire):
            # A plain blocking acquire, as a pthread mutex: no polling that would steal the GIL from the
            # spinning holder. At the end every holder releases the BQL, so every waiter gets through.
            if not self._lock.acquire(blocking=False):
                self.core.contended(rec, prim.site)
                self._lock.acquire()
            self._owner = rec.name
            return None
        if isinstance(prim, Sleep):
            if not prim.busy:
                time.sleep(prim.ns / NS / self.scale)  # time the thread really spends (main loop work)
            return None  # a vCPU loop turn spends its CPU time by being executed
        assert isinstance(prim, Park)
        return self._park(prim)

    def _park(self, park: Park) -> int:
        start = self.now_ns()
        while True:
            woke = self._park_once(park)
            # A qemu_cond_signal that chose another waiter of the condition woke this one too: sleep on.
            if not woke or park.waiter is None or park.woken():
                break
        return max(0, self.now_ns() - start) if woke or park.timeout_ns is None else park.timeout_ns

    def _park_once(self, park: Park) -> bool:
        event = threading.Event()
        with self._registry:  # registered, then the generations compared: no broadcast can be lost
            for cond in park.conds:
                self._waiters.setdefault(cond, set()).add(event)
            self._sleeping.add(event)
        if park.woken() or self._stop.is_set():
            event.set()
        try:
            woke = event.wait(None if park.timeout_ns is None else park.timeout_ns / NS / self.scale)
        finally:
            with self._registry:
                for cond in park.conds:
                    self._waiters.get(cond, set()).discard(event)
                self._sleeping.discard(event)
        if self._stop.is_set():
            raise _Stopped
        return woke

    def _drive(self, rec: ThreadRec, factory: Callable[[], Any]) -> None:
        self._native_ids[rec.name] = threading.get_native_id()
        _set_os_thread_name(rec.name)
        gen = factory()
        value: Any = None
        try:
            while True:
                perform = self.core.perform(rec, gen.send(value))
                result: Any = None
                try:
                    while True:
                        result = self._primitive(rec, perform.send(result))
                except StopIteration as done:
                    value = done.value
        except (_Stopped, StopIteration):
            pass
        except BaseException as e:  # a model error: end the run, then raise it from run() as Trio would
            self._error = e
            self._finish("deadline", f"internal error in {rec.name}: {type(e).__name__}: {e}")
        finally:
            gen.close()
            self.core.bql.blocked.pop(rec.name, None)
            if self._owner == rec.name:
                self._owner = None
                self._lock.release()

    # --- verdicts --------------------------------------------------------------------------------

    def _finish(self, verdict: str, reason: str, lockup: Any = None) -> None:
        with self._verdict_lock:
            first = self.core.finish(verdict, reason, lockup)
        if self.serve is not None:
            if first:
                self.serve()
            return
        self._done.set()
        self._wake_main.set()

    def halt(self, reason: str) -> None:
        """End a served run (from any thread): a signal, or the machine asked to quit."""
        self._halt = reason
        self._wake_main.set()

    def _watch(self) -> None:
        _set_os_thread_name("watchdog")
        core = self.core
        while not self._done.is_set():
            self._done.wait(core.watchdog.next_check_ns(self.now_ns()) / NS / self.scale)
            if self._done.is_set():
                return
            now = self.now_ns()
            lockup = core.watchdog.check(now)
            spinning = core.watchdog.spinning(now) if lockup is None else None
            if spinning is not None:
                with self._verdict_lock:
                    core.finish(SPINNING, spinning, at_ns=now)
                if self.serve is None:
                    self._done.set()
                    self._wake_main.set()
                return
            if lockup is not None:
                with self._trace_lock:  # what the threads do while psutil samples is not the run's story
                    now = max(now, self._last_t_ns)
                    if self.serve is None:
                        self._frozen_at = now
                lockup.holder_thread, lockup.top_threads = self._sample_threads(lockup.bql_holder_thread)
                with self._verdict_lock:
                    first = core.fire_watchdog(lockup, at_ns=now)
                if self.serve is not None:
                    if first:
                        self.serve()
                    return
                self._done.set()
                self._wake_main.set()
                return

    def _sample_threads(self, holder: str | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """What `top -H` would show: per-thread CPU share over a short window, from psutil."""
        import psutil  # only this engine needs it

        process = psutil.Process()
        start = time.monotonic()
        before = {t.id: t.user_time + t.system_time for t in process.threads()}
        self._stop.wait(SAMPLE_WINDOW_S)
        after = {t.id: t.user_time + t.system_time for t in process.threads()}
        window = time.monotonic() - start
        names = {tid: name for name, tid in self._native_ids.items()}
        names[threading.get_native_id()] = "watchdog"
        names[threading.main_thread().native_id or 0] = "python main"
        shares = {tid: round(100 * (after[tid] - before.get(tid, after[tid])) / window, 1) for tid in after}
        busiest = sorted(shares, key=lambda tid: -shares[tid])[:5]
        top: list[dict[str, Any]] = [{"native_id": tid, "name": names.get(tid, "?"), "cpu_percent": shares[tid],
                                      "os_name": _os_thread_name(tid)} for tid in busiest]
        holder_tid = self._native_ids.get(holder or "")
        holder_row = None
        if holder_tid in shares:
            holder_row = {"native_id": holder_tid, "name": holder, "cpu_percent": shares[holder_tid],
                          "os_name": _os_thread_name(holder_tid)}
        return holder_row, top

    # --- the run ---------------------------------------------------------------------------------

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        raise RunKilled("SIGTERM")

    def run(self) -> RunResult:
        self._t0 = time.monotonic()
        self.core.start()
        factories = dict(self.machine.threads())
        threads = [threading.Thread(target=self._drive, args=(rec, factories[name]), name=name)
                   for name, rec in self.core.threads.items()]
        watchdog = threading.Thread(target=self._watch, name="watchdog")
        with self._registry:  # the guest's end wakes this thread; so does any verdict (_finish)
            self._waiters.setdefault(self.machine.finished_cond, set()).add(self._wake_main)
        main = takes_sigterm()
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if main else None
        # SIGTERM raises RunKilled in this thread wherever it waits; the finally block stops the rest.
        guest_deadline = self._t0 + self.settings.deadline_s / self.scale
        wall_deadline = self._t0 + self.settings.wall_deadline_s
        try:
            for thread in [*threads, watchdog]:
                thread.start()
            while self.core.verdict is None or self.serve is not None:
                # No polling: a thread waking up every few ms would steal the GIL from the spinning vCPU
                # (a served run looks for a quit ten times a second).
                timeout = max(0.0, min(guest_deadline, wall_deadline) - time.monotonic())
                self._wake_main.wait(timeout if self.serve is None else min(timeout, 0.1))
                self._wake_main.clear()
                if self.serve is not None and (self._halt or self.machine.quit_requested):
                    self.core.finish("deadline", self._halt or QUIT_REASON)
                    break
                if self._frozen_at is not None:  # the watchdog has decided and samples `top -H`: the guest's
                    self._done.wait(SAMPLE_WINDOW_S * 2)  # end, should it come meanwhile, comes too late
                    continue
                if self.machine.finished and self.core.verdict is None:
                    self._finish(*guest_verdict(self.machine))
                elif time.monotonic() >= guest_deadline:
                    self._finish("deadline", self.core.deadline_reason("guest"))
                    if self.serve is not None:
                        break
                elif time.monotonic() >= wall_deadline:
                    self._finish("deadline", self.core.deadline_reason("wall-clock"))
                    if self.serve is not None:
                        break
        finally:
            with self._trace_lock:
                self._log_closed = True  # interrupted: the runner writes why; the threads only wind down
            self._stop.set()
            self._done.set()
            with self._registry:
                sleeping = list(self._sleeping)
            for event in [*sleeping, self._wake_main]:
                event.set()
            everyone = [*threads, *self._spawned, watchdog]
            for thread in everyone:
                if thread.ident is not None:
                    thread.join(JOIN_TIMEOUT_S)
            self.leftover_threads = [t.name for t in everyone if t.is_alive()]
            if main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if self._error is not None:
            raise self._error
        return self.core.result(time.monotonic() - self._t0)
