#!/usr/bin/env python3
"""Generated blocks of the README and docs/: every figure there is written by a generator between markers

    <!-- generated:NAME by=TOOL at=CODE-VERSION on=DATE sha256=DIGEST -->
    ...
    <!-- end:NAME -->

`sha256` is the digest of what the generator wrote (the lines between the markers), so a hand edit shows;
`at` is the code version (git commit) the figures were measured at, `on` the date. Timings are the
generator's last run; tests/test_docs.py re-runs the generators (the quick ones in the default suite, the
searches in the slow one) and compares counts and verdicts.

    .venv/bin/python tools/docgen.py            # rewrite the quick blocks: scenario tables, the event schema,
                                                #   the words that sum up exploring.md's tables
    .venv/bin/python tools/docgen.py --check    # exit 1 when a block is not what its generator writes
    .venv/bin/python tools/docgen.py NAME...    # only these blocks (with or without --check)
    .venv/bin/python tools/docgen.py --matrix   # the matrix on the Trio, explore and threads engines (5 min)
    .venv/bin/python tools/docgen.py --rates    # loop turns a second: without the fast-forward, on OS threads
    .venv/bin/python tools/docgen.py --sweeps   # the seed sweeps of spapr-fwnmi-kdump and s390x-sigp-cross

The scenario pages' verdict tables are written in tools/doc_tables.py (the words) and run on the model (the
verdicts). Other generators write through `write_block`: tools/explore_table.py (which rewrites the
words that sum up its tables too), tools/bench.py, tools/real_table.py, tools/libvirt_table.py.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import re
import shlex
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
    "migration-pause-race": "the monitor and the migration thread both in `pause_all_vcpus` (96bce6831b, f962cac4c2)",
    "spapr-guest-reboot": "a reset that begins while the rebooting vCPU still runs (0ec7e6779f)",
    "spapr-hotplug-compat": "a CPU hotplug waiting for a vCPU's kernel mutex (b12a4efb76)",
    "x86-synic-hotplug": "an x86 CPU hot-add against a vCPU's exclusive section for its SynIC (e533f45d7d)",
    "spapr-kvm-halt-in-kernel": "QEMU 11.0-rc's ppc64 KVM startup hang, and the patch that was not merged",
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


_WHY = re.compile(r"(stuck:|BQL holder:|main loop:|Why:|  \d+\. )")


def report_excerpt(scenario: str, command: bool = False) -> str:
    """`vcpu-sched run SCENARIO --quiet`: its report without the CPU table (the stuck thread, the holder, the
    main loop and the chain), with the verdict line (its settings cut) and the command when `command`."""
    lines = _run(scenario, "--quiet")
    keep = [line for line in lines if _WHY.match(line)]
    if command:
        head = next(line for line in lines if line.startswith("== "))
        keep = [f"$ vcpu-sched run {scenario} --quiet", re.sub(r" \[.*\] ==$", " [...] ==", head), *keep]
    return "```\n" + "\n".join(keep) + "\n```"


def chain_excerpt(*args: str) -> str:
    """`vcpu-sched run ARGS --quiet`: the command, the verdict line (its settings cut) and the chain."""
    lines = _run(*args, "--quiet")
    head = next(line for line in lines if line.startswith("== "))
    start = next((i for i, line in enumerate(lines) if line == "Why:"), len(lines))
    chain = [line for line in lines[start + 1:] if re.match(r"  \d+\. ", line)]
    command = " ".join(shlex.quote(arg) for arg in args)
    return "```\n" + "\n".join([f"$ vcpu-sched run {command} --quiet",
                                 re.sub(r" \[.*\] ==$", " [...] ==", head), *chain]) + "\n```"


# The chains the pages of the races and of the 11.0-rc hang show: (page, block) -> the run's arguments
CHAINS: dict[tuple[str, str], tuple[str, ...]] = {
    ("migration-pause-race", "chain-signal"): (
        "migration-pause-race", "--set", "vm_stop_fix=false", "--set", "pause_cond_broadcast=false", "--set",
        'monitor=[["smp: Brought up", "migrate -d file:/tmp/vm.mig"], ["", "stop"]]', "--seed", "12"),
    ("migration-pause-race", "chain-reset"): ("migration-pause-race", "--set", "vm_stop_fix=false", "--seed", "1"),
    ("spapr-kvm-halt-in-kernel", "chain-regression"): ("spapr-kvm-halt-in-kernel", "--smp", "4"),
    ("spapr-kvm-halt-in-kernel", "chain-patch"): ("spapr-kvm-halt-in-kernel", "--set", "hlt_bql_patch=true",
                                                  "--smp", "2"),
    ("spapr-guest-reboot", "chain-invariant"): ("spapr-guest-reboot", "--set", "stop_current_fix=false",
                                                "--engine", "explore", "--seed", "4"),
    ("spapr-hotplug-compat", "chain-hotplug"): ("spapr-hotplug-compat", "--seed", "25"),
    ("x86-synic-hotplug", "chain-exclusive"): ("x86-synic-hotplug", "--set", "cpu_list_add_fix=false", "--seed",
                                               "279"),
}


def _analyze(path: str, cwd: Path) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "vcpu_sched", "analyze", path], cwd=cwd, capture_output=True,
                         text=True, check=False)
    lines = out.stdout.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("LOCKUP:")):]


def analyze_seed_trace() -> str:
    """The seed case written in QEMU's trace format and read back by `analyze`: its LOCKUP lines."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        subprocess.run([sys.executable, "-m", "vcpu_sched", "run", "--quiet", "--log", "seed.trace", "--log-format",
                        "qemu-trace"], cwd=directory, capture_output=True, check=False)
        lines = _analyze("seed.trace", Path(directory))
    return ("```\n$ vcpu-sched run --quiet --log seed.trace --log-format qemu-trace; vcpu-sched analyze seed.trace\n"
            + "\n".join(lines) + "\n```")


