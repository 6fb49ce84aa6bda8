#!/usr/bin/env python3
"""The README's schedule-exploration tables: exhaustive search of the seed scenario on small machines, and
schedules to the first counterexample per strategy for the s390x SIGP race.

    .venv/bin/python tools/explore_table.py [--max-steps 2000] [--preemption-bound 2]
    .venv/bin/python tools/explore_table.py --first-counterexample [--schedules 60] [--machines 20]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from collections.abc import Callable

from vcpu_sched.engine.explore_engine import Choose, pct_chooser, random_chooser
from vcpu_sched.explore import explore_exhaustive, run_schedule
from vcpu_sched.scenario import apply, load


def first_counterexample(schedules: int, machines: int, max_steps: int) -> None:
    """For each machine seed (its guest timing) of s390x-sigp-cross with 8 us of jitter, the number of the
    first random / PCT schedule that deadlocks (schedule seeds 1, 2, ...)."""
    base = apply(load("s390x-sigp-cross").settings, {"sigp_jitter_us": 8}, "table")
    print("| strategy | machine seeds where found | mean schedules to the first | median | worst |")
    print("| --- | --- | --- | --- | --- |")
    strategies: list[tuple[str, Callable[[int], Choose]]] = [
        ("random (preempt 0.1)", lambda i: random_chooser(i, 0.1)),
        ("pct d=2", lambda i: pct_chooser(i, 2, max_steps)),
        ("pct d=3", lambda i: pct_chooser(i, 3, max_steps))]
    for name, make in strategies:
        firsts = []
        for machine_seed in range(machines):
            settings = apply(base, {"seed": machine_seed}, "table")
            for i in range(1, schedules + 1):
                if run_schedule(settings, make(i), max_steps).verdict in ("lockup", "deadlock"):
                    firsts.append(i)
                    break
        mean = f"{statistics.mean(firsts):.2f}" if firsts else "-"
        print(f"| {name} | {len(firsts)}/{machines} | {mean} | {statistics.median(firsts) if firsts else '-'} | "
              f"{max(firsts) if firsts else '-'} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--preemption-bound", type=int, default=2)
    parser.add_argument("--first-counterexample", action="store_true")
    parser.add_argument("--schedules", type=int, default=60)
    parser.add_argument("--machines", type=int, default=20)
    args = parser.parse_args()
    if args.first_counterexample:
        first_counterexample(args.schedules, args.machines, args.max_steps)
        return 0
    base = load("spapr-rtas-stopped").settings
    print("| smp | fix | accel | timebase reset | schedules | states | failing schedules | shortest failing "
          "schedule (steps) | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for smp, fix, accel, timebase in itertools.product((2, 3), ("none", "quiesced"), ("kvm", "tcg"),
                                                       ("applied", "reverted")):
        settings = apply(base, {"smp": smp, "cores": smp, "fix": fix, "accel": accel, "timebase_reset": timebase},
                         "table")
        report = explore_exhaustive(settings, args.max_steps, args.preemption_bound)
        failing = sum(n for verdict, n in report.outcomes.items()
                      if verdict not in ("booted", "completed", "bound", "pruned"))
        shortest = f"{report.shortest.verdict}, {len(report.shortest.steps)}" if report.shortest else "-"
        print(f"| {smp} | {fix} | {accel} | {timebase} | {report.schedules} | {len(report.states)} | {failing} | "
              f"{shortest} | {report.wall_s:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
