"""From events to intervals: what each thread was doing when, the shared input of summary, trace and plot.

Interval kinds per thread: `BQL wait` (qemu_mutex_lock -> qemu_mutex_locked), `BQL held`
(qemu_mutex_locked -> qemu_mutex_unlock), `cond wait` (qemu_cond_wait -> qemu_cond_woken; the halt
sleep when the condition is halt_cond), `KVM_RUN` (kvm_vcpu_ioctl_run -> kvm_run_exit) and `RTAS`
(rtas_call -> rtas_return). Intervals still open when the log ends are closed at its end and marked
`open`. Unpaired events (a suppressed or truncated partner) are skipped, never fatal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .bqlstats import BqlStats

if TYPE_CHECKING:  # explain imports the model: not for a QEMU trace, which needs this module's types only
    from ..explain import Facts
    from .logread import Log

NS = 1_000_000_000

_OPENERS = {"qemu_mutex_lock": "BQL wait", "qemu_mutex_locked": "BQL held", "qemu_cond_wait": "cond wait",
            "kvm_vcpu_ioctl_run": "KVM_RUN", "rtas_call": "RTAS"}
_CLOSERS = {"qemu_mutex_locked": "BQL wait", "qemu_mutex_unlock": "BQL held", "qemu_cond_woken": "cond wait",
            "kvm_run_exit": "KVM_RUN", "rtas_return": "RTAS"}


@dataclass(slots=True)
class Interval:
    thread: str
    kind: str
    start_ns: int
    end_ns: int
    label: str = ""
    open: bool = False

    @property
    def ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(slots=True)
class Instant:
    thread: str
    name: str
    t_ns: int
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ThreadCounts:
    """What a thread did, counted as the log is read (suppressed lines included)."""

    loop_iterations: int = 0
    kicks: int = 0
    sleeps: int = 0
    exits: Counter[str] = field(default_factory=Counter)


@dataclass
class Timeline:
    """Everything the analysis keeps from one pass over the log (never the events themselves); without
    `keep`, only the intervals still open at its end and no instants."""

    threads: list[str]
    intervals: list[Interval]
    instants: list[Instant]
    waiters: list[tuple[int, int]]  # (t_ns, number of threads waiting for the BQL) at each change
    online: dict[str, int]  # thread -> guest time it was started (spapr_cpu_set_entry_state)
    end_ns: int
    counts: dict[str, ThreadCounts] = field(default_factory=dict)
    rtas: list[dict[str, Any]] = field(default_factory=list)
    suppressed: int = 0
    facts: Facts = field(default_factory=lambda: _facts())
    bql: BqlStats = field(default_factory=BqlStats)  # what the summary needs of the BQL intervals


def _facts() -> Facts:
    from ..explain import Facts

    return Facts()


def thread_of(event: dict[str, Any], accel: str) -> str | None:
    """The QEMU thread an event belongs to: engine events name it, model events give the CPU index."""
    thread = event.get("thread")
    if isinstance(thread, str):
        return thread
    cpu = event.get("cpu")
    if isinstance(cpu, int) and not isinstance(cpu, bool):
        return f"CPU {cpu}/{accel.upper()}"
    if cpu == "main":
        return "main"
    return None


def build(log: Log, keep: bool = True) -> Timeline:
    """One pass over the log's events; `keep`: every interval and instant (a trace or a plot draws them),
    else only what the summary needs, in memory that does not grow with the log."""
    from ..explain import Facts

    accel = str(log.settings.get("accel", "kvm"))
    smp = log.settings.get("smp", 0)
    loop_cost = int(log.settings.get("loop_cost_ns", 1000)) or 1000
    threads = ["main"] + [f"CPU {i}/{accel.upper()}" for i in range(smp if isinstance(smp, int) else 0)]
    tl = Timeline(threads, [], [], [(0, 0)], {}, log.end_ns,
                  facts=Facts.for_log(log.settings))
    opened: dict[tuple[str, str], tuple[int, str]] = {}
    waiting: set[str] = set()
    ff_since: dict[str, int] = {}
    rtas_pending: dict[Any, dict[str, Any]] = {}
    feed = tl.facts.feed
    counts, intervals, instants = tl.counts, tl.intervals, tl.instants
    bql = tl.bql
    cpu_threads: dict[int, str] = {}  # thread_of's name of each vCPU, made once
    shared: dict[str, str] = {}  # one string of each thread name and label, kept by many intervals
    suffix = f"/{accel.upper()}"
    for e in log.events():
        name, t = e["event"], e["t_ns"]
        feed(name, t, e)
        if name == "trace_suppressed":
            tl.suppressed += int(e.get("count", 0))
        elif name == "rtas_call":
            rtas_pending[e.get("cpu")] = e
        elif name == "rtas_return":
            call = rtas_pending.pop(e.get("cpu"), None)
            tl.rtas.append({"t_s": t / NS, "cpu": e.get("cpu"), "call": e.get("call"),
                            "args": call.get("args") if call else None, "rets": e.get("rets")})
        # thread_of(e, accel), without its call
        thread = e.get("thread")
        if type(thread) is str:
            thread = shared.setdefault(thread, thread)
        else:
            cpu = e.get("cpu")
            if type(cpu) is int:
                thread = cpu_threads.get(cpu)
                if thread is None:
                    thread = cpu_threads[cpu] = f"CPU {cpu}{suffix}"
            elif cpu == "main":
                thread = "main"
            else:
                if name == "watchdog_fired" and keep:
                    instants.append(Instant("main", "watchdog fired", t, {"holder": e.get("holder")}))
                continue
        c = counts.get(thread)
        if c is None:
            c = counts[thread] = ThreadCounts()
            if thread not in threads:
                threads.append(thread)
        if name in _COUNTED:
            _count(c, e, ff_since, thread)
        kind = _CLOSERS.get(name)
        if kind is not None:
            began = opened.pop((thread, kind), None)
            if began is not None:
                _add(intervals, Interval(thread, kind, began[0], t, began[1]), bql, keep)
        kind = _OPENERS.get(name)
        if kind is not None:
            label = str(e.get("cond") or e.get("site") or e.get("call") or "")
            opened[(thread, kind)] = (t, shared.setdefault(label, label))
            if kind in _BQL:
                bql.opened(thread, kind, t)
            if name == "qemu_mutex_lock" and e.get("owner") is not None:
                waiting.add(thread)
                if keep:
                    tl.waiters.append((t, len(waiting)))
                continue
        if name == "qemu_mutex_locked":
            if thread in waiting:
                waiting.discard(thread)
                if keep:
                    tl.waiters.append((t, len(waiting)))
        elif name == "spapr_cpu_set_entry_state":
            tl.online[thread] = t
        elif not keep:
            pass
        elif name == "qemu_cpu_kick":
            instants.append(Instant(thread, "kick", t, {"by": e.get("by")}))
        elif name == "ppc_maybe_interrupt" and e.get("hard") and not e.get("hard_before"):
            instants.append(Instant(thread, f"HARD set ({e.get('interrupt')})", t, {"rule": e.get("rule")}))
    for (thread, kind), (began_ns, label) in opened.items():
        _add(tl.intervals, Interval(thread, kind, began_ns, tl.end_ns, label, open=True), bql, True)
    for thread, since in ff_since.items():  # a fast-forward still running when the log ends
        tl.counts[thread].loop_iterations += (tl.end_ns - since) // loop_cost
    for thread in threads:
        tl.counts.setdefault(thread, ThreadCounts())
    tl.intervals.sort(key=lambda iv: (iv.thread, iv.start_ns, -iv.end_ns))
    return tl


_BQL = ("BQL held", "BQL wait")


def _add(intervals: list[Interval], iv: Interval, bql: BqlStats, keep: bool) -> None:
    # A BQL wait that was never contended (lock and locked at the same instant) is no wait at all.
    if iv.kind != "BQL wait" or iv.ns > 0 or iv.open:
        if keep:
            intervals.append(iv)
        if iv.kind in _BQL:
            bql.made(iv)


_COUNTED = frozenset(("kvm_cpu_exec", "trace_suppressed", "vcpu_spin_fast_forward", "vcpu_spin_resumed",
                      "qemu_cpu_kick", "qemu_wait_io_event_sleep", "qemu_process_cpu_events_sleep",
                      "kvm_run_exit"))  # the events _count counts


def _count(c: ThreadCounts, e: dict[str, Any], ff_since: dict[str, int], thread: str) -> None:
    name = e["event"]
    if name == "kvm_cpu_exec":
        c.loop_iterations += 1
    elif name == "trace_suppressed":
        if e.get("suppressed_event") == "kvm_cpu_exec":
            c.loop_iterations += int(e.get("count", 0))
        elif e.get("suppressed_event") == "qemu_cpu_kick":
            c.kicks += int(e.get("count", 0))
    elif name == "vcpu_spin_fast_forward":
        ff_since[thread] = e["t_ns"]
    elif name == "vcpu_spin_resumed":
        c.loop_iterations += int(e.get("skipped_iterations", 0))
        ff_since.pop(thread, None)
    elif name == "qemu_cpu_kick":
        c.kicks += 1
    elif name in ("qemu_wait_io_event_sleep", "qemu_process_cpu_events_sleep"):
        c.sleeps += 1
    elif name == "kvm_run_exit":
        c.exits[str(e.get("hcall") or e.get("reason"))] += 1