def analyze_nested_trace() -> str:
    """`analyze` of the recorded nested-mutex trace (tests/data): its LOCKUP lines."""
    path = "tests/data/qemu-7.2/nested-mutex-ptrace.trace"
    return f"```\n$ vcpu-sched analyze {path}\n...\n" + "\n".join(_analyze(path, ROOT)) + "\n```"


def real_restores(releases: tuple[str, ...] = ("5.2", "7.2", "11.1")) -> str:
    """Which matrix rows `matrix --against real` runs on each release, and which of those restore a saved
    boot instead of booting (`plan.fresh_boot_reason`): a function of the rows and the release, no binary."""
    from collections import Counter

    from vcpu_sched.matrix import rows_for
    from vcpu_sched.real.plan import NotRun, plan
    from vcpu_sched.scenario import load, scenario_names

    rows = [row for name in scenario_names() for row in rows_for(load(name))]
    lines = ["| QEMU | rows run | restored | distinct saved boots | booted, and why |",
             "| --- | --- | --- | --- | --- |"]
    for release in releases:
        ran = restored = 0
        boots: set[tuple[object, ...]] = set()
        why: Counter[str] = Counter()
        for row in rows:
            try:
                run = plan(row.settings, row.variant, release)
            except NotRun:
                continue
            ran += 1
            if run.fresh_boot is None:
                restored += 1
                boots.add((run.argv_tail, run.script.cmdline, run.script.kdump_cmdline is not None))
            else:
                why[run.fresh_boot] += 1
        booted = "; ".join(f"{n}: {_cell(reason)}" for reason, n in why.most_common()) or "-"
        lines.append(f"| {release} | {ran} | {restored} | {len(boots)} | {booted} |")
    return "\n".join(lines)


