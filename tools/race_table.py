#!/usr/bin/env python3
"""How fast each search strategy finds the races of the corpus: 50 searches each (search j tries schedule
seeds 1000j+1, 1000j+2, ... up to --schedules), the number of the first failing schedule, with random
schedules (preempt 0.1) and PCT of depth 1 to 3; and where delay bounding's one deterministic enumeration
first fails. Written between markers in docs/races.md.

    .venv/bin/python tools/race_table.py [--write] [--searches N] [--schedules N] [--jobs N]
    .venv/bin/python tools/race_table.py --exhaustive [--write] [--max-bound N] [--wall-limit S]

About 30 minutes on 2 cores. Every cell is a count; tests/test_docs.py checks the block is intact.

--exhaustive: the exhaustive (preemption-bounded) search of each race instead, as `vcpu-sched explore
--strategy exhaustive` runs it (the step bound sized by a plain run, pruning at visited states on, sleep
sets and symmetry off), at preemption bound 0, then 1, ... up to --max-bound, stopping at the first
bound that finds a failure; one search at a time, so that the wall times are of one core. Block
`race-exhaustive`; about 6 minutes on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docgen

from vcpu_sched.engine.explore_engine import Choose, pct_chooser, random_chooser
from vcpu_sched.explore import NOT_FAILURES, Exploration, explore_exhaustive, plain_run_bound, run_schedule
from vcpu_sched.scenario import apply, load

PAGE = docgen.DOCS / "races.md"
MAX_STEPS = 4000
SMP = 2
DELAY_SCHEDULES = 300  # the delay-bounding enumeration is cut here
STOP_RACE = {"monitor": [["smp: Brought up", "migrate -d file:/tmp/vm.mig"], ["", "stop"]]}
# The races: (scenario, label, the overrides of the scenario's settings), each on 2 vCPUs
RACES: list[tuple[str, str, dict[str, Any]]] = [
    ("migration-pause-race", "f962cac4c2: a reset racing the migration's stop (TCG)", {"vm_stop_fix": False}),
    ("migration-pause-race", "96bce6831b: `stop` racing the migration's stop (TCG)",
     {"vm_stop_fix": False, "pause_cond_broadcast": False, **STOP_RACE}),
    ("spapr-guest-reboot", "0ec7e6779f: a guest reboot's vCPU running on into the reset (KVM)",
     {"stop_current_fix": False}),
    ("spapr-hotplug-compat", "b12a4efb76: KVM_SET_ONE_REG racing a hotplugged vCPU's KVM_RUN (KVM)", {}),
]
FAILURES = ("lockup", "deadlock", "invariant")
# The exhaustive table has the timing race too, as its scenario file sets it (2 vCPUs booted, 2 hot-added):
# the explore engine's steps take no time, so no schedule should fail (docs/races.md says why)
TIMING_RACE = ("x86-synic-hotplug", "e533f45d7d: a CPU hot-add against a vCPU's exclusive section (KVM)",
               {"cpu_list_add_fix": False})
EXHAUSTIVE_RACES = [*RACES, TIMING_RACE]


def strategies(max_steps: int) -> list[tuple[str, Callable[[int], Choose]]]:
    """The sampling strategies, each a chooser from a schedule seed."""
    return [("random (preempt 0.1)", lambda i: random_chooser(i, 0.1)),
            ("pct d=1", lambda i: pct_chooser(i, 1, max_steps)),
            ("pct d=2", lambda i: pct_chooser(i, 2, max_steps)),
            ("pct d=3", lambda i: pct_chooser(i, 3, max_steps))]


def _settings(scenario: str, overrides: dict[str, Any]) -> Any:
    settings = load(scenario).settings
    if settings.threads > 1:  # a whole core of threads (the hotplug race): as in the file
        return apply(settings, overrides, "race_table")
    return apply(settings, {**overrides, "smp": SMP, "cores": SMP}, "race_table")


def first_failure(scenario: str, overrides: dict[str, Any], strategy: int, search: int,
                  schedules: int) -> int | None:
    """Search number `search` (schedule seeds search*1000+1, +2, ...): the first failing schedule's number."""
    settings = _settings(scenario, overrides)
    make = strategies(MAX_STEPS)[strategy][1]
    for i in range(1, schedules + 1):
        if run_schedule(settings, make(search * 1000 + i), MAX_STEPS).verdict in FAILURES:
            return i
    return None


