"""The threads engine: one OS thread per QEMU thread around a real `threading.Lock`, hanging for real.

The same model generators as the Trio engine, performed by real threads: `BqlLock` is a blocking
acquire of one `threading.Lock` (with its owner recorded), `CondWait` drops it and sleeps, `Block`
sleeps in wall time, and a vCPU loop turn is simply executed - so the spinning vCPU of the hang burns a
host core, as the real QEMU thread does, and the boot CPU's thread is blocked in the lock.

Choices, and why:
- Conditions are a `threading.Event` per waiter, not `threading.Condition`: Python's `notify` must hold
  the lock, while QEMU kicks (`qemu_cond_broadcast`) without the BQL. A CondWait registers its event
  before it drops the BQL, so no broadcast is lost.
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
import sys
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import psutil

from ..model.cpus import CPUState
from ..model.effects import Block, BqlLock, BqlUnlock, CondWait, Effect, QemuCond, Spend
from ..model.machine import Machine
from ..result import Lockup, RunResult
from ..watchdog import Watchdog
from .bql import BqlBook
from .outcome import guest_verdict, make_result

NS = 1_000_000_000
SAMPLE_WINDOW_S = 1.0  # psutil sampling window of the watchdog's `top -H`
JOIN_TIMEOUT_S = 5.0


class _Stopped(Exception):
    """Raised inside a thread's driver once the run has its verdict."""


@dataclass
class _ThreadState:
    name: str
    cpu: CPUState | None
    native_id: int = 0
    holds_bql: bool = False


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


