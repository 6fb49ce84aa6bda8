"""From events to intervals: what each thread was doing when, the shared input of summary, trace and plot.

Interval kinds per thread: `BQL wait` (qemu_mutex_lock -> qemu_mutex_locked), `BQL held`
(qemu_mutex_locked -> qemu_mutex_unlock), `cond wait` (qemu_cond_wait -> qemu_cond_woken; the halt
sleep when the condition is halt_cond), `KVM_RUN` (kvm_vcpu_ioctl_run -> kvm_run_exit) and `RTAS`
(rtas_call -> rtas_return). Intervals still open when the log ends are closed at its end and marked
`open`. Unpaired events (a suppressed or truncated partner) are skipped, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .logread import Log

_OPENERS = {"qemu_mutex_lock": "BQL wait", "qemu_mutex_locked": "BQL held", "qemu_cond_wait": "cond wait",
            "kvm_vcpu_ioctl_run": "KVM_RUN", "rtas_call": "RTAS"}
_CLOSERS = {"qemu_mutex_locked": "BQL wait", "qemu_mutex_unlock": "BQL held", "qemu_cond_woken": "cond wait",
            "kvm_run_exit": "KVM_RUN", "rtas_return": "RTAS"}


@dataclass
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


@dataclass
class Instant:
    thread: str
    name: str
    t_ns: int
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timeline:
    threads: list[str]
    intervals: list[Interval]
    instants: list[Instant]
    waiters: list[tuple[int, int]]  # (t_ns, number of threads waiting for the BQL) at each change
    online: dict[str, int]  # thread -> guest time it was started (spapr_cpu_set_entry_state)
    end_ns: int


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


def build(log: Log) -> Timeline:
    accel = str(log.settings.get("accel", "kvm"))
    smp = log.settings.get("smp", 0)
    threads = ["main"] + [f"CPU {i}/{accel.upper()}" for i in range(smp if isinstance(smp, int) else 0)]
    opened: dict[tuple[str, str], tuple[int, str]] = {}
    intervals: list[Interval] = []
    instants: list[Instant] = []
    waiting: set[str] = set()
    waiters: list[tuple[int, int]] = [(0, 0)]
    online: dict[str, int] = {}
    for e in log.events:
        name, t = e["event"], e["t_ns"]
        thread = thread_of(e, accel)
        if thread is None:
            if name == "watchdog_fired":
                instants.append(Instant("main", "watchdog fired", t, {"holder": e.get("holder")}))
            continue
        if thread not in threads:
            threads.append(thread)
        kind = _CLOSERS.get(name)
        if kind is not None:
            began = opened.pop((thread, kind), None)
            if began is not None:
                intervals.append(Interval(thread, kind, began[0], t, began[1]))
        kind = _OPENERS.get(name)
        if kind is not None:
            opened[(thread, kind)] = (t, str(e.get("cond") or e.get("site") or e.get("call") or ""))
        if name == "qemu_mutex_lock" and e.get("owner") is not None:
            waiting.add(thread)
            waiters.append((t, len(waiting)))
        elif name == "qemu_mutex_locked" and thread in waiting:
            waiting.discard(thread)
            waiters.append((t, len(waiting)))
        elif name == "qemu_cpu_kick":
            instants.append(Instant(thread, "kick", t, {"by": e.get("by")}))
        elif name == "ppc_maybe_interrupt" and e.get("hard") and not e.get("hard_before"):
            instants.append(Instant(thread, f"HARD set ({e.get('interrupt')})", t, {"rule": e.get("rule")}))
        elif name == "spapr_cpu_set_entry_state":
            online[thread] = t
    end = log.end_ns
    for (thread, kind), (began_ns, label) in opened.items():
        intervals.append(Interval(thread, kind, began_ns, end, label, open=True))
    # A BQL wait that was never contended (lock and locked at the same instant) is no wait at all.
    intervals = [iv for iv in intervals if iv.kind != "BQL wait" or iv.ns > 0 or iv.open]
    intervals.sort(key=lambda iv: (iv.thread, iv.start_ns, -iv.end_ns))
    return Timeline(threads, intervals, instants, waiters, online, end)
