"""`vcpu-sched real`: a scenario on a real qemu-system-ppc64 with a real Linux guest, beside the model at
the binary's own release."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from ..config import RunSettings
from ..errors import BadInput
from ..verdicts import SUCCESS
from . import plan as planning
from .kit import Kit, check_binary, check_client, find_kit
from .verdict import evidence, verdict

DEFAULT_BINARY = "qemu-system-ppc64"


@dataclass
class Binary:
    """A QEMU binary and the release the model is set to for it."""

    path: str
    version: str
    release: str


def binary(path: str | None, option: str = "--qemu-binary") -> Binary:
    """`--qemu-binary` (default: qemu-system-ppc64 on PATH), asked for its version over QMP."""
    from ..versions import release_of
    from .session import binary_version

    found = check_binary(path or DEFAULT_BINARY, option)
    try:
        version = binary_version(found)
        return Binary(found, version, release_of(version))
    except (RuntimeError, OSError, ValueError, TimeoutError) as e:
        raise BadInput(f"{option} {path or DEFAULT_BINARY}: cannot ask it its version: {e}") from None


def check_deadline(deadline_s: float) -> None:
    if not 1.0 <= deadline_s <= 86400:
        raise BadInput("--deadline: between 1 and 86400 wall seconds")


def run_real(settings: RunSettings, variant: dict[str, Any], qemu: Binary, kit: Kit, deadline_s: float,
             console_out: Any = None, saved_boot: bool = True) -> dict[str, Any]:
    """One row on `qemu` and in the model at its release: both verdicts, the evidence, the command line."""
    try:
        plan = planning.plan(settings, variant, qemu.release)
    except planning.NotRun as e:
        return {"run": False, "reason_not_run": str(e), "release": qemu.release, "binary": qemu.path}
    return run_plan(plan, settings, qemu, kit, deadline_s, console_out, saved_boot)


def run_plan(plan: planning.Plan, settings: RunSettings, qemu: Binary, kit: Kit, deadline_s: float,
             console_out: Any = None, saved_boot: bool = True, destination: Binary | None = None) -> dict[str, Any]:
    """A planned row, real and modelled (migrating into `destination` when the plan has one)."""
    from .. import runner
    from . import session

    start = time.perf_counter()
    model = runner.run(plan.model)
    model_wall = time.perf_counter() - start
    start = time.perf_counter()
    into = destination.path if destination is not None and plan.destination is not None else None
    reading = session.run(qemu.path, plan, kit, settings.seed, deadline_s, console_out, saved_boot, into)
    real_verdict, reason = verdict(reading, settings.plain_boot)
    return {
        "run": True, "verdict": real_verdict, "reason": reason, "harness_error": reading.harness,
        "binary": qemu.path, "version": qemu.version, "release": qemu.release,
        "qemu_args": list(plan.argv_tail), "cmdline": plan.script.cmdline, "kdump_cmdline": plan.script.kdump_cmdline,
        "boot": reading.boot,
        "migrate_to": {"binary": destination.path, "version": destination.version} if into and destination else None,
        "evidence": evidence(reading), "qmp": reading.qmp, "console": reading.console,
        "model": {"verdict": model.verdict, "reason": model.reason, "settings": plan.model.to_dict(),
                  "release": plan.destination or plan.release, "wall_time_s": model_wall},
        "agree": model.verdict == real_verdict, "wall_time_s": time.perf_counter() - start,
    }


def report_text(scenario: str, row: dict[str, Any]) -> str:
    lines = [f"== {row['verdict'].upper()}: {row['reason']} [real QEMU {row['version']}: {scenario}] =="]
    lines.append(f"qemu:    {row['binary']} {' '.join(row['qemu_args'])}")
    if row["migrate_to"]:
        lines.append(f"migrate: into {row['migrate_to']['binary']} (QEMU {row['migrate_to']['version']}), "
                     "same command line")
    kdump = f"; kdump kernel: {row['kdump_cmdline']}" if row["kdump_cmdline"] else ""
    lines.append(f"guest:   {row['cmdline']}{kdump}")
    lines.append(f"boot:    {row['boot']}")
    if row["harness_error"]:
        lines.append(f"harness: {row['harness_error']} (the guest script could not do its part)")
    lines.append("evidence:")
    lines += [f"  {line}" for line in row["evidence"]] or ["  (none)"]
    if row["qmp"]:
        lines.append("monitor (QMP):")
        lines += [f"  {line}" for line in row["qmp"]]
    model = row["model"]
    lines.append(f"model at QEMU {model['release']}: {model['verdict']} ({model['reason']}) - "
                 f"{'agrees' if row['agree'] else 'DISAGREES'}")
    lines.append(f"real run: {row['wall_time_s']:.1f} s wall; model: {model['wall_time_s']:.2f} s")
    return "\n".join(lines)


def real_main(args: argparse.Namespace, settings: RunSettings, variant: dict[str, Any]) -> int:
    if args.qemu_version is not None:
        raise BadInput("--qemu-version: the binary's own version (query-version) sets the model")
    check_deadline(args.deadline)
    check_client()
    qemu = binary(args.qemu_binary)
    destination = binary(args.migrate_to, "--migrate-to") if args.migrate_to is not None else None
    try:
        plan = planning.plan(settings, variant, qemu.release, destination.release if destination else None)
    except planning.NotRun as e:
        into = f" into {destination.version}" if destination else ""
        raise BadInput(f"not run on QEMU {qemu.version}{into}: {e}") from None
    kit = find_kit()

    def console(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    row = run_plan(plan, settings, qemu, kit, args.deadline, None if args.quiet else console, not args.fresh_boot,
                   destination)
    if args.json:
        print(json.dumps({"scenario": settings.scenario, **row}, sort_keys=True))
    else:
        print(report_text(settings.scenario, row))
    if row["harness_error"]:
        return 1
    if args.expect is not None:
        return 0 if row["verdict"] == args.expect else 1
    return 0 if row["verdict"] in SUCCESS else 1
