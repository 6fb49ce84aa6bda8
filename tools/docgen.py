#!/usr/bin/env python3
"""Generated blocks of the README and docs/: every figure there is written by a generator between markers

    <!-- generated:NAME by=TOOL at=CODE-VERSION on=DATE sha256=DIGEST -->
    ...
    <!-- end:NAME -->

`sha256` is the digest of what the generator wrote (the lines between the markers), so a hand edit shows;
`at` is the code version (git commit) the figures were measured at, `on` the date. Timings are the
generator's last run; tests/test_docs.py re-runs the generators (the quick ones in the default suite, the
searches in the slow one) and compares counts and verdicts.

    .venv/bin/python tools/docgen.py            # rewrite the quick blocks: scenario tables, the event schema
    .venv/bin/python tools/docgen.py --check    # exit 1 when a block is not what its generator writes
    .venv/bin/python tools/docgen.py --matrix   # the matrix on the Trio and explore engines (a minute)
    .venv/bin/python tools/docgen.py --sweeps   # the seed sweeps of spapr-fwnmi-kdump and s390x-sigp-cross

Other generators write through `write_block`: tools/explore_table.py, tools/bench.py, tools/real_table.py,
tools/matrix_table.py.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

_START = re.compile(r"<!-- generated:(?P<name>[\w.-]+)(?P<fields>(?: [a-z0-9]+=\S+)*) -->\n")
_FIELD = re.compile(r" ([a-z0-9]+)=(\S+)")


@dataclass
class Block:
    page: Path
    name: str
    fields: dict[str, str]
    body: str  # the lines between the markers, each ending in a newline

    @property
    def intact(self) -> bool:
        """The body is what the generator wrote (its digest)."""
        return self.fields.get("sha256") == digest(self.body)


def digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def blocks(page: Path) -> Iterator[Block]:
    text = page.read_text(encoding="utf-8")
    for start in _START.finditer(text):
        name = start.group("name")
        end = text.find(f"<!-- end:{name} -->", start.end())
        if end < 0:
            raise ValueError(f"{page}: generated:{name} has no <!-- end:{name} -->")
        yield Block(page, name, dict(_FIELD.findall(start.group("fields"))), text[start.end():end])


def code_version() -> str:
    """The commit the figures come from (with +changes when the package differs from it)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "vcpu_sched", "scenarios"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def render(name: str, body: str, by: str, at: str | None = None, on: str | None = None) -> str:
    body = body if body.endswith("\n") else body + "\n"
    at = at or code_version()
    on = on or datetime.date.today().isoformat()
    return f"<!-- generated:{name} by={by} at={at} on={on} sha256={digest(body)} -->\n{body}<!-- end:{name} -->"


def write_block(page: Path, name: str, body: str, by: str, at: str | None = None, on: str | None = None) -> bool:
    """Put `body` between the page's markers for `name`; returns whether the page changed. Keeps the old
    stamp when the body is the same (a quick generator's blocks stay dated by their last change)."""
    text = page.read_text(encoding="utf-8")
    old = next((b for b in blocks(page) if b.name == name), None)
    if old is None:
        raise ValueError(f"{page}: no <!-- generated:{name} ... --> marker")
    body = body if body.endswith("\n") else body + "\n"
    if old.body == body and old.intact:
        return False
    begin = text.index(f"<!-- generated:{name}")
    end = text.index(f"<!-- end:{name} -->", begin) + len(f"<!-- end:{name} -->")
    page.write_text(text[:begin] + render(name, body, by, at, on) + text[end:], encoding="utf-8")
    return True


# The quick generators: pure functions of the repository, compared exactly by the default tests.