class ThreadsEngine:
    """Runs one Machine to a verdict with real threads. Use `run()`."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.settings = machine.settings
        self.scale = machine.settings.time_scale
        self.book = BqlBook(machine.trace, self.now_ns)
        self.bql = self.book.stats
        self._lock = threading.Lock()
        self._waiters: dict[QemuCond, set[threading.Event]] = {}
        self._sleeping: set[threading.Event] = set()
        self._registry = threading.Lock()
        self._trace_lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._wake_main = threading.Event()
        self._threads: dict[str, _ThreadState] = {}
        self._verdict: tuple[str, str, Lockup | None] | None = None
        self._error: BaseException | None = None
        self._effects = 0
        self._t0 = time.monotonic()
        self.watchdog = Watchdog(machine, self.bql, int(self.settings.watchdog_s * NS), self.iterations)
        self.leftover_threads: list[str] = []
        self._log_closed = False
        tracer = machine.tracer

        def locked_tracer(event: str, t_ns: int, fields: dict[str, Any]) -> None:
            with self._trace_lock:  # threads log concurrently; the event log is not thread-safe
                if not self._log_closed:
                    tracer(event, t_ns, fields)
                # After the verdict the threads only wind down: that is not part of the run's story.
                self._log_closed = self._log_closed or event == "run_verdict"

        machine.tracer = locked_tracer
        machine.attach(self)

    # --- WakeHub ---------------------------------------------------------------------------------

    def now_ns(self) -> int:
        return int((time.monotonic() - self._t0) * NS * self.scale)

    def notify(self, cond: QemuCond) -> None:
        with self._registry:
            events = self._waiters.pop(cond, None)
        for event in events or ():
            event.set()

    def _wait_any(self, conds: tuple[QemuCond, ...], timeout_ns: int | None) -> int:
        event = threading.Event()
        with self._registry:
            for cond in conds:
                self._waiters.setdefault(cond, set()).add(event)
            self._sleeping.add(event)
        if self._stop.is_set():
            event.set()
        start = self.now_ns()
        try:
            woke = event.wait(None if timeout_ns is None else timeout_ns / NS / self.scale)
        finally:
            with self._registry:
                for cond in conds:
                    self._waiters.get(cond, set()).discard(event)
                self._sleeping.discard(event)
        if self._stop.is_set():
            raise _Stopped
        return max(0, self.now_ns() - start) if woke or timeout_ns is None else timeout_ns

    # --- the BQL ---------------------------------------------------------------------------------

    def _bql_lock(self, st: _ThreadState, site: str) -> None:
        if self._lock.acquire(blocking=False):
            self.book.want(st.name, st.cpu, site)
            waited_since = None
        else:
            waited_since = self.book.want(st.name, st.cpu, site) or self.now_ns()
            # A plain blocking acquire, as a pthread mutex: no polling that would steal the GIL from the
            # spinning holder. At the end every holder releases the BQL, so every waiter gets through.
            self._lock.acquire()
        self.book.took(st.name, st.cpu, site, waited_since)
        st.holds_bql = True

    def _bql_unlock(self, st: _ThreadState, site: str) -> None:
        self.book.released(st.name, st.cpu, site)
        st.holds_bql = False
        self._lock.release()

    # --- effects ---------------------------------------------------------------------------------

    def _perform(self, st: _ThreadState, effect: Effect) -> Any:
        if self._stop.is_set():
            raise _Stopped
        self._effects += 1
        if isinstance(effect, Spend):
            if effect.spin is None:
                time.sleep(effect.ns / NS / self.scale)  # time the thread really spends (main loop work)
            return None  # a vCPU loop turn spends its CPU time by being executed
        if isinstance(effect, BqlLock):
            self._bql_lock(st, effect.site)
            return None
        if isinstance(effect, BqlUnlock):
            self._bql_unlock(st, effect.site)
            return None
        if isinstance(effect, CondWait):
            event = threading.Event()
            with self._registry:  # registered before the BQL is dropped: no broadcast can be lost
                self._waiters.setdefault(effect.cond, set()).add(event)
                self._sleeping.add(event)
            self._bql_unlock(st, effect.site)
            self.book.cond_wait(st.name, st.cpu, effect.cond.name, effect.site)
            event.wait()  # the stop wakes every sleeping thread
            with self._registry:
                self._waiters.get(effect.cond, set()).discard(event)
                self._sleeping.discard(event)
            if self._stop.is_set():
                raise _Stopped
            self.book.cond_woken(st.name, st.cpu, effect.cond.name)
            self._bql_lock(st, effect.site)
            return None
        if isinstance(effect, Block):
            return self._wait_any(effect.wake, effect.timeout_ns)
        raise TypeError(f"unknown effect {effect!r}")

    def iterations(self, cpu: CPUState) -> int:
        return cpu.stats.get("loop_iterations", 0)

    def _drive(self, st: _ThreadState, factory: Callable[[], Generator[Effect, Any, Any]]) -> None:
        st.native_id = threading.get_native_id()
        _set_os_thread_name(st.name)
        gen = factory()
        value: Any = None
        try:
            while True:
                value = self._perform(st, gen.send(value))
        except (_Stopped, StopIteration):
            pass
        except BaseException as e:  # a model error: end the run, then raise it from run() as Trio would
            self._error = e
            self._finish("deadline", f"internal error in {st.name}: {type(e).__name__}: {e}")
        finally:
            gen.close()
            self.bql.blocked.pop(st.name, None)
            if st.holds_bql:
                self._bql_unlock(st, "thread exit")

    # --- verdicts --------------------------------------------------------------------------------

    def _finish(self, verdict: str, reason: str, lockup: Lockup | None = None) -> None:
        with self._registry:
            if self._verdict is None:
                self._verdict = (verdict, reason, lockup)
                first = True
            else:
                first = False
        if first:
            self.machine.trace("run_verdict", verdict=verdict, reason=reason)
        self._done.set()
        self._wake_main.set()

    def _watch(self) -> None:
        _set_os_thread_name("watchdog")
        while not self._done.is_set():
            self._done.wait(self.watchdog.next_check_ns(self.now_ns()) / NS / self.scale)
            if self._done.is_set():
                return
            lockup = self.watchdog.check(self.now_ns())
            if lockup is not None:
                lockup.holder_thread, lockup.top_threads = self._sample_threads(lockup.bql_holder_thread)
                self.machine.trace("watchdog_fired", stuck=lockup.stuck_thread, holder=lockup.bql_holder_thread,
                                   held_for_s=lockup.held_for_s, iterations=lockup.holder_iterations,
                                   holder_thread=lockup.holder_thread)
                self._finish("lockup", f"{lockup.stuck_thread} stuck for {self.settings.watchdog_s:g} s "
                                       f"waiting for {lockup.waiting_for}", lockup)
                return

    def _sample_threads(self, holder: str | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """What `top -H` would show: per-thread CPU share over a short window, from psutil."""
        process = psutil.Process()
        start = time.monotonic()
        before = {t.id: t.user_time + t.system_time for t in process.threads()}
        time.sleep(SAMPLE_WINDOW_S)
        after = {t.id: t.user_time + t.system_time for t in process.threads()}
        window = time.monotonic() - start
        names = {st.native_id: st.name for st in self._threads.values()}
        names[threading.get_native_id()] = "watchdog"
        names[threading.main_thread().native_id or 0] = "python main"
        shares = {tid: round(100 * (after[tid] - before.get(tid, after[tid])) / window, 1) for tid in after}
        busiest = sorted(shares, key=lambda tid: -shares[tid])[:5]
        top: list[dict[str, Any]] = [{"native_id": tid, "name": names.get(tid, "?"), "cpu_percent": shares[tid],
                                      "os_name": _os_thread_name(tid)} for tid in busiest]
        holder_tid = next((st.native_id for st in self._threads.values() if st.name == holder), None)
        holder_row = None
        if holder_tid in shares:
            holder_row = {"native_id": holder_tid, "name": holder, "cpu_percent": shares[holder_tid],
                          "os_name": _os_thread_name(holder_tid)}
        return holder_row, top

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> RunResult:
        self._t0 = time.monotonic()
        self.machine.trace("run_start", settings=self.settings.to_dict())
        threads = []
        for name, factory in self.machine.threads():
            cpu = next((c for c in self.machine.cpus if c.name == name), None)
            st = self._threads[name] = _ThreadState(name, cpu)
            threads.append(threading.Thread(target=self._drive, args=(st, factory), name=name))
        watchdog = threading.Thread(target=self._watch, name="watchdog")
        for thread in [*threads, watchdog]:
            thread.start()
        with self._registry:  # the guest's end wakes this thread; so does any verdict (_finish)
            self._waiters.setdefault(self.machine.finished_cond, set()).add(self._wake_main)
        guest_deadline = self._t0 + self.settings.deadline_s / self.scale
        wall_deadline = self._t0 + self.settings.wall_deadline_s
        try:
            while not self._done.is_set():
                # No polling: a thread waking up every few ms would steal the GIL from the spinning vCPU.
                self._wake_main.wait(max(0.0, min(guest_deadline, wall_deadline) - time.monotonic()))
                if self.machine.finished:
                    self._finish(*guest_verdict(self.machine))
                elif time.monotonic() >= guest_deadline:
                    self._finish("deadline", f"guest deadline of {self.settings.deadline_s:g} s reached")
                elif time.monotonic() >= wall_deadline:
                    self._finish("deadline", f"wall-clock deadline of {self.settings.wall_deadline_s:g} s reached")
        finally:
            self._finish("deadline", "interrupted")  # a no-op when there already is a verdict
            guest_ns = self.now_ns()
            self._stop.set()
            with self._registry:
                sleeping = list(self._sleeping)
            for event in sleeping:
                event.set()
            for thread in [*threads, watchdog]:
                thread.join(JOIN_TIMEOUT_S)
            self.leftover_threads = [t.name for t in [*threads, watchdog] if t.is_alive()]
        if self._error is not None:
            raise self._error
        assert self._verdict is not None
        return make_result(self.machine, self._verdict, guest_ns, time.monotonic() - self._t0, self.bql,
                           self.iterations, self._effects)
