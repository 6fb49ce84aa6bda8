"""`vcpu-sched analyze LOG`: who held the BQL, since when, who waited, what each vCPU did.

The lockup signature, of a log whose verdict is a lockup (or that has none: a killed run), is read from the
events alone: at the end of the log a thread holds the BQL while it keeps going round its loop and other
threads wait for it. The causal chain is explain.py's, from the
log's events - the same code as the watchdog's, fed the same events - and is set beside the watchdog's
when the log has it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..explain import Wait, chain, cpu_of_thread, failure_chain
from ..verdicts import FAILURE_KINDS
from .bqlstats import Durations
from .logread import Log
from .timeline import Timeline, build

NS = 1_000_000_000
HANG_VERDICTS = ("lockup", "deadlock")  # the watchdog's; the explorer's


@dataclass
class ThreadSummary:
    bql_hold: Durations = field(default_factory=Durations)
    bql_wait: Durations = field(default_factory=Durations)
    loop_iterations: int = 0
    kicks: int = 0
    sleeps: int = 0
    exits: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"bql_hold": self.bql_hold.to_dict(), "bql_wait": self.bql_wait.to_dict(),
                "loop_iterations": self.loop_iterations, "kicks": self.kicks, "sleeps": self.sleeps,
                "exits": dict(sorted(self.exits.items()))}


def _per_thread(timeline: Timeline) -> dict[str, ThreadSummary]:
    out = {}
    bql = timeline.bql
    for thread in timeline.threads:
        c = timeline.counts[thread]
        out[thread] = ThreadSummary(bql.holds.get(thread) or Durations(), bql.waits.get(thread) or Durations(),
                                    loop_iterations=c.loop_iterations, kicks=c.kicks, sleeps=c.sleeps,
                                    exits=c.exits)
    return out


def _longest_hold(timeline: Timeline) -> dict[str, Any] | None:
    longest = timeline.bql.longest
    if longest is None:
        return None
    waits = timeline.bql.longest_waits
    return {"thread": longest.thread, "start_s": longest.start_ns / NS, "held_s": longest.ns / NS,
            "ongoing": longest.open, "site": longest.label,
            "waiters": [{"thread": w.thread, "since_s": w.start_ns / NS, "site": w.label} for w in waits]}


def _signature(log: Log, timeline: Timeline, threads: dict[str, ThreadSummary]) -> dict[str, Any] | None:
    """A thread holding the BQL at the end, iterating, while others wait: the livelock of this family."""
    holding = [iv for iv in timeline.intervals if iv.kind == "BQL held" and iv.open]
    waiting = [iv for iv in timeline.intervals if iv.kind == "BQL wait" and iv.open]
    if not holding or not waiting:
        return None
    held = holding[0]
    if threads[held.thread].loop_iterations == 0:
        return None
    boot = next((w for w in waiting if w.thread.startswith("CPU 0/")), waiting[0])
    facts = timeline.facts
    stuck = facts.waits.get(boot.thread, Wait(boot.thread, "BQL", boot.label, boot.start_ns))
    iterations = threads[held.thread].loop_iterations
    why = chain(facts, stuck, held.thread, cpu_of_thread(held.thread), held.start_ns, held.label, iterations,
                log.end_ns, facts.waits.get("main"))
    return {"holder": held.thread, "holder_cpu": cpu_of_thread(held.thread), "held_since_s": held.start_ns / NS,
            "held_for_s": held.ns / NS, "holder_iterations": iterations,
            "stuck": boot.thread, "stuck_cpu": cpu_of_thread(boot.thread), "stuck_since_s": stuck.since_ns / NS,
            "stuck_site": stuck.site, "waiters": [w.thread for w in waiting], "chain": why}


def _wait_signature(log: Log, timeline: Timeline) -> dict[str, Any] | None:
    """No thread spins with the BQL: the boot CPU or the main loop blocked at the end on something else
    (run_on_cpu work that never runs, an RCU grace period), explained by the same chain."""
    facts = timeline.facts
    watched = [w for t, w in facts.waits.items() if t.startswith("CPU 0/")] + [facts.waits[t] for t in ("main",)
                                                                               if t in facts.waits]
    stuck = next((w for w in watched if w.what != "BQL"), None)
    if stuck is None:
        return None
    bql = facts.holder  # a thread may hold the BQL while it waits (main in cpu_list_add, in a vCPU ioctl)
    if bql is None:
        why = chain(facts, stuck, None, None, 0, "", 0, log.end_ns, facts.waits.get("main"))
    else:
        why = chain(facts, stuck, bql.thread, cpu_of_thread(bql.thread), bql.since_ns, bql.site, 0, log.end_ns,
                    facts.waits.get("main"))
    return {"holder": None, "holder_cpu": None, "stuck": stuck.thread, "stuck_cpu": cpu_of_thread(stuck.thread),
            "stuck_since_s": stuck.since_ns / NS, "stuck_site": stuck.site, "waiting_for": stuck.what,
            "bql_held_by": bql.thread if bql is not None else None, "waiters": [], "chain": why}


def summarise(log: Log, timeline: Timeline | None = None) -> dict[str, Any]:
    """The summary of a log; pass its timeline if it is already built."""
    timeline = timeline if timeline is not None else build(log)
    threads = _per_thread(timeline)
    end = log.end
    verdict = end.get("verdict") if end else None
    watchdog = end.get("lockup") if end else None
    suppressed = timeline.suppressed
    # Only a hang has a signature: at the end of another verdict's run a thread may still be blocked, as it
    # was when the run stopped (a log without a verdict, a killed run, may be a hang: its events tell).
    signature = (_signature(log, timeline, threads) or _wait_signature(log, timeline)
                 if verdict in HANG_VERDICTS or verdict is None else None)
    agreement = None
    if signature is not None and isinstance(watchdog, dict):
        agreement = (watchdog.get("bql_holder") == signature["holder_cpu"]
                     and watchdog.get("stuck_cpu") == signature["stuck_cpu"])
    return {
        "log": log.path, "events": log.count, "settings": log.settings,
        "complete": not log.truncated,
        "ends_at": {"line": log.last_line, "t_s": log.end_ns / NS, "last_event": log.last_event},
        "corrupt_lines": log.corrupt_lines, "suppressed_events": suppressed,
        "corrupt": [{"line": n, "why": why} for n, why in log.corrupt[:100]],
        "verdict": verdict, "reason": end.get("reason") if end else "log truncated: the run did not finish",
        "threads": {t: s.to_dict() for t, s in threads.items()},
        "longest_hold": _longest_hold(timeline),
        "rtas": timeline.rtas,
        "lockup_signature": signature,
        "watchdog": {"stuck_cpu": watchdog.get("stuck_cpu"), "bql_holder": watchdog.get("bql_holder"),
                     "chain": watchdog.get("chain")} if isinstance(watchdog, dict) else None,
        "agrees_with_watchdog": agreement,
        "failure_chain": failure_chain(timeline.facts) if verdict in FAILURE_KINDS else [],
    }


def summary_text(s: dict[str, Any]) -> str:
    lines = [f"log: {s['log']} ({s['events']:,} events, "
             + ((f"complete, but the run was cut short: {s['reason']})" if s["verdict"] is None else "complete)")
                if s["complete"] else
                f"TRUNCATED: ends at line {s['ends_at']['line']}, t={s['ends_at']['t_s']:.6f} s, "
                f"last event {s['ends_at']['last_event']})")]
    if s["corrupt_lines"]:
        shown = ", ".join(map(str, s["corrupt_lines"][:10])) + (" ..." if len(s["corrupt_lines"]) > 10 else "")
        lines.append(f"corrupt lines: {len(s['corrupt_lines'])} (line {shown})")
        lines += [f"  line {c['line']}: {c['why']}" for c in s["corrupt"][:10]]
    st = s["settings"]
    lines.append(f"run: {st.get('scenario')} smp={st.get('smp')} accel={st.get('accel')} cpu={st.get('cpu')} "
                 f"fix={st.get('fix')} timebase_reset={st.get('timebase_reset')} seed={st.get('seed')}")
    lines.append(f"verdict: {s['verdict'] or 'none'} ({s['reason']})")
    if s["suppressed_events"]:
        lines.append(f"suppressed (summarised) events: {s['suppressed_events']:,}")
    lines += ["", "thread        BQL holds  total s   max s      p99 s    | waits  total s   max s      p99 s    "
                  "| loop iter   kicks sleeps exits"]
    for thread, t in s["threads"].items():
        h, w = t["bql_hold"], t["bql_wait"]
        exits = " ".join(f"{k}={v}" for k, v in t["exits"].items())
        lines.append(f"{thread:<13} {h['count']:>9} {h['total_s']:>9.6f} {h['max_s']:>9.6f} {h['p99_s']:>9.6f} "
                     f"| {w['count']:>5} {w['total_s']:>9.6f} {w['max_s']:>9.6f} {w['p99_s']:>9.6f} "
                     f"| {t['loop_iterations']:>11,} {t['kicks']:>5} {t['sleeps']:>6} {exits}")
    hold = s["longest_hold"]
    if hold:
        who = ", ".join(f"{w['thread']} (since {w['since_s']:.6f} s)" for w in hold["waiters"]) or "nobody"
        lines += ["", f"longest hold: {hold['thread']} for {hold['held_s']:.6f} s from {hold['start_s']:.6f} s"
                      f"{' (still held at the end)' if hold['ongoing'] else ''} at {hold['site']}; waited: {who}"]
    if s["rtas"]:
        lines += ["", f"RTAS calls ({len(s['rtas'])}):"]
        lines += [f"  {c['t_s']:.6f} s CPU {c['cpu']} {c['call']}({c['args']}) -> {c['rets']}" for c in s["rtas"][:64]]
        if len(s["rtas"]) > 64:
            lines.append(f"  ... {len(s['rtas']) - 64} more")
    sig = s["lockup_signature"]
    if sig and sig["holder"] is None:
        lines += ["", f"LOCKUP SIGNATURE: {sig['stuck']} blocked since {sig['stuck_since_s']:.6f} s, waiting for "
                      f"{sig['waiting_for']} at {sig['stuck_site']}; "
                      + (f"{sig['bql_held_by']} holds the BQL" if sig.get("bql_held_by") else "nobody holds the BQL")]
        lines += [f"  {i}. {step}" for i, step in enumerate(sig["chain"], 1)]
    elif sig:
        lines += ["", f"LOCKUP SIGNATURE: {sig['holder']} holds the BQL since {sig['held_since_s']:.6f} s "
                      f"({sig['held_for_s']:.6f} s, {sig['holder_iterations']:,} loop iterations) while "
                      f"{', '.join(sig['waiters'])} wait; stuck: {sig['stuck']} since {sig['stuck_since_s']:.6f} s"]
        lines += [f"  {i}. {step}" for i, step in enumerate(sig["chain"], 1)]
    if s["watchdog"]:
        lines += ["", f"watchdog (from the log): stuck CPU {s['watchdog']['stuck_cpu']}, "
                      f"BQL holder CPU {s['watchdog']['bql_holder']}; "
                      + ("the analysis agrees" if s["agrees_with_watchdog"] else "the analysis DISAGREES")]
        lines += [f"  {i}. {step}" for i, step in enumerate(s["watchdog"]["chain"] or [], 1)]
    if s["failure_chain"]:
        lines += ["", f"GUEST FAILURE: {s['verdict']}"]
        lines += [f"  {i}. {step}" for i, step in enumerate(s["failure_chain"], 1)]
    return "\n".join(lines)
