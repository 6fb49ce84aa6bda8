"""`vcpu-sched explore`: search the schedules of a scenario for a lockup, a deadlock or a guest failure.

Strategies over the explore engine (engine/explore_engine.py):
- `random`: N schedules, each seeded (seed, seed+1, ...): at a choice point the running thread keeps
  going, except with probability `preempt` another enabled thread is picked (as in PCT);
- `exhaustive`: depth-first over every schedule within `max_steps` steps and `preemption_bound`
  preemptions (choosing another thread while the running one could go on). Each schedule is replayed
  from the start with the recorded prefix of choices and one changed choice (stateless, like CHESS and
  loom); at a choice point the running thread comes first, then the others by name. A state already
  reached at no greater depth and with no more preemptions is not explored again (`prune`).

Failures are `lockup` (livelock of the BQL holder), `deadlock` and the guest-visible failures; the
shortest failing schedule is kept and can be saved as a schedule file for `vcpu-sched run --replay`.

A search without a failure is a pass only when every schedule ran to its end: one that stopped at the
step bound (or the wall-clock limit) was not searched, so the search is `inconclusive`. The default step
bound is sized from the scenario: twice the steps of its plain run (`plain_run_bound`).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunSettings
from .engine.explore_engine import (
    DEFAULT_MAX_STEPS,
    Choose,
    ExploreEngine,
    Prune,
    Schedule,
    first_enabled,
    pct_chooser,
    random_chooser,
    replay_chooser,
)
from .errors import BadInput, WorkerLost
from .files import atomic_output
from .model.machine import Machine, Tracer
from .pool import local_pool, stop
from .scenario import apply

NOT_FAILURES = ("booted", "completed", "bound", "pruned")
SCHEDULE_FORMAT = "vcpu_sched schedule 1"
WALL_CUT = "wall-clock limit reached"  # the reason of a schedule cut short at the wall-clock limit
EXIT_INCONCLUSIVE = 3  # `vcpu-sched explore`: no failure, but some schedule was not searched to its end
MIN_MAX_STEPS = 2000  # the default step bound is never below this ...
STEP_MARGIN = 2  # ... and otherwise this many times the steps of the scenario's plain run


@dataclass(frozen=True)
class StepBound:
    """The step bound of a search and where it came from."""

    max_steps: int
    source: str  # "--max-steps" (given) or "plain run"
    plain_steps: int | None = None  # the plain run's steps, when the bound was sized from it
    plain_note: str | None = None  # why the plain run ended early (its own cap, the wall-clock limit)

    def describe(self) -> str:
        if self.plain_steps is None:
            return f"{self.max_steps} steps ({self.source})"
        note = f"; the plain run stopped early: {self.plain_note}" if self.plain_note else ""
        return (f"{self.max_steps} steps ({STEP_MARGIN} x the {self.plain_steps} steps of a plain run, at least "
                f"{MIN_MAX_STEPS}{note})")

    def to_dict(self) -> dict[str, Any]:
        return {"max_steps": self.max_steps, "source": self.source, "plain_run_steps": self.plain_steps,
                "plain_run_note": self.plain_note}


def plain_run_bound(settings: RunSettings, wall_deadline: float | None = None) -> StepBound:
    """The default step bound: run the scenario once on the explore engine's non-preemptive schedule (the
    running thread goes on; the first schedule of an exhaustive search) and allow twice its steps, at
    least MIN_MAX_STEPS. Sampled schedules measured within 12 % of the plain run's length on every
    scenario; the margin covers what preemptions add."""
    plain = run_schedule(settings, first_enabled, DEFAULT_MAX_STEPS, wall_deadline=wall_deadline)
    steps = len(plain.steps)
    note = plain.reason if plain.verdict == "bound" else None
    return StepBound(max(MIN_MAX_STEPS, STEP_MARGIN * steps), "plain run", steps, note)


@dataclass
class Exploration:
    strategy: str
    bounds: dict[str, Any]
    settings: RunSettings
    schedules: int = 0
    states: set[str] = field(default_factory=set)
    pruned: int = 0
    bound_hits: int = 0  # schedules that stopped at the step bound
    wall_hits: int = 0  # schedules cut short at the wall-clock limit
    step_bound: StepBound | None = None  # where max_steps came from (set by the caller; None: given)
    outcomes: dict[str, int] = field(default_factory=dict)
    shortest: Schedule | None = None
    wall_s: float = 0.0
    incomplete: str | None = None  # why the search stopped before its bounds were covered
    first_failure_at: int | None = None  # the number (from 1) of the first schedule that failed

    def out_of_time(self, deadline: float | None, limit_s: float | None) -> bool:
        if deadline is not None and time.monotonic() >= deadline:
            self.incomplete = f"wall-clock limit of {limit_s:g} s reached"
        return self.incomplete is not None

    def add(self, outcome: Schedule) -> None:
        self.schedules += 1
        self.states |= outcome.states
        self.outcomes[outcome.verdict] = self.outcomes.get(outcome.verdict, 0) + 1
        self.pruned += outcome.verdict == "pruned"
        self.wall_hits += outcome.verdict == "bound" and outcome.reason == WALL_CUT
        self.bound_hits += outcome.verdict == "bound" and outcome.reason != WALL_CUT
        if outcome.verdict not in NOT_FAILURES:
            if self.first_failure_at is None:
                self.first_failure_at = self.schedules
            if self.shortest is None or len(outcome.steps) < len(self.shortest.steps):
                self.shortest = outcome

    @property
    def inconclusive(self) -> bool:
        """No failure, but not every schedule within the bounds was searched to its end."""
        return self.shortest is None and (self.bound_hits > 0 or self.wall_hits > 0 or self.incomplete is not None)

    @property
    def result(self) -> str:
        return "failure" if self.shortest is not None else "inconclusive" if self.inconclusive else "pass"

    def bound(self) -> StepBound:
        return self.step_bound or StepBound(int(self.bounds["max_steps"]), "given")

    def to_dict(self) -> dict[str, Any]:
        failure = None
        if self.shortest is not None:
            failure = {"kind": self.shortest.verdict, "reason": self.shortest.reason,
                       "steps": len(self.shortest.steps), "schedule": self.shortest.choices,
                       "holder": self.shortest.holder, "lasso": None}
            lasso = self.shortest.lasso()
            if lasso is not None:
                stem, cycle = lasso
                failure["lasso"] = {"stem_steps": len(stem), "cycle_steps": cycle,
                                    "cycle": [f"{self.shortest.steps[i - 1].thread}: {self.shortest.steps[i - 1].what}"
                                              for i in cycle]}
        return {"strategy": self.strategy, "bounds": self.bounds, "settings": self.settings.to_dict(),
                "schedules": self.schedules, "states": len(self.states), "pruned": self.pruned,
                "bound_hits": self.bound_hits, "wall_hits": self.wall_hits, "step_bound": self.bound().to_dict(),
                "result": self.result, "inconclusive": self.inconclusive,
                "outcomes": self.outcomes, "failure": failure,
                "first_failure_at": self.first_failure_at,
                "wall_time_s": self.wall_s, "complete": self.incomplete is None, "incomplete": self.incomplete}


def run_schedule(settings: RunSettings, choose: Choose, max_steps: int, tracer: Tracer | None = None,
                 prune: Prune | None = None, prune_from: int = 0,
                 wall_deadline: float | None = None, symmetry: bool = False, sleep_sets: bool = False) -> Schedule:
    """One schedule on the explore engine (cut short, as `bound`, at the monotonic `wall_deadline`)."""
    machine = Machine(settings, tracer) if tracer is not None else Machine(settings)
    schedule = ExploreEngine(machine, choose, max_steps, prune, prune_from, track_states=True,
                             wall_deadline=wall_deadline, symmetry=symmetry, sleep_sets=sleep_sets).run().schedule
    assert isinstance(schedule, Schedule)
    return schedule


def sampled_schedules(settings: RunSettings, strategy: str, seeds: list[int], preempt: float, depth: int,
                      steps: int, max_steps: int, deadline: float | None) -> list[Schedule]:
    """One task of a random or PCT search: the schedules of these seeds, in order (stops at `deadline`,
    a time.monotonic value, which is the same clock in every process of this machine)."""
    out = []
    for seed in seeds:
        if deadline is not None and time.monotonic() >= deadline:
            break
        choose = random_chooser(seed, preempt) if strategy == "random" else pct_chooser(seed, depth, steps)
        out.append(run_schedule(settings, choose, max_steps, wall_deadline=deadline))
    return out


def explore_random(settings: RunSettings, seeds: int, preempt: float, max_steps: int,
                   progress: Callable[[int, int], None] | None = None,
                   wall_limit_s: float | None = None, strategy: str = "random", depth: int = 3,
                   jobs: int | None = 1, plain_steps: int | None = None,
                   wall_deadline: float | None = None) -> Exploration:
    """`seeds` schedules from seeds settings.seed onwards, randomly preempted (`random`) or by PCT with
    `depth`; in batches on `jobs` worker processes when more than one. The report does not depend on
    `jobs`: the schedules are added in seed order. `plain_steps`: the length of the default schedule, when
    already known (within `max_steps`); `wall_deadline`: when the `wall_limit_s` counted from earlier ends
    (time.monotonic)."""
    bounds: dict[str, Any] = {"seeds": seeds, "max_steps": max_steps}
    bounds |= {"preempt": preempt} if strategy == "random" else {"depth": depth}
    report = Exploration(strategy, bounds, settings)
    start = time.perf_counter()
    deadline = _deadline(wall_limit_s, wall_deadline)
    # PCT spreads its change points over a schedule's length: that of the default (non-preemptive) one.
    steps = 0
    if strategy == "pct":
        steps = min(plain_steps, max_steps) if plain_steps is not None else \
            len(run_schedule(settings, first_enabled, max_steps).steps)
    all_seeds = list(range(settings.seed, settings.seed + seeds))
    workers = jobs or os.cpu_count() or 1
    size = max(1, min(200, seeds // (workers * 4) or 1)) if workers > 1 else max(1, seeds)
    work = [all_seeds[i:i + size] for i in range(0, len(all_seeds), size)]
    results: list[list[Schedule] | None] = [None] * len(work)
    done = 0
    try:
        if workers == 1:
            for i, batch in enumerate(work):
                for seed in batch:
                    results[i] = (results[i] or []) + sampled_schedules(settings, strategy, [seed], preempt, depth,
                                                                        steps, max_steps, deadline)
                    done += 1
                    if progress:
                        progress(done, seeds)
        else:
            executor = local_pool(workers)
            try:
                futures = {executor.submit(sampled_schedules, settings, strategy, batch, preempt, depth, steps,
                                           max_steps, deadline): i for i, batch in enumerate(work)}
                for future in concurrent.futures.as_completed(futures):
                    try:
                        results[futures[future]] = future.result()
                    except BrokenProcessPool:
                        raise WorkerLost("explore: a worker process died (killed, out of memory?)") from None
                    done += len(work[futures[future]])
                    if progress:
                        progress(done, seeds)
            finally:
                stop(executor)
    except KeyboardInterrupt:
        report.incomplete = "interrupted (Ctrl-C)"
    for batch_result in results:
        for outcome in batch_result or []:
            report.add(outcome)
    if report.incomplete is None and (report.schedules < seeds or report.wall_hits):
        report.incomplete = f"wall-clock limit of {wall_limit_s:g} s reached"
    report.wall_s = time.perf_counter() - start
    return report


def explore_exhaustive(settings: RunSettings, max_steps: int, preemption_bound: int, prune: bool = True,
                       progress: Callable[[int, int], None] | None = None,
                       max_schedules: int = 1_000_000, wall_limit_s: float | None = None,
                       symmetry: bool = False, delays: bool = False, sleep_sets: bool = False,
                       wall_deadline: float | None = None) -> Exploration:
    """Every schedule within `max_steps` and `preemption_bound` preemptions (or, with `delays`, that many
    delays of a round-robin scheduler), depth-first, replayed from the start with a prefix of choices.
    `wall_deadline`: when the `wall_limit_s` counted from earlier ends (time.monotonic)."""
    bound_name = "delay_bound" if delays else "preemption_bound"
    report = Exploration("delay" if delays else "exhaustive", {"max_steps": max_steps, bound_name: preemption_bound,
                                                               "prune": prune, "symmetry": symmetry,
                                                               "sleep_sets": sleep_sets}, settings)
    visited: dict[str, tuple[int, int]] = {}
    visited_asleep: dict[str, list[tuple[int, int, frozenset[str]]]] = {}
    siblings: dict[tuple[int, ...], dict[str, frozenset[str]]] = {}

    def seen_before(state: str, depth: int, preemptions: int, sleep: frozenset[str]) -> bool:
        if sleep_sets:  # a state is covered only by a visit that had no more threads asleep (Godefroid)
            entries = visited_asleep.setdefault(state, [])
            if any(d <= depth and p <= preemptions and s <= sleep for d, p, s in entries):
                return True
            entries.append((depth, preemptions, sleep))
            return False
        old = visited.get(state)
        if old is not None and old[0] <= depth and old[1] <= preemptions:
            return True
        visited[state] = (min(depth, old[0]) if old else depth, min(preemptions, old[1]) if old else preemptions)
        return False

    start = time.perf_counter()
    deadline = _deadline(wall_limit_s, wall_deadline)
    prefix: list[int] | None = []
    try:
        while prefix is not None and report.schedules < max_schedules:
            if report.out_of_time(deadline, wall_limit_s):
                break
            chooser = _PrefixChooser(prefix, round_robin=delays, siblings=siblings if sleep_sets else None)
            outcome = run_schedule(settings, chooser, max_steps, prune=seen_before if prune else None,
                                   prune_from=len(prefix), wall_deadline=deadline, symmetry=symmetry,
                                   sleep_sets=sleep_sets)
            report.add(outcome)
            if progress:
                progress(report.schedules, 0)
            prefix = _next_prefix(chooser.record, preemption_bound, delays)
            if (prefix is not None or outcome.reason == WALL_CUT) and report.out_of_time(deadline, wall_limit_s):
                break  # the time is up: more schedules to go, or this one was cut short
        if prefix is not None and report.incomplete is None:
            report.incomplete = f"stopped at {max_schedules:,} schedules"
    except KeyboardInterrupt:
        report.incomplete = "interrupted (Ctrl-C)"
    report.wall_s = time.perf_counter() - start
    return report


def _deadline(wall_limit_s: float | None, wall_deadline: float | None) -> float | None:
    """When a search stops: at `wall_deadline` if given (a limit that began before the search: the plain
    run that sized its step bound counts too), else `wall_limit_s` from now."""
    if wall_deadline is not None:
        return wall_deadline
    return None if wall_limit_s is None else time.monotonic() + wall_limit_s


class _PrefixChooser:
    """Follows a prefix of choice indices, then the default (the running thread goes on), recording every
    choice point as (ordered alternatives, index taken, whether the running thread could have gone on).
    `round_robin`: the alternatives in thread order from the running one (delay bounding: index k is k
    delays of that deterministic scheduler); otherwise the running thread, then the others by name."""

    def __init__(self, prefix: list[int], round_robin: bool = False,
                 siblings: dict[tuple[int, ...], dict[str, frozenset[str]]] | None = None) -> None:
        self.prefix = prefix
        self.round_robin = round_robin
        self.record: list[tuple[list[str], int, bool]] = []
        self._siblings = siblings  # sleep sets: choice point (the indices that lead to it) -> explored steps

    def __call__(self, names: list[str], current: str | None) -> str:
        if self.round_robin:
            start = names.index(current) if current in names else 0  # names come in thread order
            ordered = names[start:] + names[:start]
        else:
            ordered = ([current] if current in names else []) + sorted(n for n in names if n != current)
        i = len(self.record)
        index = self.prefix[i] if i < len(self.prefix) else 0
        self.record.append((ordered, index, current in names))
        return ordered[index]

    def _node(self) -> tuple[int, ...]:
        return tuple(i for _, i, _ in self.record[:-1])

    def siblings(self) -> dict[str, frozenset[str]]:
        """The alternatives taken before this one at the last choice point, with their steps' footprints."""
        if self._siblings is None:
            return {}
        ordered, index, _ = self.record[-1]
        explored = self._siblings.get(self._node(), {})
        return {t: explored[t] for t in ordered[:index] if t in explored}

    def explored(self, footprint: frozenset[str]) -> None:
        if self._siblings is not None:
            ordered, index, _ = self.record[-1]
            self._siblings.setdefault(self._node(), {})[ordered[index]] = footprint


