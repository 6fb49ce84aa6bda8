"""Schedule exploration: the hang is found without the fix and not with it; schedules replay exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import variant
from vcpu_sched.analyze.logread import read_log
from vcpu_sched.analyze.summary import summarise
from vcpu_sched.cli import main
from vcpu_sched.config import RunSettings
from vcpu_sched.explore import explore_exhaustive, explore_random

# The default suite searches with one preemption; two (explore's default) is slow (pytest -m slow).
BOUNDS = [1, pytest.param(2, marks=pytest.mark.slow)]


@pytest.fixture
def smp2(seed_settings: RunSettings) -> RunSettings:
    return variant(seed_settings, smp=2, cores=2)


@pytest.mark.parametrize("bound", BOUNDS)
def test_exhaustive_finds_the_livelock_without_the_fix(smp2: RunSettings, bound: int) -> None:
    report = explore_exhaustive(smp2, max_steps=2000, preemption_bound=bound)
    failure = report.shortest
    assert failure is not None and failure.verdict == "lockup" and failure.holder == "CPU 1/KVM"
    assert "spins with the BQL held" in failure.reason
    assert report.outcomes.get("booted", 0) == 0, "no schedule of the unfixed guest boots"
    whats = [step.what for step in failure.steps if step.thread == "CPU 1/KVM"]
    assert whats[-1].startswith("spins"), "the schedule ends with the secondary spinning"


@pytest.mark.parametrize("bound", BOUNDS)
def test_no_failure_with_the_fix_within_the_bounds(smp2: RunSettings, bound: int) -> None:
    report = explore_exhaustive(variant(smp2, fix="quiesced"), max_steps=2000, preemption_bound=bound)
    assert report.shortest is None
    assert report.outcomes.get("booted", 0) >= 1 and report.bound_hits == 0, "every schedule ran to its end"


@pytest.mark.parametrize("bound", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_pruning_does_not_hide_a_failure(smp2: RunSettings, bound: int) -> None:
    pruned = explore_exhaustive(smp2, max_steps=100, preemption_bound=bound, prune=True)
    full = explore_exhaustive(smp2, max_steps=100, preemption_bound=bound, prune=False)
    assert full.pruned == 0 and pruned.pruned > 0
    assert pruned.shortest is not None and full.shortest is not None
    assert len(pruned.shortest.steps) == len(full.shortest.steps)
    assert pruned.states == full.states, "the same states are reached, fewer times"
    assert pruned.schedules < full.schedules


def test_random_schedules_find_it_too(seed_settings: RunSettings) -> None:
    report = explore_random(variant(seed_settings, smp=3, cores=3), seeds=20, preempt=0.3, max_steps=2000)
    assert report.outcomes == {"lockup": 20}


@pytest.mark.parametrize("bound", BOUNDS)
def test_cli_explore_saves_a_schedule_that_replays_exactly(smp2: RunSettings, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str], bound: int) -> None:
    schedule = tmp_path / "hang.schedule.json"
    assert main(["explore", "spapr-rtas-stopped", "--smp", "2", "--preemption-bound", str(bound), "--json",
                 "--save", str(schedule)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failure"]["kind"] == "lockup" and data["schedules"] > 1 and data["states"] > 1
    assert data["saved"] == str(schedule)
    log = tmp_path / "replay.jsonl"
    assert main(["run", "--replay", str(schedule), "--json", "--log", str(log)]) == 1
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["verdict"] == "lockup" and replayed["reproduced"] is True
    assert replayed["steps"] == data["failure"]["steps"]
    summary = summarise(read_log(log))
    assert summary["lockup_signature"]["holder"] == "CPU 1/KVM"
    assert summary["lockup_signature"]["stuck"] == "CPU 0/KVM"


@pytest.mark.parametrize("bound", BOUNDS)
def test_cli_explore_with_the_fix_exits_0(capsys: pytest.CaptureFixture[str], bound: int) -> None:
    assert main(["explore", "--smp", "2", "--fix", "quiesced", "--preemption-bound", str(bound)]) == 0
    assert "no failure within the bounds" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["explore", "--preempt", "2", "--strategy", "random"], "--preempt"),
    (["explore", "--max-steps", "0"], "--max-steps"),
])
def test_explore_bad_options(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_replay_of_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    for content, needle in (("not json", "not JSON"), ('{"format": "x"}', "not a schedule file"),
                            (json.dumps({"format": "vcpu_sched schedule 1", "settings": {"smp": 2, "cores": 2},
                                         "choices": ["CPU 7/KVM"], "steps": 5}), "not runnable here")):
        bad.write_text(content)
        assert main(["run", "--replay", str(bad)]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("bound", BOUNDS)
def test_sleep_sets_skip_reorderings_and_keep_the_failure(smp2: RunSettings, bound: int) -> None:
    plain = explore_exhaustive(smp2, max_steps=2000, preemption_bound=bound)
    reduced = explore_exhaustive(smp2, max_steps=2000, preemption_bound=bound, sleep_sets=True)
    assert plain.shortest is not None and reduced.shortest is not None
    assert (reduced.shortest.verdict, len(reduced.shortest.steps)) == (plain.shortest.verdict,
                                                                       len(plain.shortest.steps))
    assert reduced.schedules < plain.schedules
    assert reduced.outcomes.get("booted", 0) == plain.outcomes.get("booted", 0) == 0


@pytest.mark.parametrize("bound", BOUNDS)
def test_sleep_sets_find_the_s390x_race_and_nothing_with_the_fix(bound: int) -> None:
    from vcpu_sched.scenario import load

    settings = variant(load("s390x-sigp-cross").settings, sigp_jitter_us=8)
    found = explore_exhaustive(settings, max_steps=2000, preemption_bound=bound, sleep_sets=True)
    assert found.shortest is not None and found.shortest.verdict == "lockup"
    assert found.outcomes.get("completed", 0) >= 1, "a race: some schedules get through"
    fixed = explore_exhaustive(variant(settings, sigp_lock=True), max_steps=2000, preemption_bound=bound,
                               sleep_sets=True)
    assert fixed.shortest is None and fixed.bound_hits == 0
