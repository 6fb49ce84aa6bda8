"""`vcpu-sched sweep [SCENARIO] [variant options] --seeds A:B`: every seed of a range, counted by verdict.

Seeds go out in batches (each a few seconds of work), to worker processes on the local cores or, with
`--cluster tcp://HOST:8786`, to a Dask cluster (the optional `dask` extra). A run is a function of its
settings and seed (the engine core's determinism), so the counts are the same whatever the executor. A
local worker that dies takes only its batch with it: the pool is rebuilt and the batch sent again (twice
at most); Dask retries a lost batch itself.

Each seed whose verdict is not the expected one (`--expect`), or without it each failure, is appended to
the seed database (`--db`, JSON lines) as soon as its batch returns, so an interrupted sweep keeps what
it found. An entry has the scenario, the run's settings, the seed, verdict and reason, the command that
replays it and the code version (package version and a hash of the model's source).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunSettings
from .errors import BadInput, WorkerLost
from .files import MAX_LINE, Appendable, bounded_lines, cut, open_text_input
from .numbers import is_digits
from .pool import Progress, local_pool, raise_killed, stop
from .verdicts import SUCCESS

DEFAULT_DB = "vcpu-sched-seeds.jsonl"
RETRIES = 2
Outcome = tuple[int, str, str]  # seed, verdict, reason


MAX_SEED = 2**63 - 1  # a seed is a setting (scenario.SCHEMA)
MAX_SEEDS = 10**9  # seeds per sweep: days of work on a large host; the batches are ranges, so memory stays small


def parse_seeds(text: str) -> range:
    """`A:B` (B excluded) or a single seed, in ASCII digits."""
    start, sep, stop_ = text.partition(":")
    if not (is_digits(start) and (is_digits(stop_) or not sep)) or len(text) > 60:
        raise BadInput(f"--seeds {text[:60]!r}: expected A:B (seeds A to B-1) or one seed, in digits 0-9")
    seeds = range(int(start), int(stop_)) if sep else range(int(start), int(start) + 1)
    if seeds.stop <= seeds.start:
        raise BadInput(f"--seeds {text!r}: an empty range")
    if seeds.stop - 1 > MAX_SEED:
        raise BadInput(f"--seeds {text!r}: a seed is at most {MAX_SEED}")
    if seeds.stop - seeds.start > MAX_SEEDS:
        raise BadInput(f"--seeds {text!r}: more than {MAX_SEEDS:,} seeds in one sweep; split the range")
    return seeds


def run_batch(settings: RunSettings, seeds: Sequence[int]) -> list[Outcome]:
    """One task: every seed of the batch, in this process (a pool worker or a Dask worker)."""
    from .engine import make_engine
    from .model.machine import Machine

    out = []
    for seed in seeds:
        result = make_engine(Machine(dataclasses.replace(settings, seed=seed))).run()
        out.append((seed, result.verdict, result.reason))
    return out


def batches(seeds: range, size: int) -> list[range]:
    return [seeds[i:i + size] for i in range(0, len(seeds), size)]


def code_version() -> str:
    """The package version and a short hash of the model's source: what a seed's verdict depends on."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def replay_command(scenario: str, settings: RunSettings, base: RunSettings, seed: int) -> str:
    changed = {k: v for k, v in settings.to_dict().items()
               if k not in ("seed", "scenario") and v != base.to_dict().get(k)}
    sets = "".join(f" --set {k}={json.dumps(v)}" for k, v in sorted(changed.items()))
    return f"vcpu-sched run {scenario} --seed {seed}{sets}"