def matrix_engines(engines: tuple[str, ...] = ("trio", "explore", "threads")) -> str:
    """`vcpu-sched matrix` over every scenario on each engine: rows, mismatches, wall time (a timing)."""
    import time

    from vcpu_sched.matrix import run_matrix

    lines = ["| engine | runs | mismatches | rows that differ (expected -> actual) | wall s |",
             "| --- | --- | --- | --- | --- |"]
    for engine in engines:
        start = time.perf_counter()
        results = run_matrix([], engine=engine)
        wall = time.perf_counter() - start
        differ = "; ".join(_cell(f"`{r['scenario']}` {r['label']}: {r['expected']} -> {r['actual']}")
                           for r in results if not r["match"]) or "-"
        lines.append(f"| {engine} | {len(results)} | {sum(not r['match'] for r in results)} | {differ} | {wall:.0f} |")
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


# The races of the corpus with the default engine: how many seeds fail before and after each fix (what the
# rows that pin a seed stand for). (scenario, what is swept, the sweep's arguments, seeds)
_STOP = '--set=monitor=[["smp: Brought up", "migrate -d file:/tmp/vm.mig"], ["", "stop"]]'
RACE_SWEEPS: tuple[tuple[str, str, tuple[str, ...], int], ...] = (
    ("migration-pause-race", "a reset racing the migration, before f962cac4c2", ("--set", "vm_stop_fix=false"), 300),
    ("migration-pause-race", "the same, with it", (), 300),
    ("migration-pause-race", "`stop` racing the migration, before 96bce6831b",
     ("--set", "vm_stop_fix=false", "--set", "pause_cond_broadcast=false", _STOP), 300),
    ("migration-pause-race", "the same, with it", ("--set", "vm_stop_fix=false", _STOP), 300),
    ("spapr-guest-reboot", "a guest reboot, before 0ec7e6779f", ("--set", "stop_current_fix=false"), 200),
    ("spapr-hotplug-compat", "a core hot-added, before b12a4efb76", (), 200),
    ("spapr-hotplug-compat", "the same, with it", ("--set", "hotplug_compat_fix=true"), 200),
    ("x86-synic-hotplug", "two x86 CPUs hot-added, before e533f45d7d", ("--set", "cpu_list_add_fix=false"), 1000),
    ("x86-synic-hotplug", "the same, with it", (), 1000),
)


def race_odds(rows: tuple[tuple[str, str, tuple[str, ...], int], ...] = RACE_SWEEPS) -> str:
    """The races' share of failing seeds on the default engine, before and after each fix."""
    lines = ["| scenario | run | seeds | verdicts |", "| --- | --- | --- | --- |"]
    for scenario, what, args, seeds in rows:
        verdicts = _sweep(scenario, *args, "--seeds", f"0:{seeds}")
        counts = ", ".join(f"{verdict} {count}" for verdict, count in sorted(verdicts.items()))
        lines.append(f"| [{scenario}](scenarios/{scenario}.md) | {what} | {seeds} | {counts} |")
    return "\n".join(lines)


# ---- exploring.md: what its tables say, in words (read from the tables' blocks, so they cannot disagree)

EXPLORING = DOCS / "exploring.md"


def table_rows(page: Path, name: str) -> list[dict[str, str]]:
    """The rows of a generated Markdown table, each a {header: cell}."""
    block = next((b for b in blocks(page) if b.name == name), None)
    if block is None:
        raise ValueError(f"{page}: no generated:{name}")
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.body.splitlines()
            if line.startswith("|") and not line.startswith("| ---")]
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def _x(more: float, fewer: float) -> str:
    return f"{more / fewer:.2g}x"


def _steps(shortest: str) -> str:
    """"lockup, 84" or "lockup, 84 steps" -> "84"."""
    return shortest.split(",")[1].split()[0]


