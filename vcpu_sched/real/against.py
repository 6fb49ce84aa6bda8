"""`vcpu-sched matrix --against real`: each matrix row a TCG QEMU can run, on each binary given, with the
model at that binary's release beside it.

A row's variant may ask for what a release decides (`fix = "none"`); it then runs only on a binary that
has exactly that, and is listed as not run on the others, with the reason. What the row leaves to the
binary, the binary's release decides, in the model too (`versions.profile`). Real runs go in parallel,
one per core by default (a TCG guest keeps about one host core busy).
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from ..errors import BadInput
from ..matrix import Row, rows_for
from ..scenario import load, scenario_names
from .command import Binary, run_real
from .kit import Kit


def work_for(names: list[str], binaries: list[Binary]) -> list[tuple[Row, Binary]]:
    """Every (row, binary) of the scenarios named (default: all)."""
    work = [(row, qemu) for name in (names or scenario_names()) for row in rows_for(load(name)) for qemu in binaries]
    if not work:
        raise BadInput("matrix: the scenarios have no [[expect]] entries to check")
    return work


def run_against(work: list[tuple[Row, Binary]], kit: Kit, jobs: int, deadline_s: float,
                progress: Any = None, saved_boot: bool = True) -> list[dict[str, Any]]:
    """One entry per (row, binary): run (with both verdicts) or not run (with the reason)."""
    results: list[dict[str, Any] | None] = [None] * len(work)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_real, row.settings, row.variant, qemu, kit, deadline_s, None, saved_boot): i
                   for i, (row, qemu) in enumerate(work)}
        try:
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                row, qemu = work[i]
                results[i] = {"scenario": row.scenario, "variant": row.variant, "label": row.label,
                              "expected": row.expected, "version": qemu.version, **future.result()}
                if progress is not None:
                    progress.step()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return [r for r in results if r is not None]


def against_text(results: list[dict[str, Any]], wall_s: float) -> str:
    broken = [r for r in results if r["run"] and r["harness_error"]]
    ran = [r for r in results if r["run"] and not r["harness_error"]]
    width = max((len(r["label"]) for r in results), default=10)
    lines = [f"   {'scenario':<26} {'variant':<{width}}  {'QEMU':<7} {'model':<16} {'real':<16} wall s"]
    for r in ran:
        mark = "   " if r["agree"] else "!! "
        lines.append(f"{mark}{r['scenario']:<26} {r['label']:<{width}}  {r['version']:<7} "
                     f"{r['model']['verdict']:<16} {r['verdict']:<16} {r['wall_time_s']:6.1f}")
    disagree = [r for r in ran if not r["agree"]]
    not_run = [r for r in results if not r["run"]]
    reasons: dict[str, int] = {}
    for r in not_run:
        key = f"QEMU {r['release']}: {r['reason_not_run']}"
        reasons[key] = reasons.get(key, 0) + 1
    lines.append("")
    lines.append(f"{len(ran)} real runs, {len(ran) - len(disagree)} agree, {len(disagree)} disagree; "
                 f"{len(not_run)} not run; {len(broken)} could not run; {wall_s:.0f} s wall")
    for key, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        lines.append(f"   not run ({count}): {key}")
    for r in broken:
        lines.append(f"   could not run: {r['scenario']} {r['label']} on QEMU {r['version']}: {r['harness_error']}")
    for r in disagree:
        lines.append(f"!! {r['scenario']} {r['label']} on QEMU {r['version']}: model {r['model']['verdict']} "
                     f"({r['model']['reason']}), real {r['verdict']} ({r['reason']})")
    return "\n".join(lines)


def matrix_against_main(args: Any) -> int:
    import json
    import os

    from ..pool import Progress
    from .command import binary, check_deadline
    from .kit import check_client, find_kit

    jobs = args.jobs or os.cpu_count() or 1  # --jobs was checked (at least 1) with the other matrix options
    check_deadline(args.deadline)
    check_client()
    kit = find_kit()
    binaries = [binary(path) for path in (args.qemu_binary or [None])]
    start = time.perf_counter()
    work = work_for(args.scenarios, binaries)
    results = run_against(work, kit, jobs, args.deadline, Progress(len(work), "rows", "matrix"), not args.fresh_boot)
    wall = time.perf_counter() - start
    disagree = sum(1 for r in results if r["run"] and not r["harness_error"] and not r["agree"])
    broken = sum(1 for r in results if r["run"] and r["harness_error"])
    if args.json:
        for r in results:
            r.pop("console", None)
        print(json.dumps({"rows": results, "runs": sum(r["run"] for r in results), "disagree": disagree,
                          "wall_time_s": wall}, sort_keys=True))
    else:
        print(against_text(results, wall))
    return 1 if disagree or broken else 0
