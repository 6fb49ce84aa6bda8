#!/usr/bin/env python3
"""Benchmarks of the seed case, each beside a bare-Trio baseline measured in the same run.

    .venv/bin/python tools/bench.py [--repeat N]

Rows:
- CPU time (user + system) of the CLI to the seed case's verdict, `vcpu-sched run --quiet`, against
  `python -c 'import trio; trio.run(trio.sleep, 0)'`: runs interleaved, median, with bytecode caching on
  (an installed package has its .pyc files; PYTHONDONTWRITEBYTECODE would charge a compile to every run);
- wall time to each verdict, start-up included (a `vcpu-sched run` subprocess), with the watchdog at
  2 s and 20 s of guest time, and the fixed boot; baseline: a bare Trio program (same number of tasks,
  same number of checkpoints as the run performed effects, mock clock), also as a subprocess;
- the spinning vCPU's loop turns per wall second with fast-forward off; baseline: one task making
  checkpoints while the same number of other tasks sleep;
- peak RSS of the 32-vCPU lockup run (psutil, sampled), beside the bare Trio program's;
- the threads engine against the Trio engine on the seed case's lockup (watchdog 2 s of guest time:
  0.1 s of real spinning at the default time scale, plus the watchdog's 1 s psutil sample);
- `analyze` of a big log (2048 vCPUs offlined and onlined, about 60 MB): lines per second and peak RSS of
  the summary, with --perfetto and with --plot, against a bare Python loop that reads the same file and
  `json.loads` each line (`--only big-log` runs these rows alone);
- `analyze --json` of a 25 MB QEMU trace (the real healthy 7.2 trace of tests/data repeated, time-shifted, to
  about 250k lines): lines per second and peak RSS, against a bare Python loop that reads the same file
  and matches each line's `TID@time:name` prefix (`--only trace` runs this row alone);
  the analyze rows run as an installed package does, with its bytecode cached, like the CPU-time row, and
  interleaved with their baselines, medians of `--repeat` (3 at most);
- `sweep spapr-rtas-stopped --fix quiesced --seeds 0:2000 --expect booted`: runs per second with 2 local
  workers and on a 2-worker Dask `LocalCluster`, against 1 local worker (`--only sweep` runs these alone);
- scale (`--only scale`): 2048 vCPUs booted and the 2048-vCPU seed case (wall against the bare Trio
  program with as many tasks and checkpoints, run in turn with it, medians; peak RSS), the 2048 report's
  length, and `vcpu-sched matrix` over every row against one bare program per row on a pool of as many
  workers;
- real QEMU (`--only real`, needs `tools/dev.py real-qemu`): wall time of `vcpu-sched real` on a 2-vCPU
  boot, on each QEMU set up, against a bare boot of the same kernel on the same binary (an /init that only
  powers off): what the harness adds; the model's run of the same row against the real one; and the row
  again restoring its saved boot (where that is faithful) against the fresh boot.
Ratios, not absolute times, are what carries from one machine to another.

With `--write` the tables go into docs/benchmarks.md between their markers (tools/docgen.py), stamped with
the code version measured and the date: `bench-model`, `bench-big-log`, `bench-trace`, `bench-sweep` and
`bench-scale` from a full run, one of `model`, `big-log`, `trace`, `sweep`, `scale` (or `real`) from `--only`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
MEASURED_AT: str | None = None  # the code version the run measured (main sets it)

BARE = """
import sys, trio, trio.testing
ntasks, total = int(sys.argv[1]), int(sys.argv[2])
async def worker(n):
    for _ in range(n):
        await trio.lowlevel.checkpoint()
