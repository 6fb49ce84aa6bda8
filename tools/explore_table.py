#!/usr/bin/env python3
"""The schedule-exploration tables of docs/exploring.md, each written between its markers (tools/docgen.py).

    .venv/bin/python tools/explore_table.py TABLE... [--write] [--rows PREFIX]
    TABLE: exhaustive (about 5 min), delay (1 min), reduction (15 min), searches (10 min),
           first-counterexample (15 s), first-schedule (1 min), unpruned (30 s), all

Without --write the tables are printed; with it each replaces its block in docs/exploring.md, stamped with
the code version, and the sentences that sum the tables up (tools/docgen.py's DERIVED) are written again.
`--rows PREFIX` keeps the rows whose first cells start with PREFIX (for a quick look; never written). The
`wall s` columns are timings, measured by this run; every other cell is a count or a verdict, which
tests/test_docs.py compares with a fresh run (the slow tests re-run the quick rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docgen

from vcpu_sched.engine.explore_engine import Choose, pct_chooser, random_chooser
from vcpu_sched.explore import NOT_FAILURES, Exploration, explore_exhaustive, plain_run_bound, run_schedule
from vcpu_sched.matrix import rows_for
from vcpu_sched.scenario import apply, load, scenario_names

PAGE = docgen.DOCS / "exploring.md"
TIMING = "wall s"  # a timing column; in the reduction table each cell ends in its search's ", N s"


@dataclass
class Table:
    name: str
    header: list[str]
    rows: Callable[[], Iterator[list[str]]]

    def markdown(self, rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + " --- |" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)


def settings_of(scenario: str, **overrides: Any) -> Any:
    return apply(load(scenario).settings, overrides, "explore_table")


def failing(report: Exploration) -> int:
    return sum(n for verdict, n in report.outcomes.items() if verdict not in ("booted", "completed", "bound", "pruned"))


def shortest(report: Exploration) -> str:
    return f"{report.shortest.verdict}, {len(report.shortest.steps)}" if report.shortest else "-"


def exhaustive_rows() -> Iterator[list[str]]:
    for smp, fix, accel, timebase in itertools.product((2, 3), ("none", "quiesced"), ("kvm", "tcg"),
                                                       ("applied", "reverted")):
        s = settings_of("spapr-rtas-stopped", smp=smp, cores=smp, fix=fix, accel=accel, timebase_reset=timebase)
        r = explore_exhaustive(s, 2000, 2)
        yield [str(smp), fix, accel, timebase, str(r.schedules), str(len(r.states)), str(failing(r)), shortest(r),
               f"{r.wall_s:.1f}"]


def delay_rows() -> Iterator[list[str]]:
    for smp, fix in ((2, "none"), (2, "quiesced"), (3, "none"), (3, "quiesced"), (4, "none"), (4, "quiesced"),
                     (8, "none")):
        r = explore_exhaustive(settings_of("spapr-rtas-stopped", smp=smp, cores=smp, fix=fix), 2000, 2, delays=True)
        found = f"{shortest(r)} steps" if r.shortest else "-"
        yield [str(smp), fix, str(r.schedules), str(len(r.states)), found, f"{r.wall_s:.1f}"]


KINDS = ((False, False), (True, False), (False, True), (True, True))  # (sleep sets, symmetry) of each column
REDUCTION: list[tuple[str, str, dict[str, Any], tuple[bool, ...]]] = [  # label, scenario, overrides, columns
    ("seed, smp 3", "spapr-rtas-stopped", {"smp": 3, "cores": 3}, (True, True, True, True)),
    ("seed, smp 4", "spapr-rtas-stopped", {"smp": 4, "cores": 4}, (True, True, True, True)),
    ("seed with the fix, smp 3", "spapr-rtas-stopped", {"smp": 3, "cores": 3, "fix": "quiesced"},
     (True, True, True, False)),
    ("s390x-sigp-cross (jitter 8 µs)", "s390x-sigp-cross", {"sigp_jitter_us": 8}, (True, True, False, False)),
    ("s390x-sigp-cross with the lock", "s390x-sigp-cross", {"sigp_jitter_us": 8, "sigp_lock": True},
     (True, True, False, False)),
    ("spapr-fwnmi-kdump, smp 2", "spapr-fwnmi-kdump", {"smp": 2, "cores": 2}, (True, True, False, False)),
    ("tcg-rcu-device-add", "tcg-rcu-device-add", {}, (True, True, False, False)),
]


def reduction_rows() -> Iterator[list[str]]:
    for label, scenario, overrides, which in REDUCTION:
        s = settings_of(scenario, **overrides)
        cells = [label]
        for want, (sleep, symmetry) in zip(which, KINDS, strict=True):
            if not want:
                cells.append("")
                continue
            r = explore_exhaustive(s, 2000, 2, sleep_sets=sleep, symmetry=symmetry)
            found = f"{r.shortest.verdict} {len(r.shortest.steps)}" if r.shortest else "-"
            cells.append(f"{len(r.states)} states, {r.schedules} schedules, {found}, {r.wall_s:.0f} s")
        yield cells


SEARCHES: list[tuple[str, str, dict[str, Any], str, int, int | None]] = [
    # label, scenario, overrides, strategy, step bound, the number of schedules it stops at (None: no cap)
    ("s390x-sigp-cross, smp 2", "s390x-sigp-cross", {"smp": 2}, "exhaustive", 2000, None),
    ("s390x-sigp-cross, smp 2, sigp_lock=true", "s390x-sigp-cross", {"smp": 2, "sigp_lock": True}, "exhaustive",
     2000, None),
    ("spapr-fwnmi-kdump, smp 2", "spapr-fwnmi-kdump", {"smp": 2, "cores": 2}, "delay", 2000, None),
    ("spapr-hotplug-kdump, sysreset_fix=false", "spapr-hotplug-kdump", {"sysreset_fix": False}, "delay", 6000, None),
    ("spapr-hotplug-kdump, sysreset_fix=false, exhaustive", "spapr-hotplug-kdump", {"sysreset_fix": False},
     "exhaustive", 6000, 200),
    ("spapr-hotplug-kdump (with a1c2dfee4f)", "spapr-hotplug-kdump", {}, "delay", 6000, None),
    ("spapr-nmi-kdump", "spapr-nmi-kdump", {}, "delay", 6000, None),
    ("spapr-nmi-kdump, nmi_fix=true", "spapr-nmi-kdump", {"nmi_fix": True}, "delay", 6000, None),
]


def searches_rows() -> Iterator[list[str]]:
    for label, scenario, overrides, strategy, steps, cap in SEARCHES:
        r = explore_exhaustive(settings_of(scenario, **overrides), steps, 2, delays=strategy == "delay",
                               max_schedules=cap or 1_000_000)
        complete = sum(n for verdict, n in r.outcomes.items() if verdict not in ("bound", "pruned"))
        bound = f"{strategy}, {steps} steps" + (f", the first {cap} schedules" if cap else "")
        result = f"{r.result}, {r.incomplete}" if r.incomplete else r.result  # a cap: "stopped at N schedules"
        yield [label, bound, str(r.schedules), str(complete), str(failing(r)), str(r.first_failure_at or "-"),
               shortest(r), result, f"{r.wall_s:.1f}"]


def unpruned_rows() -> Iterator[list[str]]:
    """The seed's unfixed KVM guest searched without pruning: every schedule, none skipped at a visited state."""
    r = explore_exhaustive(settings_of("spapr-rtas-stopped", smp=2, cores=2), 100, 1, prune=False)
    yield ["seed, smp 2", "100 steps, 1 preemption, no pruning", str(r.schedules), str(failing(r)), shortest(r),
           f"{r.wall_s:.1f}"]