def _next_prefix(record: list[tuple[list[str], int, bool]], bound: int, delays: bool = False) -> list[int] | None:
    """The deepest choice point with an untried alternative within the bound: preemptions (a switch away
    from a thread that could go on), or with `delays` the sum of the indices taken (Emmi, Qadeer and
    Rakamaric's delay bounding, POPL 2011)."""
    for j in range(len(record) - 1, -1, -1):
        ordered, index, preemptive = record[j]
        if index + 1 >= len(ordered):
            continue
        if delays:
            if sum(i for _, i, _ in record[:j]) + index + 1 > bound:
                continue
        else:
            used = sum(1 for o, i, p in record[:j] if i > 0 and p)
            if used + (1 if preemptive else 0) > bound:
                continue
        return [i for _, i, _ in record[:j]] + [index + 1]
    return None


# --- schedule files ---------------------------------------------------------------------------------

def save_schedule(path: str | Path, settings: RunSettings, outcome: Schedule) -> None:
    data = {"format": SCHEDULE_FORMAT, "settings": settings.to_dict(), "choices": outcome.choices,
            "verdict": outcome.verdict, "reason": outcome.reason, "steps": len(outcome.steps)}
    with atomic_output("--save", path) as out:
        out.write(json.dumps(data, indent=1) + "\n")