SUMMARY = {
    "spapr-rtas-stopped": "the seed's KVM boot, 32 vCPUs on POWER10 (fb802acdc8b)",
    "spapr-cpu-offline-online": "offline every secondary with stop-self, H_SET_MODE, online again, twice",
    "spapr-system-reset": "boot, monitor `system_reset`, boot again",
    "spapr-migrate": "TCG boot, savevm + loadvm, an IPI to every secondary (QEMU issue 3079)",
    "spapr-migrate-from-9.2": "a stream without `cpu/rtas_stopped`: 628bda1ab7's inference (a finding)",
    "powernv-core-stop-start": "powernv10 firmware stops and starts a thread through the core direct controls",
    "spapr-fwnmi-kdump": "a kdump kernel's `ibm,nmi-register` waits for another vCPU's KVM mutex (aef92d87c5)",
    "spapr-hotplug": "DLPAR `device_add` of a core, onlined with start-cpu",
    "spapr-hotplug-kdump": "a hotplugged CPU reset by the crash's H_SIGNAL_SYS_RESET (a1c2dfee4f)",
    "spapr-nmi-kdump": "`inject-nmi` still resets RTAS-stopped CPUs (a finding)",
    "s390x-sigp-cross": "two vCPUs SIGP each other: a cross run_on_cpu deadlock (f9530c3242)",
    "tcg-rcu-device-add": "`device_add` hangs the monitor behind a busy TCG vCPU (QEMU issue 650)",
}


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def scenario_index() -> str:
    """The README's scenario table: one line a scenario, its verdict as in the file and its matrix rows."""
    from vcpu_sched.matrix import rows_for
    from vcpu_sched.scenario import load, scenario_names

    lines = ["| scenario | what it shows | verdict as in the file | matrix rows |", "| --- | --- | --- | --- |"]
    for name in scenario_names():
        scenario = load(name)
        plain = next((e.verdict for e in scenario.expect if not e.variant), "-")
        lines.append(f"| [`{name}`](docs/scenarios/{name}.md) | {SUMMARY.get(name, '')} | `{plain}` | "
                     f"{len(rows_for(scenario))} |")
    return "\n".join(lines)


def scenario_variants(name: str) -> str:
    """A scenario page's table of its documented variants ([[expect]]): what `vcpu-sched matrix` checks."""
    from vcpu_sched.matrix import _show, rows_for
    from vcpu_sched.scenario import load

    scenario = load(name)
    lines = ["| variant | verdict | why (the scenario file's reason) |", "| --- | --- | --- |"]
    for expect in scenario.expect:
        label = " ".join(f"{k}={_show(k, v)}" for k, v in expect.variant.items()) or "(as in the file)"
        claim = f" Claim: {_cell(expect.claim)}." if expect.claim else ""
        lines.append(f"| {_cell(label)} | `{expect.verdict}` | {_cell(expect.reason)}{claim} |")
    derived = len(rows_for(scenario)) - len(scenario.expect)
    lines += ["", f"{len(scenario.expect)} variants; with the other CPU models and sizes the matrix derives, "
                  f"{len(rows_for(scenario))} rows ({derived} derived)."]
    return "\n".join(lines)


def _run(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "vcpu_sched", "run", *args], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    return out.stdout.splitlines()


def demo() -> str:
    """What `python3 tools/dev.py demo` prints, shortened: the seed's guest without the fix, then with it
    (the CPU table cut to CPU 1, the wall time left out: it is the only timing)."""
    lockup = _run("spapr-rtas-stopped")
    start = next(i for i, line in enumerate(lockup) if line.startswith("== LOCKUP"))
    lines = [lockup[start - 1]]
    for line in lockup[start:]:
        if line.startswith("cpus online:") or not line.strip():
            continue
        if line[:4].strip().isdigit() and not line.startswith("1 "):
            continue
        lines.append(line)
    booted = _run("spapr-rtas-stopped", "--fix", "quiesced")
    lines += ["", next(line for line in booted if line.startswith("== BOOTED"))]
    return "```\n" + "\n".join(lines) + "\n```"


def seed_log() -> str:
    """The seed case's event log: lines and size (a run's log is the same byte for byte for a seed)."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "run.jsonl"
        _run("spapr-rtas-stopped", "--quiet", "--log", str(log))
        data = log.read_bytes()
    lines = data.count(b"\n")
    return (f"`vcpu-sched run spapr-rtas-stopped --log run.jsonl` writes {lines:,} lines, "
            f"{len(data) / 1000:.0f} kB, whatever the watchdog threshold (a spinning vCPU's lines are capped).")


def matrix_engines(engines: tuple[str, ...] = ("trio", "explore")) -> str:
    """`vcpu-sched matrix` over every scenario on each engine: rows, mismatches, wall time (a timing)."""
    import time

    from vcpu_sched.matrix import run_matrix

    lines = ["| engine | runs | mismatches | wall s |", "| --- | --- | --- | --- |"]
    for engine in engines:
        start = time.perf_counter()
        results = run_matrix([], engine=engine)
        lines.append(f"| {engine} | {len(results)} | {sum(not r['match'] for r in results)} | "
                     f"{time.perf_counter() - start:.0f} |")
    return "\n".join(lines)


def demo_short() -> str:
    """The README's demo: `demo` with each line of the report cut at 110 characters."""
    lines = demo().splitlines()
    return "\n".join(line if len(line) <= 110 else line[:106].rstrip() + " ..." for line in lines)