def first_schedule_rows(schedules: int = 60, names: list[str] | None = None) -> Iterator[list[str]]:
    """Every scenario's failing matrix rows with at most 3 vCPUs on the explore engine: the most schedules
    (seeds 1, 2, ...) random and PCT needed, over the rows, to the first failing one (`-`: none in
    `schedules`). Each row's step bound is the CLI's default, twice its plain run."""
    strategies: list[Callable[[int, int], Choose]] = [lambda i, steps: random_chooser(i, 0.1),
                                                      lambda i, steps: pct_chooser(i, 3, steps)]
    for name in names or scenario_names():
        rows = [r for r in rows_for(load(name)) if r.expected not in NOT_FAILURES and r.settings.smp <= 3]
        if not rows:
            continue
        worst: list[int | None] = [0, 0]
        for row in rows:
            settings = dataclasses.replace(row.settings, engine="explore")
            steps = plain_run_bound(settings).max_steps
            for k, make in enumerate(strategies):
                first = next((i for i in range(1, schedules + 1)
                              if run_schedule(settings, make(i, steps), steps).verdict not in NOT_FAILURES), None)
                current = worst[k]
                worst[k] = None if first is None or current is None else max(current, first)
        yield [name, str(len(rows)), *(str(w) if w is not None else "-" for w in worst)]


