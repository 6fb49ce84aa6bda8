"""`vcpu-sched matrix [SCENARIO ...]`: every scenario x its variants, expected against actual.

Rows: each documented variant of a scenario file ([[expect]]: the verdict and the reason from the
reference), and, for pseries scenarios, each of those again with the other CPU models and with 2 and
256 CPUs, expected to give the same verdict (neither changes the mechanism). Expectations tagged as
`claim` in a scenario file are claims of a commit: the seed patch's first, under "Claims of the patch",
then each other commit's under its own header. Runs go to a process pool (one
worker per core); a progress bar goes to stderr. Exit status 1 on any mismatch.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from . import runner
from .config import PPC_CPUS, RunSettings
from .errors import BadInput, WorkerLost
from .pool import Progress, local_pool, raise_killed, stop
from .scenario import Scenario, apply, load, scenario_names

DERIVED_SMP = (2, 256)


@dataclass(frozen=True)
class Row:
    scenario: str
    variant: dict[str, Any]
    expected: str
    reason: str
    claim: str | None
    settings: RunSettings

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_show(k, v)}" for k, v in self.variant.items()) or "(as in the file)"


def _show(key: str, value: Any) -> str:
    """A variant's value as the scenario file writes it (TOML; register values in hex)."""
    if isinstance(value, bool):
        return str(value).lower()
    if key.endswith("lpcr") and isinstance(value, int):
        return hex(value)
    return "[]" if value in ([], ()) else str(value)


def rows_for(scenario: Scenario) -> list[Row]:
    rows = []
    for expect in scenario.expect:
        variants = [expect.variant]
        if scenario.settings.machine == "pseries" and expect.derive:
            base_cpu = expect.variant.get("cpu", scenario.settings.cpu)
            variants += [{**expect.variant, "cpu": cpu} for cpu in PPC_CPUS if cpu != base_cpu]
            variants += [{**expect.variant, "smp": n} for n in DERIVED_SMP]
        for i, variant in enumerate(variants):
            settings = apply(scenario.settings, variant, f"{scenario.path}: expect variant")
            rows.append(Row(scenario.name, variant, expect.verdict, expect.reason, expect.claim if i == 0 else None,
                            settings))
    return rows


def _run_row(row: Row) -> dict[str, Any]:
    start = time.perf_counter()
    result = runner.run(row.settings)
    lockup = result.lockup
    return {"scenario": row.scenario, "variant": row.variant, "label": row.label, "expected": row.expected,
            "actual": result.verdict, "match": result.verdict == row.expected, "reason": row.reason,
            "claim": row.claim, "guest_time_s": result.guest_time_s, "wall_time_s": time.perf_counter() - start,
            "spun": lockup.bql_holder_thread if lockup else None,
            "cause": result.reason, "smp": result.settings.smp, "effects": result.effects}


def _for_row(row: Row, run: dict[str, Any]) -> dict[str, Any]:
    """Another row's result for `row`, whose settings are the same."""
    return {**run, "scenario": row.scenario, "variant": row.variant, "label": row.label, "expected": row.expected,
            "match": run["actual"] == row.expected, "reason": row.reason, "claim": row.claim}


def run_matrix(names: list[str], jobs: int | None = None, engine: str = "trio") -> list[dict[str, Any]]:
    if not names:
        names = scenario_names()
    # A row that names its engine keeps it: it pins a schedule found there (a race's seed), which another
    # engine would not follow.
    rows = [row if "engine" in row.variant else dataclasses.replace(row, settings=dataclasses.replace(
            row.settings, engine=engine)) for name in names for row in rows_for(load(name))]
    if not rows:
        raise BadInput("matrix: the scenarios have no [[expect]] entries to check")
    progress = Progress(len(rows))
    results: list[dict[str, Any] | None] = [None] * len(rows)
    # A run is a function of its settings: rows that come to the same settings (a derived smp=2 of a file's
    # 2-vCPU variant) share one run.
    same: dict[RunSettings, list[int]] = {}
    for i, row in enumerate(rows):
        same.setdefault(row.settings, []).append(i)
    # The biggest machines first, so that no long run is left for the end while the other workers idle.
    firsts = sorted((indices[0] for indices in same.values()), key=lambda i: -rows[i].settings.smp)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_killed) if main else None
    executor = local_pool(jobs)
    try:
        futures = {executor.submit(_run_row, rows[i]): i for i in firsts}
        for future in concurrent.futures.as_completed(futures):
            try:
                done = future.result()
            except BrokenProcessPool:
                raise WorkerLost("matrix: a worker process died (killed, out of memory?)") from None
            for i in same[rows[futures[future]].settings]:
                results[i] = done if i == futures[future] else _for_row(rows[i], done)
                progress.step()
    finally:
        stop(executor)  # Ctrl-C, SIGTERM or an error: the queued rows are dropped, the workers end now
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return [r for r in results if r is not None]