def exhaustive_notes() -> str:
    """Which rows of the exhaustive table fail, their shortest failures, the search without pruning, and
    the cost of a schedule in the stamped run."""
    rows = table_rows(EXPLORING, "explore-exhaustive")
    failing = [r for r in rows if int(r["failing schedules"])]
    kinds = sorted({(r["fix"], r["accel"], r["timebase reset"]) for r in failing})
    kind = "; ".join(f"`fix={f}`, {a.upper()}, timebase reset {t}" for f, a, t in kinds) or "none"
    shortest = " and ".join(f"{_steps(r['shortest failing schedule (steps)'])} steps at smp {r['smp']}"
                            for r in failing)
    [unpruned] = table_rows(EXPLORING, "explore-unpruned")
    every = ("every one of the" if unpruned["schedules"] == unpruned["failing schedules"]
             else f"{unpruned['failing schedules']} of the")
    costs = []
    for smp in sorted({r["smp"] for r in rows}, key=int):
        ms = sorted(float(r["wall s"]) * 1000 / int(r["schedules"]) for r in rows if r["smp"] == smp)
        costs.append(f"{ms[0]:.0f}-{ms[-1]:.0f} ms at smp {smp}")
    guests = "one guest" if len(kinds) == 1 else f"{len(kinds)} guests"
    return (f"Failing schedules are found in {len(failing)} of the {len(rows)} rows, all of {guests} ({kind}); "
            f"every other row boots in every schedule within the bounds. The shortest failure takes {shortest}. "
            f"Searched without pruning (the table just above), {every} "
            f"{unpruned['schedules']} schedules ends in a `{unpruned['shortest failure'].split(',')[0]}`. "
            f"In the stamped run a schedule cost {' and '.join(costs)} (a row's wall time over its schedules).")


def delay_vs_preemption() -> str:
    """Delay bounding against preemption bounding on the unfixed seed guest, at each smp both tables have."""
    delay = {r["smp"]: r for r in table_rows(EXPLORING, "explore-delay") if r["fix"] == "none"}
    preempt = {r["smp"]: r for r in table_rows(EXPLORING, "explore-exhaustive")
               if (r["fix"], r["accel"], r["timebase reset"]) == ("none", "kvm", "applied")}
    parts = []
    for smp in sorted(set(delay) & set(preempt), key=int):
        d, p = delay[smp], preempt[smp]
        same = _steps(d["shortest failure"]) == _steps(p["shortest failing schedule (steps)"])
        parts.append(f"at smp {smp}, {d['schedules']} schedules against {p['schedules']} "
                     f"({_x(int(p['schedules']), int(d['schedules']))} fewer) for "
                     + (f"the same {_steps(d['shortest failure'])}-step failure" if same else
                        f"a {_steps(d['shortest failure'])}-step failure against "
                        f"{_steps(p['shortest failing schedule (steps)'])}"))
    return "Against preemption bounding (the exhaustive table above): " + "; ".join(parts) + "."


Search = tuple[int, int, str, int]  # states, schedules, shortest failure, wall s


def _reduction() -> dict[str, dict[str, Search | None]]:
    """The reduction table: row -> column -> its search, None when the cell is empty."""
    out: dict[str, dict[str, Search | None]] = {}
    for row in table_rows(EXPLORING, "explore-reduction"):
        cells: dict[str, Search | None] = {}
        for column, text in row.items():
            if column == "scenario":
                continue
            m = re.fullmatch(r"(\d+) states, (\d+) schedules, (.+), (\d+) s", text)
            cells[column] = (int(m[1]), int(m[2]), m[3], int(m[4])) if m else None
        out[row["scenario"]] = cells
    return out


def _found(a: Search, b: Search) -> str:
    if a[2] == b[2] == "-":
        return "no failure either way"
    return f"the same shortest failure ({a[2]} steps)" if a[2] == b[2] else f"shortest failures {a[2]} and {b[2]}"


def symmetry_notes() -> str:
    """What symmetry reduction saves, row by row of the reduction table."""
    lines = ["Measured (the reduction table below), with symmetry against without:", ""]
    for label, cells in _reduction().items():
        plain, sym = cells["plain"], cells["symmetry"]
        if plain is not None and sym is not None:
            lines.append(f"- {label}: {sym[0]} states against {plain[0]} ({_x(plain[0], sym[0])} fewer), "
                         f"{sym[1]} schedules against {plain[1]}; "
                         f"{_found(plain, sym)}.")
    return "\n".join(lines)