def first_counterexample_rows(schedules: int = 60, machines: int = 20, max_steps: int = 2000) -> Iterator[list[str]]:
    """For each machine seed (its guest timing) of s390x-sigp-cross with 8 us of jitter, the number of the
    first random / PCT schedule that deadlocks (schedule seeds 1, 2, ...)."""
    base = settings_of("s390x-sigp-cross", sigp_jitter_us=8)
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
        yield [name, f"{len(firsts)}/{machines}", mean, str(statistics.median(firsts)) if firsts else "-",
               str(max(firsts)) if firsts else "-"]


TABLES = {t.name: t for t in [
    Table("exhaustive", ["smp", "fix", "accel", "timebase reset", "schedules", "states", "failing schedules",
                         "shortest failing schedule (steps)", TIMING], exhaustive_rows),
    Table("delay", ["smp", "fix", "schedules", "states", "shortest failure", TIMING], delay_rows),
    Table("reduction", ["scenario", "plain", "sleep sets", "symmetry", "both"], reduction_rows),
    Table("searches", ["search", "strategy, step bound", "schedules", "complete", "failing", "first failure at",
                       "shortest failure", "result", TIMING], searches_rows),
    Table("first-counterexample", ["strategy", "machine seeds where found", "mean schedules to the first",
                                   "median", "worst"], first_counterexample_rows),
    Table("first-schedule", ["scenario", "failing rows, smp <= 3", "random (preempt 0.1): most schedules to "
                             "the first failure", "pct d=3: most schedules to the first failure"],
          first_schedule_rows),
    Table("unpruned", ["scenario", "search", "schedules", "failing schedules", "shortest failure", TIMING],
          unpruned_rows),
]}
QUICK_ROWS = {  # what the slow tests re-run: (table, the rows' first cells) that take seconds, not minutes
    "exhaustive": {"2"},  # the 8 rows at smp 2, a minute
    "delay": {"2", "3", "4"},
    "searches": {"s390x-sigp-cross, smp 2", "s390x-sigp-cross, smp 2, sigp_lock=true", "spapr-fwnmi-kdump, smp 2"},
    "unpruned": {"seed, smp 2"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", choices=[*TABLES, "all"])
    parser.add_argument("--write", action="store_true", help="write each table into docs/exploring.md")
    parser.add_argument("--rows", help="only the rows whose first cell starts with this (not with --write)")
    args = parser.parse_args()
    if args.write and args.rows:
        parser.error("--rows gives part of a table, which is never written")
    names = list(TABLES) if "all" in args.tables else args.tables
    at = docgen.code_version()  # the code measured: as the run starts
    for name in names:
        table = TABLES[name]
        rows = []
        print("| " + " | ".join(table.header) + " |", flush=True)
        for row in table.rows():
            if args.rows and not row[0].startswith(args.rows):
                continue
            rows.append(row)
            print("| " + " | ".join(row) + " |", flush=True)
        if args.write:
            docgen.write_block(PAGE, f"explore-{name}", table.markdown(rows), f"tools/explore_table.py:{name}", at)
    if args.write:  # the words that sum up the tables, read from them
        for (page, block), generate in docgen.DERIVED.items():
            docgen.write_block(page, block, generate(), "tools/docgen.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
