#!/usr/bin/env python3
"""Write docs/real-qemu.md's table of `vcpu-sched matrix --against real` from the matrix's JSON output.

    vcpu-sched matrix --against real --qemu-binary QEMU --json > real-7.2.json   # one file per binary
    python3 tools/real_table.py real-7.2.json real-11.1.json                      # rewrites the table
    python3 tools/real_table.py --model-now real-*.json   # the model's side re-run with the code as it is now

The table goes between the page's `<!-- generated:real-matrix ... -->` and `<!-- end:real-matrix -->`
markers (tools/docgen.py), stamped with the code version and the date: one line per real run (model and
real verdict side by side), the counts, and the reasons rows were not run. Disagreements are listed with
both reasons; the page explains each one next to the table.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docgen

PAGE = docgen.DOCS / "real-qemu.md"


def table(results: list[dict[str, Any]]) -> str:
    ran = [r for r in results if r["run"] and not r["harness_error"]]
    broken = [r for r in results if r["run"] and r["harness_error"]]
    not_run = [r for r in results if not r["run"]]
    lines = ["| scenario | variant | QEMU | model | real | |", "| --- | --- | --- | --- | --- | --- |"]
    for r in ran:
        label = r["label"].replace("|", "\\|")
        lines.append(f"| `{r['scenario']}` | {label} | {r['version']} | `{r['model']['verdict']}` | "
                     f"`{r['verdict']}` | {'agree' if r['agree'] else '**disagree**'} |")
    versions = sorted({r["version"] for r in results})
    agree = sum(r["agree"] for r in ran)
    lines += ["", f"{len(ran)} real runs on QEMU {', '.join(versions)}: {agree} agree, {len(ran) - agree} disagree; "
                  f"{len(broken)} could not run; {len(not_run)} rows not run:", ""]
    reasons = Counter(f"QEMU {r['release']}: {r['reason_not_run']}" for r in not_run)
    lines += [f"- {count} x {reason}" for reason, count in reasons.most_common()]
    for r in broken:
        lines.append(f"- could not run: `{r['scenario']}` {r['label']} on {r['version']}: {r['harness_error']}")
    for r in ran:
        if not r["agree"]:
            lines.append(f"- disagree: `{r['scenario']}` {r['label']} on {r['version']}: model "
                         f"`{r['model']['verdict']}` ({r['model']['reason']}), real `{r['verdict']}` ({r['reason']})")
    return "\n".join(lines)


def model_now(results: list[dict[str, Any]]) -> None:
    """Re-run the model's side of each real run with the model as it is now (the real side stays): a real
    matrix takes half an hour, the model a second."""
    from vcpu_sched import runner
    from vcpu_sched.config import RunSettings

    for r in results:
        if r["run"]:
            values = dict(r["model"]["settings"])
            values["monitor"] = tuple(tuple(pair) for pair in values["monitor"])
            result = runner.run(RunSettings(**values))
            r["model"] = {**r["model"], "verdict": result.verdict, "reason": result.reason}
            r["agree"] = result.verdict == r["verdict"]


def main(argv: list[str]) -> int:
    now = "--model-now" in argv
    argv = [a for a in argv if a != "--model-now"]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    results = [row for path in argv for row in json.loads(Path(path).read_text())["rows"]]
    if now:
        model_now(results)
    try:
        docgen.write_block(PAGE, "real-matrix", table(results), "tools/real_table.py")
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