def sleep_set_notes() -> str:
    """What sleep sets save, alone and with symmetry, row by row of the reduction table."""
    table = _reduction()
    same = all(len({c[2] for c in cells.values() if c is not None}) == 1 for cells in table.values())
    saved = {label: cells["plain"][1] / cells["sleep sets"][1] for label, cells in table.items()
             if cells["plain"] and cells["sleep sets"]}
    better = sorted(v for v in saved.values() if v > 1)
    worse = [label for label, v in saved.items() if v <= 1]
    text = ("Every search finds the same shortest failure with and without them, and none where there is none."
            if same else "The searches do not all find the same shortest failure: compare the cells.")
    if better:
        text += (f" Sleep sets search {better[0]:.2g}-{better[-1]:.2g}x fewer schedules than the plain search"
                 + (f", except on {', '.join(worse)}, where they search more" if worse else "") + ".")
    both = [(label, cells["plain"], cells["both"]) for label, cells in table.items()
            if cells["plain"] and cells["both"]]
    if both:
        text += " With symmetry too:\n\n" + "\n".join(
            f"- {label}: {_x(plain[1], b[1])} fewer schedules and {_x(plain[0], b[0])} fewer states than the plain "
            f"search." for label, plain, b in both if plain and b)
    return text


def first_schedule_notes() -> str:
    """What the first-schedule table says: whether every failing row fails in the first schedule."""
    rows = table_rows(EXPLORING, "explore-first-schedule")
    strategies = [h for h in rows[0] if "most schedules" in h] if rows else []
    firsts = {r[h] for r in rows for h in strategies}
    total = sum(int(r["failing rows, smp <= 3"]) for r in rows)
    if firsts == {"1"}:
        return (f"Random and PCT both find the failure of every one of the {total} rows in their first schedule. "
                "These are mechanism "
                "bugs, not races: every schedule has them, which is why the exhaustive table above counts failing "
                "schedules only among those pruning leaves, and why on the seed hang PCT cannot beat random.")
    later = [r["scenario"] for r in rows if any(r[h] != "1" for h in strategies)]
    return (f"Of the {total} rows, those of {', '.join(later)} need more than one schedule (the table): "
            "the others fail in every schedule, mechanism bugs rather than races.")


def first_counterexample_notes() -> str:
    """PCT against random on the SIGP race, from the first-counterexample table."""
    rows = {r["strategy"]: r for r in table_rows(EXPLORING, "explore-first-counterexample")}
    random = next(r for name, r in rows.items() if name.startswith("random"))
    pct = {name: r for name, r in rows.items() if name.startswith("pct")}
    mean = ", ".join(f"{r['mean schedules to the first']} with {name}" for name, r in pct.items())
    worst = ", ".join(f"{r['worst']} with {name}" for name, r in pct.items())
    return (f"On average the first deadlock takes {random['mean schedules to the first']} schedules with random "
            f"and {mean}; at worst {random['worst']} with random and {worst}.")


def search_notes(labels: tuple[str, ...]) -> str:
    """A scenario page's summary of its rows of exploring.md's searches table, one line a search."""
    rows = {r["search"]: r for r in table_rows(EXPLORING, "explore-searches")}
    lines = ["The searches of [exploring schedules](../exploring.md#searches-of-the-scenarios), in short:", ""]
    for label in labels:
        r = rows[label]
        complete, failing = int(r["complete"]), int(r["failing"])
        if failing:
            found = (f"the first failure at schedule {r['first failure at']}, {failing} of the {complete} schedules "
                     f"that complete failing (shortest: {r['shortest failure']} steps)")
        else:
            found = f"no failure in the {complete} schedules that complete"
        lines.append(f"- {label} ({r['strategy, step bound']}): {found}; {r['schedules']} schedules, {r['result']}.")
    return "\n".join(lines)