SEED_PATCH = "spapr-rtas-stopped"
# Whose claims a scenario's `claim` rows check: the seed patch's, or another commit's (a scenario of a user's
# own is headed by its name).
CLAIMS_OF = {
    SEED_PATCH: "the patch (\"ppc/spapr: Fix RTAS stopped state\")",
    "spapr-hotplug": "the patch, for DLPAR CPU hotplug",
    "spapr-migrate": "the patch after a migration (QEMU issue 3079) and its follow-up 628bda1ab7",
    "spapr-migrate-from-9.2": "628bda1ab7 (\"target/ppc: Fix env->quiesced migration\"), its inference",
    "spapr-fwnmi-kdump": "aef92d87c5 (\"pseries: fix kvmppc_set_fwnmi()\")",
    "spapr-hotplug-kdump": "a1c2dfee4f (\"ppc/spapr: Skip system reset for quiesced CPUs\")",
    "spapr-nmi-kdump": "findings beside a1c2dfee4f: spapr_nmi and the other system resets",
    "s390x-sigp-cross": "f9530c3242 (\"s390x/kvm: Fix potential deadlock in sigp handling\")",
    "tcg-rcu-device-add": "ef149763a8 + dd47a8f654 (the force_rcu notifier, QEMU issue 650)",
    "spapr-kvm-halt-in-kernel": "afa63fc0e3 (kvm_irqchip_create returns early without an irqchip) and a posted patch",
    "spapr-guest-reboot": "0ec7e6779f (\"cpus.c: Fix race condition in cpu_stop_current()\")",
    "spapr-hotplug-compat": "b12a4efb76 (\"Fix a deadlock case in the CPU hotplug flow\")",
    "migration-pause-race": "96bce6831b and f962cac4c2 (two pause_all_vcpus callers: the monitor and migration)",
}


def claims_text(results: list[dict[str, Any]]) -> list[str]:
    """The claims rows, the seed patch's first under "Claims of the patch", then each other scenario's under
    a header naming the commit it checks; a blank line between groups."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if r["claim"]:
            groups.setdefault(r["scenario"], []).append(r)
    order = sorted(groups, key=lambda name: (name != SEED_PATCH, name))
    lines: list[str] = []
    for name in order:
        lines += [""] if lines else []
        lines.append(f"Claims of {CLAIMS_OF.get(name, name)}:")
        for r in groups[name]:
            mark = "ok " if r["match"] else "!! "
            lines.append(f"  {mark}{r['claim']}: {r['scenario']} {r['label']} -> {r['actual']} "
                         f"(expected {r['expected']})")
    return lines


def matrix_text(results: list[dict[str, Any]], wall_s: float) -> str:
    lines = claims_text(results)
    if lines:
        lines.append("")
    width = max(len(r["label"]) for r in results)
    lines += [f"   {'scenario':<26} {'variant':<{width}}  {'expected':<18} {'actual':<18} {'guest s':>9}  spun"]
    for r in results:
        mark = "   " if r["match"] else "!! "
        lines.append(f"{mark}{r['scenario']:<26} {r['label']:<{width}}  {r['expected']:<18} {r['actual']:<18} "
                     f"{r['guest_time_s']:>9.3f}  {r['spun'] or '-'}")
    mismatches = [r for r in results if not r["match"]]
    lines.append("")
    lines.append(f"{len(results)} runs, {len(mismatches)} mismatch{'es' if len(mismatches) != 1 else ''}, "
                 f"{wall_s:.1f} s wall")
    for r in mismatches:
        lines.append(f"!! {r['scenario']} {r['label']}: expected {r['expected']} ({r['reason']}), "
                     f"got {r['actual']}: {r['cause']}")
    return "\n".join(lines)
