"""Issue 25 item 7: `explore` never reports a clean pass when it saw nothing. A search whose schedules stop
at the step bound (or are cut at the wall-clock limit) without a failure is inconclusive, exit status 3;
the default step bound is sized from a plain run of the scenario, so that its schedules run to their end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vcpu_sched.cli import build_parser, main
from vcpu_sched.engine.explore_engine import Schedule
from vcpu_sched.explore import (
    EXIT_INCONCLUSIVE,
    MIN_MAX_STEPS,
    STEP_MARGIN,
    Exploration,
    explore_text,
    plain_run_bound,
)
from vcpu_sched.scenario import apply, load

README = Path(__file__).resolve().parent.parent / "README.md"
# The seed's guest with its fix at smp 2: about 700 steps, so the default bound is the 2000-step floor.
SMALL = ["spapr-rtas-stopped", "--smp", "2", "--fix", "quiesced"]
# QEMU issue 650 with its fix (force_rcu): a plain run of about 3700 steps, past the old default of 2000.
LONG = ["tcg-rcu-device-add", "--set", "force_rcu=true"]


def _explore(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    status = main(["explore", *argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_exit_status_3_is_not_any_other_status() -> None:
    assert EXIT_INCONCLUSIVE not in (0, 1, 2, 130, 141, 143)


def test_a_bound_every_schedule_reaches_is_inconclusive(capsys: pytest.CaptureFixture[str]) -> None:
    status, data = _explore([*SMALL, "--strategy", "random", "--seeds", "3", "--max-steps", "50"], capsys)
    assert status == EXIT_INCONCLUSIVE
    assert data["failure"] is None and data["result"] == "inconclusive" and data["inconclusive"] is True
    assert data["bound_hits"] == data["schedules"] == 3 and data["wall_hits"] == 0
    assert data["step_bound"] == {"max_steps": 50, "source": "--max-steps", "plain_run_steps": None,
                                  "plain_run_note": None}


def test_an_inconclusive_search_says_so_in_text(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["explore", *SMALL, "--strategy", "delay", "--max-steps", "50"])
    out = capsys.readouterr().out
    assert status == EXIT_INCONCLUSIVE
    assert "INCONCLUSIVE" in out and "stopped at the step bound of 50" in out and "--max-steps" in out
    assert "no failure within the bounds" not in out


def test_the_default_bound_comes_from_a_plain_run(capsys: pytest.CaptureFixture[str]) -> None:
    status, data = _explore([*SMALL, "--strategy", "random", "--seeds", "2"], capsys)
    bound = data["step_bound"]
    assert bound["source"] == "plain run" and bound["plain_run_steps"] > 0 and bound["plain_run_note"] is None
    assert bound["max_steps"] == max(MIN_MAX_STEPS, STEP_MARGIN * bound["plain_run_steps"])
    assert data["bounds"]["max_steps"] == bound["max_steps"]
    assert status == 0 and data["result"] == "pass" and data["bound_hits"] == 0


def test_a_scenario_longer_than_2000_steps_completes_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    status, data = _explore([*LONG, "--strategy", "random", "--seeds", "1"], capsys)
    assert data["step_bound"]["plain_run_steps"] > MIN_MAX_STEPS
    assert data["step_bound"]["max_steps"] > MIN_MAX_STEPS
    assert status == 0 and data["result"] == "pass" and data["bound_hits"] == 0
    assert data["outcomes"] == {"completed": 1}
    # the old default of 2000 steps saw none of these schedules to its end: inconclusive, not a pass
    status, data = _explore([*LONG, "--strategy", "random", "--seeds", "1", "--max-steps", "2000"], capsys)
    assert status == EXIT_INCONCLUSIVE and data["bound_hits"] == 1


def test_pct_spreads_its_change_points_over_the_plain_run(capsys: pytest.CaptureFixture[str]) -> None:
    status, data = _explore([*SMALL, "--strategy", "pct", "--seeds", "2"], capsys)
    assert status == 0 and data["step_bound"]["source"] == "plain run" and data["bound_hits"] == 0


def test_a_failure_is_a_failure_even_with_schedules_at_the_bound(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # The seed's hang at smp 2 (a lockup after about 84 steps); at 84 steps some schedules are still booting.
    status, data = _explore(["spapr-rtas-stopped", "--smp", "2", "--strategy", "random", "--seeds", "6",
                             "--preempt", "0.5", "--max-steps", "86", "--save", str(tmp_path / "s.json")], capsys)
    assert status == 1 and data["result"] == "failure" and data["inconclusive"] is False
    assert data["failure"]["kind"] == "lockup" and 1 <= data["bound_hits"] < data["schedules"]


def test_a_search_cut_at_its_wall_limit_is_inconclusive(capsys: pytest.CaptureFixture[str]) -> None:
    # the exhaustive search of the fixed seed at smp 2 takes seconds; 0.1 s (plain run included) cuts it
    status, data = _explore([*SMALL, "--wall-limit", "0.1"], capsys)
    assert status == EXIT_INCONCLUSIVE and data["result"] == "inconclusive" and data["failure"] is None
    assert data["complete"] is False and "wall-clock limit of 0.1 s" in data["incomplete"]
    assert data["schedules"] >= 1


def test_the_plain_run_honours_the_wall_limit() -> None:
    settings = apply(load("spapr-rtas-stopped").settings, {"smp": 2}, "test")
    bound = plain_run_bound(settings, wall_deadline=0.0)  # long past: cut at its first check
    assert bound.source == "plain run" and bound.plain_note == "wall-clock limit reached"
    assert bound.max_steps == MIN_MAX_STEPS
    assert "stopped early: wall-clock limit reached" in bound.describe()


def _schedule(verdict: str, reason: str) -> Schedule:
    return Schedule(verdict, reason, [], [], set())


def test_a_schedule_cut_at_the_wall_limit_is_counted_apart_and_is_inconclusive() -> None:
    report = Exploration("random", {"seeds": 2, "max_steps": 100}, load("spapr-rtas-stopped").settings)
    report.add(_schedule("booted", "every CPU up"))
    assert not report.inconclusive and report.result == "pass"
    report.add(_schedule("bound", "wall-clock limit reached"))
    assert report.wall_hits == 1 and report.bound_hits == 0
    assert report.inconclusive and report.result == "inconclusive"
    assert "1 schedules were cut at the wall-clock limit" in explore_text(report, None)
    report.add(_schedule("lockup", "spins"))
    assert not report.inconclusive and report.result == "failure"


def test_a_search_stopped_early_is_inconclusive() -> None:
    report = Exploration("exhaustive", {"max_steps": 100}, load("spapr-rtas-stopped").settings)
    report.add(_schedule("booted", "every CPU up"))
    report.incomplete = "stopped at 1 schedules"
    assert report.inconclusive
    assert "the search stopped early (stopped at 1 schedules)" in explore_text(report, None)


def test_help_and_readme_document_exit_status_3() -> None:
    parser = build_parser("explore")
    subparsers = next(a for a in parser._actions if a.dest == "command")
    text = subparsers.choices["explore"].format_help()  # type: ignore[attr-defined]
    assert "3 inconclusive" in " ".join(text.split())
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert "3 when it is inconclusive" in readme
    docs = " ".join((README.parent / "docs" / "exploring.md").read_text(encoding="utf-8").split())
    assert "exit status 3" in docs
