"""Chrome Trace Event export (opens in Perfetto UI and chrome://tracing).

One track (tid) per QEMU thread: the main loop, then every vCPU. Top-level slices are what the thread
was doing (BQL wait, BQL held, halt sleep or another condition wait, KVM_RUN), which never overlap on a
thread; RTAS calls, and in a QEMU trace a BQL holder's waits for other mutexes, are nested in the slice
they started in (clipped to it, so nesting is always proper).
Instant events mark kicks, CPU_INTERRUPT_HARD being set and the watchdog; a counter tracks BQL waiters.
Times are microseconds (`ts`, `dur`), as the format requires, with nanosecond precision.
"""

from __future__ import annotations

from typing import Any

from .timeline import Interval, Timeline

PID = 1
_TOP = ("BQL wait", "BQL held", "cond wait", "KVM_RUN")
_NESTED = ("RTAS", "mutex wait")  # an RTAS call; a QEMU trace's BQL holder waiting for another mutex


def _us(ns: int) -> float:
    return ns / 1000


def _name(iv: Interval) -> str:
    if iv.kind == "cond wait":
        return "halt sleep" if iv.label.startswith("halt_cond") else f"wait {iv.label}"
    if iv.kind == "RTAS":
        return f"RTAS {iv.label}"
    if iv.kind == "mutex wait":
        return f"waiting for mutex {iv.label}"
    return iv.kind


def chrome_trace(timeline: Timeline, process: str = "qemu-system-ppc64 (vcpu_sched)",
                 time_base: str = "guest time") -> dict[str, Any]:
    tids = {thread: i + 1 for i, thread in enumerate(timeline.threads)}
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": process}}]
    for thread, tid in tids.items():
        events.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": thread}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid, "args": {"sort_index": tid}})
    by_thread: dict[str, list[Interval]] = {}
    for iv in timeline.intervals:
        by_thread.setdefault(iv.thread, []).append(iv)
    for thread, intervals in by_thread.items():
        tops = sorted((iv for iv in intervals if iv.kind in _TOP), key=lambda iv: iv.start_ns)
        last_end = -1
        kept: list[Interval] = []
        for iv in tops:
            start = max(iv.start_ns, last_end)
            if start >= iv.end_ns and not (iv.ns == 0 and start == iv.start_ns):
                continue
            kept.append(Interval(iv.thread, iv.kind, start, iv.end_ns, iv.label, iv.open))
            last_end = iv.end_ns
        for iv in kept:
            events.append(_slice(iv, tids[thread]))
        for inner in (iv for iv in intervals if iv.kind in _NESTED):
            parent = next((p for p in kept if p.start_ns <= inner.start_ns < p.end_ns), None)
            if parent is not None:
                clipped = Interval(inner.thread, inner.kind, inner.start_ns, min(inner.end_ns, parent.end_ns),
                                   inner.label, inner.open and inner.end_ns <= parent.end_ns)
                events.append(_slice(clipped, tids[thread]))
    for inst in timeline.instants:
        events.append({"ph": "i", "s": "t", "name": inst.name, "pid": PID, "tid": tids.get(inst.thread, 0),
                       "ts": _us(inst.t_ns), "args": inst.args})
    for t, n in timeline.waiters:
        events.append({"ph": "C", "name": "BQL waiters", "pid": PID, "tid": 0, "ts": _us(t), "args": {"waiters": n}})
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"source": "vcpu_sched", "time_base": time_base}}


def _slice(iv: Interval, tid: int) -> dict[str, Any]:
    args: dict[str, Any] = {"site": iv.label}
    if iv.open:
        args["still_open_at_end"] = True
    return {"ph": "X", "name": _name(iv), "cat": iv.kind, "pid": PID, "tid": tid, "ts": _us(iv.start_ns),
            "dur": _us(iv.ns), "args": args}