def first_delay_failure(scenario: str, overrides: dict[str, Any], schedules: int) -> int | None:
    settings = _settings(scenario, overrides)
    return explore_exhaustive(settings, MAX_STEPS, 2, delays=True, max_schedules=schedules).first_failure_at


def _summary(firsts: list[int | None]) -> list[str]:
    found = [f for f in firsts if f is not None]
    if not found:
        return [f"0/{len(firsts)}", "-", "-", "-"]
    return [f"{len(found)}/{len(firsts)}", f"{statistics.mean(found):.2f}", f"{statistics.median(found):g}",
            str(max(found))]


def rows(searches: int, schedules: int, jobs: int, races: list[tuple[str, str, dict[str, Any]]] = RACES,
         ) -> Iterator[list[str]]:
    names = [name for name, _ in strategies(MAX_STEPS)]
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        for scenario, label, overrides in races:
            futures = {k: [pool.submit(first_failure, scenario, overrides, k, j, schedules) for j in range(searches)]
                       for k in range(len(names))}
            delay = pool.submit(first_delay_failure, scenario, overrides, DELAY_SCHEDULES)
            for k, name in enumerate(names):
                yield [label, name, *_summary([f.result() for f in futures[k]])]
            found = delay.result()
            cell = str(found) if found else f"none in {DELAY_SCHEDULES}"
            yield [label, "delay bounding (2 delays)", "1 search", cell, "-", "-"]


def table(searches: int, schedules: int, jobs: int) -> str:
    header = ["race", "strategy", "searches that failed", "mean first failing schedule",
              "median", "max"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows(searches, schedules, jobs):
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def exhaustive_search(scenario: str, overrides: dict[str, Any], bound: int, wall_limit_s: float) -> Exploration:
    """One exhaustive search of a race, with the CLI's defaults: the step bound from a plain run, pruning on."""
    if scenario == TIMING_RACE[0]:
        settings = apply(load(scenario).settings, overrides, "race_table")  # its own 2 + 2 vCPUs
    else:
        settings = _settings(scenario, overrides)
    step_bound = plain_run_bound(settings)
    report = explore_exhaustive(settings, step_bound.max_steps, bound, wall_limit_s=wall_limit_s)
    report.step_bound = step_bound
    return report


def exhaustive_row(label: str, bound: int, report: Exploration) -> list[str]:
    failing = {k: n for k, n in report.outcomes.items() if k not in NOT_FAILURES}
    found = ", ".join(f"{n} {k}" for k, n in sorted(failing.items())) or "0"
    complete = "yes" if report.incomplete is None else f"no: {report.incomplete}"
    first = str(report.first_failure_at) if report.first_failure_at is not None else "none"
    return [label, str(bound), str(report.bound().max_steps), complete, str(report.schedules),
            str(len(report.states)), str(report.pruned), first, found, f"{report.wall_s:.1f}"]


def exhaustive_rows(max_bound: int, wall_limit_s: float,
                    races: list[tuple[str, str, dict[str, Any]]] = EXHAUSTIVE_RACES) -> Iterator[list[str]]:
    """Each race at bound 0, 1, ... up to `max_bound`, up to the first bound whose search fails."""
    for scenario, label, overrides in races:
        for bound in range(max_bound + 1):
            report = exhaustive_search(scenario, overrides, bound, wall_limit_s)
            yield exhaustive_row(label, bound, report)
            if report.first_failure_at is not None:
                break


def exhaustive_table(max_bound: int, wall_limit_s: float) -> str:
    header = ["race", "preemption bound", "step bound", "complete", "schedules", "distinct states", "pruned",
              "first failing schedule", "failing schedules", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in exhaustive_rows(max_bound, wall_limit_s):
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--searches", type=int, default=50)
    parser.add_argument("--schedules", type=int, default=30, help="schedules one search tries at most")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--exhaustive", action="store_true",
                        help="the exhaustive (preemption-bounded) search of each race instead")
    parser.add_argument("--max-bound", type=int, default=1, help="--exhaustive: the largest preemption bound tried")
    parser.add_argument("--wall-limit", type=float, default=900.0, help="--exhaustive: seconds one search may take")
    args = parser.parse_args(argv)
    if args.exhaustive:
        body = exhaustive_table(args.max_bound, args.wall_limit)
        name, by = "race-exhaustive", "tools/race_table.py:--exhaustive"
    else:
        body = table(args.searches, args.schedules, args.jobs)
        name, by = "race-strategies", "tools/race_table.py"
    if args.write:
        docgen.write_block(PAGE, name, body, by=by)
    else:
        print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
