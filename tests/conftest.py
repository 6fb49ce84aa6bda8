"""Shared helpers for the tests: settings for the seed case and quick runs on the virtual clock."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vcpu_sched import runner
from vcpu_sched.config import RunSettings
from vcpu_sched.engine.trio_engine import TrioEngine
from vcpu_sched.model.machine import Machine
from vcpu_sched.result import RunResult
from vcpu_sched.scenario import SCENARIO_DIR, load


@pytest.fixture(scope="session")
def seed_settings() -> RunSettings:
    """The seed's guest as the scenario file describes it."""
    return load("spapr-rtas-stopped").settings


def variant(base: RunSettings, **overrides: Any) -> RunSettings:
    return dataclasses.replace(base, **overrides)


def expectation_rows(one_hang: bool = False) -> list[Any]:
    """Every scenario's [[expect]] rows as pytest parameters (name, index), with ids "name-index". The
    first row of each verdict of a scenario is in the default suite; the rest are slow (pytest -m slow).
    With `one_hang` a lockup and a stuck CPU count as one verdict (a run that waits out its hang in real
    time)."""
    rows = []
    for name in sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")):
        seen: set[str] = set()
        for index, expect in enumerate(load(name).expect):
            kind = "hang" if one_hang and expect.verdict in ("lockup", "stuck-cpu") else expect.verdict
            marks = [pytest.mark.slow] if kind in seen else []
            seen.add(kind)
            rows.append(pytest.param(name, index, id=f"{name}-{index}", marks=marks))
    return rows


def read_events(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines event log, one dict per event."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def logged_result(settings: RunSettings, tmp_path: Path, **changes: Any) -> tuple[RunResult, list[dict[str, Any]]]:
    """Run a variant of `settings` with a log under `tmp_path`: its result and its events."""
    log = tmp_path / "run.jsonl"
    result = runner.run(variant(settings, **changes), log)
    return result, read_events(log)


def logged_run(settings: RunSettings, tmp_path: Path, **changes: Any) -> tuple[str, list[dict[str, Any]]]:
    """Run a variant of `settings` with a log under `tmp_path`: its verdict and its events."""
    result, events = logged_result(settings, tmp_path, **changes)
    return result.verdict, events


def wait_for(condition: Callable[[], object], timeout_s: float) -> None:
    """Poll `condition` (a subprocess's socket or output, which no clock of ours can drive) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


async def run_in_test_clock(settings: RunSettings) -> RunResult:
    """Run inside the test's own Trio run, on its (autojump) clock."""
    return await TrioEngine(Machine(settings)).run_async()


class Qemu:
    """`vcpu-sched qemu ARGV -nographic` with a QMP socket and a log under `tmp`, started paused (-S) unless
    `paused` is false; stdout and stderr go to files."""

    def __init__(self, tmp: Path, *argv: str, paused: bool = True) -> None:
        self.sock = tmp / "q.sock"
        self.log = tmp / "run.jsonl"
        self.out = tmp / "console.txt"
        self.err = tmp / "stderr.txt"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vcpu_sched", "qemu", "--log", str(self.log), *argv,
                 *(["-S"] if paused else []), "-nographic", "-qmp", f"unix:{self.sock},server=on,wait=off"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        wait_for(lambda: self.sock.exists() or self.proc.poll() is not None, 60)
        assert self.proc.poll() is None, self.err.read_text()

    def console(self) -> str:
        return self.out.read_text()