async def main():
    async with trio.open_nursery() as nursery:
        for i in range(ntasks):
            nursery.start_soon(worker, total // ntasks + (i < total % ntasks))
trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
"""


def cpu_process(argv: list[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def cli_cpu(repeat: int) -> tuple[list[float], list[float]]:
    """CPU seconds of `vcpu-sched run` to the seed case's lockup, and of a bare trio.run, interleaved."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cli = [str(Path(sys.executable).with_name("vcpu-sched")), "run", "--quiet"]
    bare = [sys.executable, "-c", "import trio; trio.run(trio.sleep, 0)"]
    cpu_process(cli, env)  # writes the bytecode caches
    ours, base = [], []
    for _ in range(repeat):
        ours.append(cpu_process(cli, env))
        base.append(cpu_process(bare, env))
    return ours, base


def timed_process(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes, sampled with psutil) and stdout of one subprocess."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stdout:  # a pipe would fill up and block it
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL, cwd=ROOT, text=True, env=env)
        watched = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.002)
        proc.wait()
        wall = time.perf_counter() - start
        stdout.seek(0)
        return wall, peak, stdout.read()


def run_case(flags: list[str], repeat: int) -> tuple[float, int, dict[str, Any]]:
    argv = [sys.executable, "-m", "vcpu_sched", "run", "--json", "--quiet", *flags]
    samples = [timed_process(argv) for _ in range(repeat)]
    wall = statistics.median(s[0] for s in samples)
    return wall, max(s[1] for s in samples), json.loads(samples[-1][2])


def bare_process(ntasks: int, checkpoints: int, repeat: int) -> tuple[float, int]:
    samples = [timed_process([sys.executable, "-c", BARE, str(ntasks), str(checkpoints)]) for _ in range(repeat)]
    return statistics.median(s[0] for s in samples), max(s[1] for s in samples)


def spin_rate() -> tuple[float, float]:
    """(loop turns per wall second without fast-forward, bare checkpoints per second), same conditions."""
    from vcpu_sched import runner
    from vcpu_sched.scenario import apply, load

    settings = apply(load("spapr-rtas-stopped").settings,
                     {"smp": 32, "watchdog_s": 1.0, "fast_forward": False}, "bench")
    start = time.perf_counter()
    result = runner.run(settings)
    wall = time.perf_counter() - start
    assert result.lockup is not None
    turns = result.lockup.holder_iterations

    async def bare(ntasks: int, n: int) -> None:
        async def spinner() -> None:
            for _ in range(n):
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for _ in range(ntasks - 1):
                nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(spinner)
            await trio.sleep(1e9)  # lets the spinner finish first on the mock clock
            nursery.cancel_scope.cancel()

    start = time.perf_counter()
    trio.run(bare, settings.smp + 1, turns, clock=trio.testing.MockClock(autojump_threshold=0))
    bare_wall = time.perf_counter() - start
    return turns / wall, turns / bare_wall


def engines(repeat: int) -> tuple[float, float]:
    """Wall time to the seed case's lockup on each engine (in-process, start-up excluded)."""
    from vcpu_sched import runner
    from vcpu_sched.scenario import apply, load

    walls = {}
    for engine in ("threads", "trio"):
        settings = apply(load("spapr-rtas-stopped").settings, {"watchdog_s": 2.0, "engine": engine}, "bench")
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            assert runner.run(settings).verdict == "lockup"
            samples.append(time.perf_counter() - start)
        walls[engine] = statistics.median(samples)
    return walls["threads"], walls["trio"]


