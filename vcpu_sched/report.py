"""Human-readable text for a run's result and for an interrupt decision."""

from __future__ import annotations

import shlex

from .config import RunSettings
from .result import Lockup, RunResult

_FLAGS = {"smp": "--smp", "accel": "--accel", "cpu": "--cpu", "fix": "--fix",
          "timebase_reset": "--timebase-reset", "seed": "--seed", "watchdog_s": "--watchdog"}


def replay_command(settings: RunSettings, base: RunSettings | None = None) -> str:
    """The command that reruns exactly this run (scenario plus every setting that differs from it)."""
    words = ["vcpu-sched", "run", settings.scenario]
    for key, flag in _FLAGS.items():
        value = getattr(settings, key)
        if key == "seed" or base is None or value != getattr(base, key):
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if not settings.fast_forward:
        words.append("--no-fast-forward")
    return shlex.join(words)


def lockup_text(lockup: Lockup) -> list[str]:
    lines = [
        f"stuck:      {lockup.stuck_thread} waits for {lockup.waiting_for} in {lockup.wait_site} "
        f"since {lockup.waiting_since_s:.6f} s",
        f"BQL holder: {lockup.bql_holder_thread or 'nobody'} at {lockup.holder_site or '-'}, held for "
        f"{lockup.held_for_s:.6f} s, {lockup.holder_iterations:,} loop iterations",
    ]
    if lockup.main_loop_blocked_s is not None:
        lines.append(f"main loop:  waits for the BQL for {lockup.main_loop_blocked_s:.6f} s (monitor unresponsive)")
    lines += ["", "CPU  where                halted quiesced HARD PSSCR[EC] pending  takes  LPCR"]
    for r in lockup.cpus:
        ec = "-" if r.psscr_ec is None else str(int(r.psscr_ec))
        lines.append(f"{r.cpu:<4} {r.where:<20} {int(r.halted):<6} {int(r.quiesced):<8} {int(r.hard):<4} "
                     f"{ec:<9} {','.join(r.pending) or '-':<8} {r.would_take:<6} {r.lpcr} {r.lpcr_decoded}")
    lines += ["", "Why:"] + [f"  {i}. {step}" for i, step in enumerate(lockup.chain, 1)]
    return lines


def result_text(result: RunResult, base: RunSettings | None = None) -> str:
    s = result.settings
    head = (f"== {result.verdict.upper()}: {result.reason} "
            f"[{s.scenario}: smp={s.smp} accel={s.accel} cpu={s.cpu} fix={s.fix} "
            f"timebase_reset={s.timebase_reset} seed={s.seed}] ==")
    lines = [head, f"cpus online: {result.cpus_online}/{s.smp}   guest time: {result.guest_time_s:.6f} s   "
                   f"wall time: {result.wall_time_s:.3f} s"]
    if result.lockup is not None:
        lines += lockup_text(result.lockup)
    if result.verdict != "booted":
        lines.append(f"replay: {replay_command(s, base)}")
    return "\n".join(lines)
