#!/usr/bin/env python3
"""Each scenario row with a monitor script, over many seeds: the share of each verdict.

A monitor command comes `monitor_delay_ms` after its console pattern (drawn per command from the seed,
0-500 ms unless the scenario says otherwise), so a row's verdict may depend on the seed where the command
can land before or after something the guest does. This runs every row of every scenario that has a
monitor script over seeds 0..N-1 and prints one line a row: the verdict the row claims (at its seed), and
each verdict seen with its share.

    .venv/bin/python tools/monitor_shares.py [--seeds 200] [--jobs 2] [--json FILE] [--write] [SCENARIO ...]

`--write` puts the table into docs/monitor-timing.md (about 20 minutes of runs on 2 cores for all rows).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vcpu_sched.config import RunSettings  # noqa: E402
from vcpu_sched.matrix import _show  # noqa: E402
from vcpu_sched.scenario import apply, load, scenario_names  # noqa: E402
from vcpu_sched.sweep import batches, run_batch  # noqa: E402

PAGE = ROOT / "docs" / "monitor-timing.md"


def rows(names: list[str]) -> list[tuple[str, str, str, RunSettings]]:
    """(scenario, row label, claimed verdict, settings) for each row of a scenario with a monitor script whose
    command comes after a delay drawn from the seed. Not the rows with one fixed delay (nothing is drawn) nor
    those that pin a seed (they claim one interleaving of a race, not a verdict every seed keeps)."""
    out = []
    for name in names:
        scenario = load(name)
        for expect in scenario.expect:
            settings = apply(scenario.settings, expect.variant, f"{scenario.path}: expect variant")
            low, high = settings.monitor_delay_ms
            if settings.monitor and low != high and "seed" not in expect.variant:
                label = " ".join(f"{k}={_show(k, v)}" for k, v in expect.variant.items()) or "(as in the file)"
                out.append((name, label, expect.verdict, settings))
    return out


def monitor_scenarios() -> list[str]:
    """The scenarios with a monitor script in a row."""
    scenarios = [load(name) for name in scenario_names()]
    return [s.name for s in scenarios if s.settings.monitor or any("monitor" in e.variant for e in s.expect)]


def shares(names: list[str], seeds: int, jobs: int) -> list[dict[str, Any]]:
    work = rows(names)
    counts: list[Counter[str]] = [Counter() for _ in work]
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        futures = {pool.submit(run_batch, settings, batch): i
                   for i, (_, _, _, settings) in enumerate(work) for batch in batches(range(seeds), 25)}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            counts[futures[future]].update(verdict for _, verdict, _ in future.result())
            if done % 50 == 0:
                print(f"monitor_shares: {done}/{len(futures)} batches", file=sys.stderr, flush=True)
    return [{"scenario": name, "row": label, "claimed": claimed, "seeds": seeds,
             "delay_ms": list(settings.monitor_delay_ms), "verdicts": dict(count.most_common())}
            for (name, label, claimed, settings), count in zip(work, counts, strict=True)]


def table(results: list[dict[str, Any]]) -> str:
    last = results[0]["seeds"] - 1 if results else 0
    lines = [f"| scenario | row | claimed | verdicts over seeds 0-{last} |", "| --- | --- | --- | --- |"]
    for r in results:
        seen = ", ".join(f"{v} {100 * n / r['seeds']:.1f} %" for v, n in r["verdicts"].items())
        lines.append(f"| {r['scenario']} | {r['row']} | {r['claimed']} | {seen} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*")
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--write", action="store_true", help="write the table into docs/monitor-timing.md")
    args = parser.parse_args(argv)
    names = args.scenarios or monitor_scenarios()
    start = time.perf_counter()
    results = shares(names, args.seeds, args.jobs)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(table(results), end="")
    if args.write:
        sys.path.insert(0, str(ROOT / "tools"))
        import docgen

        docgen.write_block(PAGE, "monitor-shares", table(results), "tools/monitor_shares.py")
    print(f"{sum(r['seeds'] for r in results)} runs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