def load_schedule(path: str | Path) -> tuple[RunSettings, list[str], dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise BadInput(f"--replay {path}: cannot read: {e.strerror}") from None
    except ValueError:
        raise BadInput(f"--replay {path}: not a schedule file (not JSON)") from None
    if not isinstance(data, dict) or data.get("format") != SCHEDULE_FORMAT:
        raise BadInput(f"--replay {path}: not a schedule file (format is not {SCHEDULE_FORMAT!r})")
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise BadInput(f"--replay {path}: choices: must be a list of thread names")
    steps = data.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= 10_000_000:
        raise BadInput(f"--replay {path}: steps: must be a whole number of steps, not {steps!r}")
    if data.get("verdict") is not None and not isinstance(data["verdict"], str):
        raise BadInput(f"--replay {path}: verdict: must be a verdict name, not {data['verdict']!r}")
    raw = data.get("settings")
    if not isinstance(raw, dict):
        raise BadInput(f"--replay {path}: settings: must be a table")
    raw = {k: v for k, v in raw.items() if k != "scenario"}
    settings = apply(RunSettings(scenario=str(data["settings"].get("scenario", "replay"))), raw,
                     f"--replay {path}: settings")
    return settings, choices, data


def replay(settings: RunSettings, choices: list[str], max_steps: int,
           tracer: Callable[[str, int, dict[str, Any]], None] | None = None) -> Schedule:
    try:
        return run_schedule(settings, replay_chooser(choices), max_steps, tracer)
    except ValueError as e:
        raise BadInput(f"--replay: {e}") from None


def trace_text(outcome: Schedule) -> str:
    """One line per step: which thread did what (and the model events of the step)."""
    lines = []
    for i, step in enumerate(outcome.steps, 1):
        events = [e for e in step.events if not e.startswith("qemu_mutex") and not e.startswith("qemu_cond")]
        detail = f"  [{', '.join(dict.fromkeys(events))}]" if events else ""
        lines.append(f"{i:>5}  {step.thread:<11} {step.what}{detail}")
    return "\n".join(lines)


class ExploreProgress:
    """Progress on stderr: a bar for random schedules, a running count for exhaustive search."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.count = 0

    def step(self, done: int, total: int) -> None:
        self.count = done
        now = time.monotonic()
        if now - self.last < (0.1 if self.tty else 5.0) and done != total:
            return
        self.last = now
        if total:
            filled = 30 * done // total
            text = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} schedules"
        else:
            text = f"explored {done} schedules"
        sys.stderr.write(f"\r{text}" if self.tty else f"{text}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.count:
            sys.stderr.write("\n")


def explore_text(report: Exploration, saved: str | None) -> str:
    s = report.settings
    bounds = ", ".join(f"{k}={v}" for k, v in report.bounds.items())
    wall_cut = f", {report.wall_hits} cut at the wall-clock limit" if report.wall_hits else ""
    lines = [f"explore {s.scenario}: smp={s.smp} accel={s.accel} cpu={s.cpu} fix={s.fix} "
             f"timebase_reset={s.timebase_reset}; {report.strategy} ({bounds})",
             f"step bound: {report.bound().describe()}",
             f"{report.schedules} schedules, {len(report.states)} distinct states, {report.pruned} cut at a "
             f"visited state, {report.bound_hits} at the step bound{wall_cut}, {report.wall_s:.1f} s",
             "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items()))]
    if report.incomplete:
        lines.append(f"INCOMPLETE: {report.incomplete}; the schedules above are all that was searched")
    failure = report.shortest
    if failure is None:
        if not report.inconclusive:
            lines.append("no failure within the bounds: every schedule ran to its end")
            return "\n".join(lines)
        why = []
        if report.bound_hits:
            why.append(f"{report.bound_hits} of {report.schedules} schedules stopped at the step bound of "
                       f"{report.bound().max_steps} (raise --max-steps)")
        if report.incomplete:
            why.append(f"the search stopped early ({report.incomplete})")
        elif report.wall_hits:
            why.append(f"{report.wall_hits} schedules were cut at the wall-clock limit (raise --wall-limit)")
        lines.append("INCONCLUSIVE: no failure found, but " + "; ".join(why) + ": what they did not reach was "
                     "not searched")
        return "\n".join(lines)
    lines += ["", f"first failure: schedule {report.first_failure_at} of {report.schedules}",
              f"shortest failing schedule: {failure.verdict} after {len(failure.steps)} steps "
              f"({len(failure.choices)} choices): {failure.reason}", trace_text(failure)]
    lasso = failure.lasso()
    if lasso is not None:
        stem, cycle = lasso
        lines += ["", f"as a lasso: the other {len(stem)} steps lead to it (each happens once); then this cycle "
                      "repeats forever:"]
        lines += [f"{i:>5}  {failure.steps[i - 1].thread:<11} {failure.steps[i - 1].what}" for i in cycle]
    if saved:
        lines += ["", f"saved: {saved}  (replay: vcpu-sched run --replay {saved})"]
    return "\n".join(lines)