SEARCH_NOTES = {
    "s390x-sigp-cross": ("s390x-sigp-cross, smp 2", "s390x-sigp-cross, smp 2, sigp_lock=true"),
    "spapr-fwnmi-kdump": ("spapr-fwnmi-kdump, smp 2",),
    "spapr-hotplug-kdump": ("spapr-hotplug-kdump, sysreset_fix=false, exhaustive",
                            "spapr-hotplug-kdump, sysreset_fix=false", "spapr-hotplug-kdump (with a1c2dfee4f)"),
    "spapr-nmi-kdump": ("spapr-nmi-kdump", "spapr-nmi-kdump, nmi_fix=true"),
}


DERIVED: dict[tuple[Path, str], Callable[[], str]] = {
    (EXPLORING, "explore-exhaustive-notes"): exhaustive_notes,
    (EXPLORING, "explore-delay-notes"): delay_vs_preemption,
    (EXPLORING, "explore-first-schedule-notes"): first_schedule_notes,
    (EXPLORING, "explore-first-counterexample-notes"): first_counterexample_notes,
    **{(DOCS / "scenarios" / f"{name}.md", "search-notes"): functools.partial(search_notes, labels)
       for name, labels in SEARCH_NOTES.items()},
    (EXPLORING, "explore-symmetry-notes"): symmetry_notes,
    (EXPLORING, "explore-sleep-set-notes"): sleep_set_notes,
}


# ---- how fast a loop turn runs (timings: `--rates`)

def no_fast_forward_rate() -> str:
    """The seed's lockup with every 1 us loop turn run (`--no-fast-forward`, a 2 s watchdog), in this process:
    the spinning vCPU's turns over the CPU time the run took."""
    import dataclasses
    import time

    from vcpu_sched import runner
    from vcpu_sched.scenario import load

    settings = dataclasses.replace(load("spapr-rtas-stopped").settings, fast_forward=False, watchdog_s=2.0)
    cpu = time.process_time()
    result = runner.run(settings)
    cpu = time.process_time() - cpu
    turns = result.lockup.holder_iterations if result.lockup else 0
    return (f"Measured: the seed's lockup with a 2 s watchdog and `--no-fast-forward` runs {turns:,} loop turns "
            f"of the spinning vCPU in {cpu:.1f} s of CPU time, {turns / cpu:,.0f} a second "
            f"(`tools/docgen.py --rates`, {_load()}; a busy machine stretches the wall time further).")


def _load() -> str:
    """The machine's load as a rate was measured: a timing says little without it."""
    import os

    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def threads_lockup() -> str:
    """`vcpu-sched run --engine threads --quiet` on the seed's guest: its report's head and the top -H table
    (the holder and one other thread), then the spinning thread's turns a wall second."""
    out = subprocess.run([sys.executable, "-m", "vcpu_sched", "run", "spapr-rtas-stopped", "--engine", "threads",
                          "--quiet", "--json"], cwd=ROOT, capture_output=True, text=True, check=False)
    report = json.loads(out.stdout)
    lockup = report["lockup"]
    text = _run("spapr-rtas-stopped", "--engine", "threads", "--quiet")
    lines = [re.sub(r" \[.*\] ==$", " [...] ==", text[0])]
    lines += [line for line in text if line.startswith("BQL holder:")]
    top = text.index(next(line for line in text if line.startswith("top -H")))
    lines += text[top:top + 4]
    spin_s = lockup["held_for_s"] / report["settings"]["time_scale"]
    return ("```\n$ vcpu-sched run spapr-rtas-stopped --engine threads --quiet\n" + "\n".join(lines) + "\n```\n\n"
            f"In a run of its own (`--json`), the spinning thread went round {lockup['holder_iterations']:,} "
            f"times in the {spin_s:.2f} s of wall time it held the BQL: "
            f"{lockup['holder_iterations'] / spin_s:,.0f} turns a wall second (`tools/docgen.py --rates`, "
            f"{_load()}: the spinning thread shares the cores with whatever else runs).")


RATES: dict[tuple[Path, str], Callable[[], str]] = {
    (DOCS / "usage.md", "no-fast-forward-rate"): no_fast_forward_rate,
    (DOCS / "threads-engine.md", "threads-lockup"): threads_lockup,
}


