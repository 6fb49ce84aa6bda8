#!/usr/bin/env python3
"""The README's schedule-exploration table: exhaustive search of the seed scenario on small machines.

    .venv/bin/python tools/explore_table.py [--max-steps 2000] [--preemption-bound 2]
"""

from __future__ import annotations

import argparse
import itertools
import sys

from vcpu_sched.explore import explore_exhaustive
from vcpu_sched.scenario import apply, load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--preemption-bound", type=int, default=2)
    args = parser.parse_args()
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