def installed_env() -> dict[str, str]:
    """The environment of an installed package's run: bytecode cached (as after `pip install`)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def interleaved(ours: list[str], base: list[str], repeat: int, warm: bool = True) -> tuple[float, int, str, float, int]:
    """Median wall and peak RSS of `ours` and of `base`, run in turn `repeat` times (after one run of `ours`
    that writes the bytecode caches, unless the caller has run it: `warm`), and the last stdout of `ours`."""
    env = installed_env()
    if warm:
        timed_process(ours, env)
    runs, bases = [], []
    for _ in range(repeat):
        runs.append(timed_process(ours, env))
        bases.append(timed_process(base, env))
    return (statistics.median(r[0] for r in runs), max(r[1] for r in runs), runs[-1][2],
            statistics.median(r[0] for r in bases), max(r[1] for r in bases))


BARE_JSON = r"""
import json, sys
n = sum(1 for text in open(sys.argv[1], errors="replace") if json.loads(text))
print(n)
"""


def big_log(directory: Path, repeat: int = 3) -> list[tuple[str, str, str, str]]:
    """analyze on a big log (the 2048-vCPU offline/online scenario with the fix): lines per second and peak
    RSS, against a bare loop that reads the same file and json.loads each line."""
    log = directory / "big.jsonl"
    subprocess.run([sys.executable, "-m", "vcpu_sched", "run", "spapr-cpu-offline-online", "--fix", "quiesced",
                    "--smp", "2048", "--quiet", "--log", str(log)], check=False, capture_output=True, cwd=ROOT)
    size = log.stat().st_size / 2**20
    with log.open("rb") as stream:
        count = sum(1 for _ in stream)
    rows = []
    base = [sys.executable, "-c", BARE_JSON, str(log)]
    for label, extra, times in (("summary", [], repeat),
                                ("summary + --perfetto", ["--perfetto", str(directory / "t.json")], 1),
                                ("summary + --plot", ["--plot", str(directory / "t.png")], 1)):
        wall, rss, _, base_wall, base_rss = interleaved(
            [sys.executable, "-m", "vcpu_sched", "analyze", str(log), *extra], base, min(times, 3))
        rows.append((f"analyze a {size:.0f} MB log ({count:,} lines): {label}, lines/s", f"{count / wall:,.0f}",
                     f"{count / base_wall:,.0f}", f"{base_wall / wall:.2f}"))
        if not extra:
            rows.append(("  its peak RSS", f"{rss / 2**20:.0f} MiB", f"{base_rss / 2**20:.0f} MiB",
                         f"{rss / base_rss:.2f}"))
    return rows


BARE_READER = r"""
import re, sys
line = re.compile(r"(\d+)@(\d+)\.(\d+):(\w+) ?(.*)")
n = sum(1 for text in open(sys.argv[1], errors="replace") if line.fullmatch(text.rstrip("\n")))
print(n)
"""


def qemu_trace(directory: Path, repeat: int = 3) -> list[tuple[str, str, str, str]]:
    """The streaming trace reader on a 25 MB trace: lines/s and peak RSS, beside a bare regex loop."""
    source = (ROOT / "tests" / "data" / "qemu-7.2" / "healthy.trace").read_text().splitlines()
    trace = directory / "big.trace"
    count = 0
    with trace.open("w") as out:
        for copy in range(400):
            for text in source:
                tid, rest = text.split("@", 1)
                stamp, tail = rest.split(":", 1)
                sec, usec = stamp.split(".")
                out.write(f"{tid}@{int(sec) + 2 * copy}.{usec}:{tail}\n")
                count += 1
            if out.tell() > 25 * 2**20:
                break
    wall, rss, _, base_wall, base_rss = interleaved(
        [sys.executable, "-m", "vcpu_sched", "analyze", str(trace), "--json"],
        [sys.executable, "-c", BARE_READER, str(trace)], min(repeat, 3))
    size = trace.stat().st_size / 2**20
    return [(f"analyze a {size:.0f} MB QEMU trace ({count:,} lines): lines/s", f"{count / wall:,.0f}",
             f"{count / base_wall:,.0f}", f"{base_wall / wall:.2f}"),
            ("  its peak RSS", f"{rss / 2**20:.0f} MiB", f"{base_rss / 2**20:.0f} MiB", f"{rss / base_rss:.2f}")]


SWEEP = """
import sys, time
from dask.distributed import LocalCluster
from vcpu_sched.scenario import apply, load
from vcpu_sched.sweep import sweep

