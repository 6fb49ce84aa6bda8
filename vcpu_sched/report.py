"""Human-readable text for a run's result and for an interrupt decision."""

from __future__ import annotations

import dataclasses
import shlex

from .config import RunSettings
from .result import CpuRow, Lockup, RunResult

_FLAGS = {"smp": "--smp", "accel": "--accel", "cpu": "--cpu", "fix": "--fix",
          "timebase_reset": "--timebase-reset", "seed": "--seed", "watchdog_s": "--watchdog",
          "deadline_s": "--deadline", "clock": "--clock"}


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):  # a monitor script, or monitor_delay_ms's [low, high]
        import json

        return json.dumps([list(item) if isinstance(item, tuple) else item for item in value])
    return repr(value) if isinstance(value, int | float) else str(value)


def replay_command(settings: RunSettings, base: RunSettings | None = None) -> str:
    """The command that reruns exactly this run: the scenario, the seed, and every setting that
    differs from the scenario's (`base`; all of them when it is unknown)."""
    words = ["vcpu-sched", "run", settings.scenario]
    reference = base or RunSettings(scenario=settings.scenario)
    for key in (f.name for f in dataclasses.fields(settings)):
        value = getattr(settings, key)
        if key == "scenario" or (value == getattr(reference, key) and key != "seed"):
            continue
        if key in _FLAGS:
            words += [_FLAGS[key], f"{value:g}" if isinstance(value, float) else str(value)]
        elif key == "fast_forward" and value is False:
            words.append("--no-fast-forward")
        else:
            words += ["--set", f"{key}={_toml(value)}"]
    return shlex.join(words)


def lockup_text(lockup: Lockup) -> list[str]:
    lines = [
        f"stuck:      {lockup.stuck_thread} waits for {lockup.waiting_for} in {lockup.wait_site} "
        f"since {lockup.waiting_since_s:.6f} s",
        f"BQL holder: {lockup.bql_holder_thread or 'nobody'} at {lockup.holder_site or '-'}, held for "
        f"{lockup.held_for_s:.6f} s, {lockup.holder_iterations:,} loop iterations",
    ]
    if lockup.main_loop_blocked_s is not None:
        lines.append(f"main loop:  waits for {lockup.main_loop_waits_for or 'the BQL'} for "
                     f"{lockup.main_loop_blocked_s:.6f} s (monitor unresponsive)")
    if lockup.top_threads:
        lines += ["", "top -H (psutil, per-thread CPU over the sampling window):", "      TID  %CPU  COMMAND"]
        lines += [f"  {t['native_id']:>7} {t['cpu_percent']:>5.1f}  {t.get('os_name') or t['name']}"
                  for t in lockup.top_threads]
    lines += ["", *cpu_table(lockup.cpus)]
    lines += ["", "Why:"] + [f"  {i}. {step}" for i, step in enumerate(lockup.chain, 1)]
    return lines


GROUP_ABOVE = 64  # a CPU table with more rows than this groups runs of identical rows


def _cells(r: CpuRow, where: str) -> str:
    ec = "-" if r.psscr_ec is None else str(int(r.psscr_ec))
    return (f"{where:<20} {int(r.halted):<6} {int(r.quiesced):<8} {int(r.hard):<4} "
            f"{ec:<9} {','.join(r.pending) or '-':<8} {r.would_take:<6} {r.lpcr} {r.lpcr_decoded}")


def cpu_table(rows: list[CpuRow]) -> list[str]:
    """The watchdog's CPU table: one row per vCPU, or, past GROUP_ABOVE rows, consecutive vCPUs whose
    rows read the same (a wait on their own halt_cond counting as the same) in one row, as top groups
    what it cannot show: "2-2047  waits halt_cond[i] ... (2046 CPUs)". `--json` keeps every row."""
    groups: list[tuple[str, str]] = []  # (CPU label, the row after it)
    if len(rows) <= GROUP_ABOVE:
        groups = [(str(r.cpu), _cells(r, r.where)) for r in rows]
    else:
        runs: list[tuple[list[CpuRow], str]] = []
        for r in rows:
            cells = _cells(r, r.where.replace(f"[{r.cpu}]", "[i]"))
            if runs and runs[-1][1] == cells and runs[-1][0][-1].cpu + 1 == r.cpu:
                runs[-1][0].append(r)
            else:
                runs.append(([r], cells))
        for run, cells in runs:
            first, last = run[0], run[-1]
            if len(run) == 1:
                groups.append((str(first.cpu), _cells(first, first.where)))
            else:
                groups.append((f"{first.cpu}-{last.cpu}", f"{cells} ({len(run)} CPUs)"))
    width = max([4] + [len(label) for label, _ in groups])
    lines = [f"{'CPU':<{width}} where                halted quiesced HARD PSSCR[EC] pending  takes  LPCR"]
    lines += [f"{label:<{width}} {cells}" for label, cells in groups]
    return lines


def result_text(result: RunResult, base: RunSettings | None = None) -> str:
    s = result.settings
    head = (f"== {result.verdict.upper()}: {result.reason} "
            f"[{s.scenario}: smp={s.smp} accel={s.accel} cpu={s.cpu} fix={s.fix} "
            f"timebase_reset={s.timebase_reset} seed={s.seed}] ==")
    lines = [head, f"cpus online: {result.cpus_online}/{s.maxcpus or s.smp}   "
                   f"guest time: {result.guest_time_s:.6f} s   wall time: {result.wall_time_s:.3f} s"]
    if result.lockup is not None:
        lines += lockup_text(result.lockup)
    elif result.why:
        lines += ["Why:"] + [f"  {i}. {step}" for i, step in enumerate(result.why, 1)]
    if result.verdict != "booted":
        lines.append(f"replay: {replay_command(s, base)}")
    return "\n".join(lines)