def _sweep(*args: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-m", "vcpu_sched", "sweep", *args, "--no-db", "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    verdicts: dict[str, int] = json.loads(out.stdout)["verdicts"]
    return verdicts


def fwnmi_odds(sizes: tuple[int, ...] = (2, 4, 8)) -> str:
    """aef92d87c5's odds of a hang, (n - 1) / n, against the model's: 400 seeds a size, the crashing CPU
    drawn from the seed."""
    lines = ["| n | hanging seeds (of 400) | fraction | (n - 1) / n |", "| --- | --- | --- | --- |"]
    for n in sizes:
        verdicts = _sweep("spapr-fwnmi-kdump", "--set", "crash_cpu=-1", "--smp", str(n), "--seeds", "0:400")
        hung = sum(count for verdict, count in verdicts.items() if verdict != "completed")
        lines.append(f"| {n} | {hung} | {hung / 400:.3f} | {(n - 1) / n:.3f} |")
    return "\n".join(lines)


def sigp_odds(rows: tuple[tuple[int, int], ...] = ((0, 3), (8, 1), (8, 3))) -> str:
    """How often the two SIGP exits of s390x-sigp-cross meet: 1000 seeds, with and without jitter."""
    lines = ["| `sigp_jitter_us` | rounds (`loops`) | seeds that deadlock (of 1000) |", "| --- | --- | --- |"]
    for jitter, loops in rows:
        verdicts = _sweep("s390x-sigp-cross", "--set", f"sigp_jitter_us={jitter}", "--set", f"loops={loops}",
                          "--seeds", "0:1000")
        lines.append(f"| {jitter} | {loops} | {sum(c for v, c in verdicts.items() if v != 'completed')} |")
    return "\n".join(lines)


SWEEPS: dict[tuple[Path, str], Callable[[], str]] = {
    (DOCS / "scenarios" / "spapr-fwnmi-kdump.md", "fwnmi-odds"): fwnmi_odds,
    (DOCS / "scenarios" / "s390x-sigp-cross.md", "sigp-odds"): sigp_odds,
}


def event_schema() -> str:
    from vcpu_sched.trace_events import schema_table

    return schema_table()


def quick_generators() -> dict[tuple[Path, str], Callable[[], str]]:
    """(page, block name) -> the function that writes that block."""
    from vcpu_sched.scenario import scenario_names

    gens: dict[tuple[Path, str], Callable[[], str]] = {
        (README, "scenario-index"): scenario_index, (README, "demo"): demo_short,
        (DOCS / "scenarios" / "spapr-rtas-stopped.md", "demo"): demo,
        (DOCS / "events.md", "event-schema"): event_schema, (DOCS / "benchmarks.md", "seed-log"): seed_log}
    for name in scenario_names():
        gens[(DOCS / "scenarios" / f"{name}.md", f"variants-{name}")] = functools.partial(scenario_variants, name)
    return gens


def main(argv: list[str]) -> int:
    at = code_version()  # the code measured: as the run starts (others may commit while it runs)
    if "--matrix" in argv:  # the matrix on each engine: a minute of runs, not part of the quick set
        write_block(DOCS / "usage.md", "matrix-engines", matrix_engines(), "tools/docgen.py:--matrix", at)
        return 0
    if "--sweeps" in argv:  # sweeps of a few thousand seeds: a minute, checked by the slow tests
        for (page, name), generate in SWEEPS.items():
            write_block(page, name, generate(), "tools/docgen.py:--sweeps", at)
        return 0
    check = "--check" in argv
    status = 0
    for (page, name), generate in quick_generators().items():
        body = generate()
        if check:
            block = next((b for b in blocks(page) if b.name == name), None)
            if block is None or block.body != body + "\n" or not block.intact:
                print(f"{page.relative_to(ROOT)}: {name} is not what tools/docgen.py writes", file=sys.stderr)
                status = 1
        elif write_block(page, name, body, "tools/docgen.py"):
            print(f"wrote {page.relative_to(ROOT)}: {name}")
    return status


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