if __name__ == "__main__":
    jobs, cluster = int(sys.argv[1]), sys.argv[2] == "dask"
    scenario = load("spapr-rtas-stopped")
    settings = apply(scenario.settings, {"fix": "quiesced"}, "bench")
    seeds = range(0, int(sys.argv[3]))
    if cluster:
        with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None) as c:
            s = sweep("spapr-rtas-stopped", settings, scenario.settings, seeds, "booted", None,
                      cluster=c.scheduler_address, progress=False)
    else:
        s = sweep("spapr-rtas-stopped", settings, scenario.settings, seeds, "booted", None, jobs=jobs, progress=False)
    assert s["unexpected"] == 0, s
    print(s["runs_per_s"])
"""


def sweep_rates(directory: Path, seeds: int = 2000) -> list[tuple[str, str, str, str]]:
    """Sweep throughput: 2 local workers and a 2-worker Dask LocalCluster against 1 local worker."""
    script = directory / "sweep_bench.py"
    script.write_text(SWEEP)

    def rate(jobs: int, how: str) -> float:
        out = subprocess.run([sys.executable, str(script), str(jobs), how, str(seeds)], capture_output=True,
                             text=True, check=True, cwd=ROOT)
        return float(out.stdout.strip().splitlines()[-1])

    one = rate(1, "local")
    rows = [(f"sweep {seeds} seeds (fix, smp 32): 1 local worker, runs/s", f"{one:,.0f}", f"{one:,.0f}", "1.00")]
    for label, jobs, how in (("2 local workers", 2, "local"), ("Dask LocalCluster, 2 workers", 2, "dask")):
        value = rate(jobs, how)
        rows.append((f"sweep {seeds} seeds: {label}, runs/s", f"{value:,.0f}", f"{one:,.0f}", f"{value / one:.2f}"))
    return rows


def real_rows(directory: Path) -> list[tuple[str, str, str, str]]:
    """`vcpu-sched real` against a bare boot of the kit's kernel on the same binary, and the model against it."""
    from vcpu_sched.real.kit import Cpio, busybox_root, find_kit, installed_qemus

    kit = find_kit()
    archive = Cpio()
    busybox_root(kit, archive)
    archive.file("init", b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n", 0o755)
    initrd = directory / "bare.cpio"
    initrd.write_bytes(archive.build())
    rows = []
    from vcpu_sched.versions import has

    for release, binary in sorted(installed_qemus().items(), key=lambda kv: [int(x) for x in kv[0].split(".")]):
        cpu = "POWER10" if has(release, "99082815f1") else "POWER9"  # 5.2's TCG cannot run a POWER10 kernel
        bare = timed_process([binary, "-machine", "pseries,accel=tcg", "-smp", "2", "-cpu", cpu, "-m", "2048",
                              "-nodefaults", "-display", "none", "-serial", "null", "-kernel", str(kit.vmlinux),
                              "-initrd", str(initrd), "-append", "console=hvc0"])[0]
        command = [sys.executable, "-m", "vcpu_sched", "real", "spapr-rtas-stopped", "--accel", "tcg", "--smp", "2",
                   "--cpu", cpu, "--qemu-binary", binary, "--quiet", "--json"]
        wall, _, out = timed_process([*command, "--fresh-boot"])
        row = json.loads(out)
        rows.append((f"QEMU {release}: `vcpu-sched real --fresh-boot`, 2-vCPU TCG boot ({row['verdict']}), wall",
                     f"{wall:.1f} s", f"{bare:.1f} s", f"{wall / bare:.2f}"))
        model = row["model"]["wall_time_s"]
        rows.append(("  the model's run of the same row against the real run",
                     f"{model * 1000:.0f} ms", f"{row['wall_time_s']:.1f} s", f"{model / row['wall_time_s']:.4f}"))
        timed_process(command)  # saves the boot where a restore is faithful (the next run restores it)
        again, _, out = timed_process(command)
        restored = json.loads(out)
        rows.append((f"  the same row again, {restored['boot'].split(' in ')[0]}, against the fresh boot",
                     f"{again:.1f} s", f"{wall:.1f} s", f"{again / wall:.2f}"))
    return rows


def _bare_row(work: tuple[int, int]) -> None:
    """The bare Trio program of BARE, in-process: `ntasks` tasks making `checkpoints` in all."""
    ntasks, total = work

    async def worker(n: int) -> None:
        for _ in range(n):
            await trio.lowlevel.checkpoint()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(ntasks):
                nursery.start_soon(worker, total // ntasks + (i < total % ntasks))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def scale_rows(directory: Path, repeat: int = 3) -> list[tuple[str, str, str, str]]:
    """2048 vCPUs booted and locked up (wall against the bare Trio program with as many tasks and checkpoints
    as the run had threads and effects; peak RSS), the 2048-vCPU report's length, and `vcpu-sched matrix`
    over every row against the same bare programs, one per row, on a pool of as many workers."""
    import concurrent.futures

    rows = []
    for label, flags in (("2048 vCPUs booted, --fix quiesced", ["--smp", "2048", "--fix", "quiesced"]),
                         ("2048 vCPUs, the seed case's lockup", ["--smp", "2048"])):
        # Interleaved with the bare program, medians: on a shared machine the load moves both alike. The
        # first run writes the bytecode caches and says how many effects the baseline must match.
        argv = [sys.executable, "-m", "vcpu_sched", "run", "--json", "--quiet", *flags]
        data = json.loads(timed_process(argv, installed_env())[2])
        bare_argv = [sys.executable, "-c", BARE, str(data["smp"] + 1), str(data["effects"])]
        wall, rss, _, base_wall, base_rss = interleaved(argv, bare_argv, repeat, warm=False)
        rows.append((f"wall to verdict: {label} ({data['verdict']}, {data['effects']} effects)",
                     f"{wall * 1000:.0f} ms", f"{base_wall * 1000:.0f} ms", f"{wall / base_wall:.2f}"))
        rows.append((f"peak RSS: {label}", f"{rss / 2**20:.1f} MiB", f"{base_rss / 2**20:.1f} MiB",
                     f"{rss / base_rss:.2f}"))
    report = subprocess.run([sys.executable, "-m", "vcpu_sched", "run", "--smp", "2048", "--quiet"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout
    lines = len(report.splitlines())
    rows.append(("lines of the 2048-vCPU seed case's report, against its vCPUs", f"{lines:,}", "2,048",
                 f"{lines / 2048:.3f}"))
    jobs = os.cpu_count() or 1
    walls, bare_walls = [], []
    matrix: list[dict[str, Any]] = []
    for _ in range(max(1, repeat // 2)):  # interleaved: the matrix, then its bare counterpart
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "vcpu_sched", "matrix", "--json", "--jobs", str(jobs)],
                             cwd=ROOT, capture_output=True, text=True, check=False).stdout
        walls.append(time.perf_counter() - start)
        matrix = json.loads(out)["rows"]
        work = [(r["smp"] + 1, r["effects"]) for r in matrix]
        start = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_bare_row, work))
        bare_walls.append(time.perf_counter() - start)
    wall, bare = statistics.median(walls), statistics.median(bare_walls)
    mismatches = sum(not r["match"] for r in matrix)
    rows.append((f"`vcpu-sched matrix`, {len(matrix)} rows ({mismatches} mismatches), {jobs} workers, wall",
                 f"{wall:.1f} s", f"{bare:.1f} s", f"{wall / bare:.2f}"))
    return rows


def model_rows(repeat: int) -> list[tuple[str, str, str, str]]:
    """The seed case's rows (`bench-model`): the CLI's CPU time, wall to each verdict, the spinning loop,
    the engines."""
    rows: list[tuple[str, str, str, str]] = []
    ours_cpu, bare_cpu = cli_cpu(repeat * 6)
    for label, pick in (("median", statistics.median), ("minimum", min)):
        cpu, cpu_base = pick(ours_cpu), pick(bare_cpu)
        rows.append((f"CPU time of `vcpu-sched run` to the seed case's lockup ({label})", f"{cpu * 1000:.0f} ms",
                     f"{cpu_base * 1000:.0f} ms", f"{cpu / cpu_base:.2f}"))
    for label, flags in (("lockup, watchdog 2 s", ["--watchdog", "2"]),
                         ("lockup, watchdog 20 s", ["--watchdog", "20"]),
                         ("booted, --fix quiesced", ["--fix", "quiesced"])):
        wall, rss, data = run_case(flags, repeat)
        base_wall, base_rss = bare_process(data["smp"] + 1, data["effects"], repeat)
        rows.append((f"wall to verdict: {label} ({data['verdict']}, {data['effects']} effects)",
                     f"{wall * 1000:.0f} ms", f"{base_wall * 1000:.0f} ms", f"{wall / base_wall:.2f}"))
        if "20 s" in label:
            rows.append(("peak RSS, lockup run", f"{rss / 2**20:.1f} MiB", f"{base_rss / 2**20:.1f} MiB",
                         f"{rss / base_rss:.2f}"))
    ours, bare = spin_rate()
    rows.append(("spinning loop, fast-forward off (turns/s)", f"{ours:,.0f}", f"{bare:,.0f}", f"{ours / bare:.2f}"))
    threads_wall, trio_wall = engines(repeat)
    rows.append(("seed-case lockup (watchdog 2 s): threads engine vs trio engine, wall",
                 f"{threads_wall * 1000:.0f} ms", f"{trio_wall * 1000:.0f} ms", f"{threads_wall / trio_wall:.2f}"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("model", "big-log", "trace", "sweep", "real", "scale"),
                        help="run only these rows")
    parser.add_argument("--write", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args()
    global MEASURED_AT
    import docgen

    MEASURED_AT = docgen.code_version()  # the code measured: as the run starts
    rows: list[tuple[str, str, str, str]] = []
    if args.only:
        with tempfile.TemporaryDirectory() as directory:
            if args.only == "model":
                rows = model_rows(args.repeat)
            elif args.only == "big-log":
                rows = big_log(Path(directory), args.repeat)
            elif args.only == "trace":
                rows = qemu_trace(Path(directory), args.repeat)
            else:
                rows = {"sweep": sweep_rates, "real": real_rows, "scale": scale_rows}[args.only](Path(directory))
            if args.write:
                _write(f"bench-{args.only}", rows)
            return _print(rows)
    rows = model_rows(args.repeat)
    with tempfile.TemporaryDirectory() as directory:
        logs = big_log(Path(directory), args.repeat)
        trace = qemu_trace(Path(directory), args.repeat)
        sweeps = sweep_rates(Path(directory))
        scale = scale_rows(Path(directory))
    if args.write:
        _write("bench-model", rows)
        _write("bench-big-log", logs)
        _write("bench-trace", trace)
        _write("bench-sweep", sweeps)
        _write("bench-scale", scale)
    return _print(rows + logs + trace + sweeps + scale)


def _write(name: str, rows: list[tuple[str, str, str, str]],
           header: tuple[str, ...] = ("measure", "vcpu_sched", "baseline", "ratio")) -> None:
    import docgen

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row[:len(header)]) + " |" for row in rows]
    docgen.write_block(docgen.DOCS / "benchmarks.md", name, "\n".join(lines), f"tools/bench.py:{name}", MEASURED_AT)


def _print(rows: list[tuple[str, str, str, str]]) -> int:
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'vcpu_sched':>12}  {'baseline':>12}  {'ratio':>6}")
    for name, value, base, ratio in rows:
        print(f"{name:<{width}}  {value:>12}  {base:>12}  {ratio:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