def local_results(settings: RunSettings, work: list[range], jobs: int | None) -> Iterator[list[Outcome]]:
    """Each batch's outcomes as it completes, from worker processes on this machine."""
    pending = {i: 0 for i in range(len(work))}  # batch -> times it was lost
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_killed) if main else None
    try:
        while pending:
            executor = local_pool(min(jobs or os.cpu_count() or 1, len(pending)))  # no idle workers
            try:
                futures = {executor.submit(run_batch, settings, work[i]): i for i in pending}
                for future in concurrent.futures.as_completed(futures):
                    i = futures[future]
                    try:
                        outcomes = future.result()
                    except BrokenProcessPool:
                        break  # a worker died: rebuild the pool and send what is left again
                    del pending[i]
                    yield outcomes
            finally:
                stop(executor)
            for i in pending:
                pending[i] += 1
                if pending[i] > RETRIES:
                    raise WorkerLost(f"sweep: batch of seeds {work[i][0]}-{work[i][-1]} lost {RETRIES + 1} times "
                                     "(a worker process died each time: killed, out of memory?)")
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def dask_results(settings: RunSettings, work: list[range], address: str) -> Iterator[list[Outcome]]:
    """The same on a Dask cluster: one task per batch, retried by Dask if its worker is lost."""
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise BadInput("--cluster needs Dask: pip install 'vcpu_sched[dask]'") from None
    try:
        client = Client(address, timeout=5)
    except (OSError, TimeoutError) as e:
        raise BadInput(f"--cluster {address}: cannot reach the Dask scheduler: {e}") from None
    try:
        futures = client.map(run_batch, [settings] * len(work), work, retries=RETRIES, pure=False)
        for _, outcomes in as_completed(futures, with_results=True):
            yield outcomes
    finally:
        client.close()


def sweep(scenario: str, settings: RunSettings, base: RunSettings, seeds: range, expect: str | None,
          db: Appendable | None, jobs: int | None = None, cluster: str | None = None,
          batch: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every seed; append the unexpected ones to `db`; return the counts."""
    workers = jobs or (2 if cluster else None) or os.cpu_count() or 1
    size = batch or max(1, min(500, len(seeds) // (workers * 4) or 1))
    work = batches(seeds, size)
    bar = Progress(len(seeds), "seeds", "sweep") if progress else None
    counts: Counter[str] = Counter()
    recorded = 0
    version = code_version() if db is not None else ""
    start = time.perf_counter()
    results = dask_results(settings, work, cluster) if cluster else local_results(settings, work, jobs)
    for outcomes in results:
        for seed, verdict, reason in outcomes:
            counts[verdict] += 1
            wrong = verdict != expect if expect else verdict not in SUCCESS
            if wrong and db is not None:
                db.write(json.dumps({"scenario": scenario, "settings": {**settings.to_dict(), "seed": seed},
                                     "seed": seed, "verdict": verdict, "reason": reason,
                                     "replay": replay_command(scenario, settings, base, seed),
                                     "version": version}, sort_keys=True) + "\n")
                recorded += 1
        if db is not None:
            db.flush()
        if bar is not None:
            rate = sum(counts.values()) / max(time.perf_counter() - start, 1e-9)
            bar.step(len(outcomes), f"({rate:,.0f} runs/s)")
    wall = time.perf_counter() - start
    runs = sum(counts.values())
    unexpected = runs - counts[expect] if expect else sum(n for v, n in counts.items() if v not in SUCCESS)
    return {"scenario": scenario, "seeds": [seeds.start, seeds.stop], "runs": runs, "verdicts": dict(counts),
            "expect": expect, "unexpected": unexpected, "recorded": recorded, "wall_time_s": wall,
            "runs_per_s": runs / wall if wall else 0.0, "executor": cluster or f"local x{workers}",
            "batch": size}


def sweep_text(s: dict[str, Any], db: str | None) -> str:
    verdicts = ", ".join(f"{v} {n:,}" for v, n in sorted(s["verdicts"].items()))
    lines = [f"sweep {s['scenario']} seeds {s['seeds'][0]}:{s['seeds'][1]} on {s['executor']} "
             f"(batches of {s['batch']}): {s['runs']:,} runs in {s['wall_time_s']:.1f} s, "
             f"{s['runs_per_s']:,.0f} runs/s",
             f"verdicts: {verdicts}"]
    what = f"not {s['expect']}" if s["expect"] else "failures"
    lines.append(f"{what}: {s['unexpected']:,}" + (f" (written to {db})" if db and s["recorded"] else ""))
    return "\n".join(lines)


def read_db(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a seed database (for the pytest plugin); damaged lines are skipped."""
    entries = []
    with open_text_input(str(path), path) as stream:
        lines = [line for line in bounded_lines(stream) if not cut(line, MAX_LINE)]
    for line in lines:
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("scenario"), str) and isinstance(entry.get("seed"), int):
            entries.append(entry)
    return entries