SWEEPS: dict[tuple[Path, str], Callable[[], str]] = {
    (DOCS / "scenarios" / "spapr-fwnmi-kdump.md", "fwnmi-odds"): fwnmi_odds,
    (DOCS / "scenarios" / "s390x-sigp-cross.md", "sigp-odds"): sigp_odds,
    (DOCS / "races.md", "race-odds"): race_odds,
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
        (DOCS / "events.md", "event-schema"): event_schema, (DOCS / "benchmarks.md", "seed-log"): seed_log,
        (DOCS / "analyze.md", "analyze-seed-trace"): analyze_seed_trace,
        (DOCS / "analyze.md", "analyze-nested-trace"): analyze_nested_trace,
        (DOCS / "real-qemu.md", "real-restores"): real_restores}
    for name, command in (("s390x-sigp-cross", False), ("spapr-fwnmi-kdump", True), ("tcg-rcu-device-add", False)):
        gens[(DOCS / "scenarios" / f"{name}.md", "report")] = functools.partial(report_excerpt, name, command)
    import doc_tables

    for name in scenario_names():
        gens[(DOCS / "scenarios" / f"{name}.md", f"variants-{name}")] = functools.partial(scenario_variants, name)
    for name in doc_tables.SUMMARIES:
        gens[(DOCS / "scenarios" / f"{name}.md", f"summary-{name}")] = functools.partial(doc_tables.summary, name)
    for (name, block), args in CHAINS.items():
        gens[(DOCS / "scenarios" / f"{name}.md", block)] = functools.partial(chain_excerpt, *args)
    gens[(DOCS / "scenarios" / "spapr-hotplug-kdump.md", "kdump-loaders")] = doc_tables.kdump_loaders
    gens[(DOCS / "scenarios" / "spapr-migrate-from-9.2.md", "inference")] = doc_tables.inference
    gens[(DOCS / "real-qemu.md", "real-said")] = doc_tables.real_said
    gens[(DOCS / "scenarios" / "spapr-nmi-kdump.md", "other-resets")] = doc_tables.other_resets
    gens[(DOCS / "switches.md", "lpcr-sync")] = doc_tables.lpcr_sync
    gens.update(DERIVED)
    return gens


def main(argv: list[str]) -> int:
    at = code_version()  # the code measured: as the run starts (others may commit while it runs)
    if "--matrix" in argv:  # the matrix on each engine: a minute of runs, not part of the quick set
        write_block(DOCS / "usage.md", "matrix-engines", matrix_engines(), "tools/docgen.py:--matrix", at)
        return 0
    if "--rates" in argv:  # timings of loop turns: half a minute, never compared by the tests
        for (page, name), generate in RATES.items():
            write_block(page, name, generate(), "tools/docgen.py:--rates", at)
        return 0
    if "--sweeps" in argv:  # sweeps of a few thousand seeds: a minute, checked by the slow tests
        for (page, name), generate in SWEEPS.items():
            write_block(page, name, generate(), "tools/docgen.py:--sweeps", at)
        return 0
    check = "--check" in argv
    only = {arg for arg in argv if not arg.startswith("--")}  # block names: only those
    status = 0
    for (page, name), generate in quick_generators().items():
        if only and name not in only:
            continue
        where = page.relative_to(ROOT)
        block = next((b for b in blocks(page) if b.name == name), None) if page.exists() else None
        if block is None:  # a scenario without its page yet, or a page without the marker: say so, go on
            print(f"{where}: no <!-- generated:{name} ... --> block{'' if page.exists() else ' (no such page)'}",
                  file=sys.stderr)
            status = 1
            continue
        body = generate()
        if check:
            if block.body != body + "\n" or not block.intact:
                print(f"{where}: {name} is not what tools/docgen.py writes", file=sys.stderr)
                status = 1
        elif write_block(page, name, body, "tools/docgen.py"):
            print(f"wrote {where}: {name}")
    return status


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
