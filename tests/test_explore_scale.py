"""explore --strategy random|pct in parallel: the report does not depend on the number of workers; PCT
(Burckhardt et al.) finds the seed's hang; its chooser follows priorities with depth-1 change points."""

from __future__ import annotations

import pytest

from tests.conftest import variant
from vcpu_sched.config import RunSettings
from vcpu_sched.engine.explore_engine import pct_chooser
from vcpu_sched.explore import explore_exhaustive, explore_random

# The default suite searches with one preemption (or delay); two is slow (pytest -m slow).
BOUNDS = [1, pytest.param(2, marks=pytest.mark.slow)]


def test_parallel_random_search_reports_the_same(seed_settings: RunSettings) -> None:
    settings = variant(seed_settings, smp=2, cores=2, timebase_reset="reverted", seed=5)
    one = explore_random(settings, 24, 0.3, 2000, jobs=1).to_dict()
    two = explore_random(settings, 24, 0.3, 2000, jobs=2).to_dict()
    for key in ("schedules", "states", "outcomes", "failure"):
        assert one[key] == two[key], key
    assert one["schedules"] == 24 and one["complete"]


def test_pct_finds_the_seed_hang(seed_settings: RunSettings) -> None:
    report = explore_random(variant(seed_settings, smp=2, cores=2), 5, 0.0, 2000, strategy="pct", depth=3, jobs=2)
    assert report.shortest is not None and report.shortest.verdict == "lockup"
    assert report.bounds == {"seeds": 5, "max_steps": 2000, "depth": 3}


def test_pct_runs_the_highest_priority_thread_and_demotes_it_at_change_points() -> None:
    names = ["main", "CPU 0/KVM", "CPU 1/KVM"]
    plain = pct_chooser(seed=7, depth=1, steps=10)  # no change point: one thread, always the same
    assert len({plain(names, None) for _ in range(10)}) == 1
    demoting = pct_chooser(seed=7, depth=4, steps=6)  # three change points among six choices
    picks = [demoting(names, None) for _ in range(6)]
    assert len(set(picks)) >= 2  # the first choice is demoted at some change point


def test_a_livelock_is_reported_as_a_lasso(seed_settings: RunSettings) -> None:
    report = explore_random(variant(seed_settings, smp=2, cores=2), 1, 0.0, 2000, strategy="pct", depth=2)
    failure = report.to_dict()["failure"]
    lasso = failure["lasso"]
    assert lasso["cycle"] and all(step.startswith("CPU 1/KVM: spins") for step in lasso["cycle"])
    assert lasso["stem_steps"] + len(lasso["cycle_steps"]) == failure["steps"]
    no_livelock = explore_random(variant(seed_settings, smp=2, cores=2, fix="quiesced"), 1, 0.0, 2000)
    assert no_livelock.shortest is None and no_livelock.to_dict()["failure"] is None


@pytest.mark.slow
def test_symmetry_reduction_visits_fewer_states_and_finds_the_same_failure(seed_settings: RunSettings) -> None:
    settings = variant(seed_settings, smp=3, cores=3)
    plain = explore_exhaustive(settings, 2000, 2)
    reduced = explore_exhaustive(settings, 2000, 2, symmetry=True)
    assert reduced.shortest is not None and plain.shortest is not None
    assert (reduced.shortest.verdict, len(reduced.shortest.steps)) == (plain.shortest.verdict,
                                                                       len(plain.shortest.steps))
    assert len(reduced.states) < len(plain.states)


@pytest.mark.parametrize("bound", BOUNDS)
def test_symmetry_changes_nothing_below_three_vcpus(seed_settings: RunSettings, bound: int) -> None:
    settings = variant(seed_settings, smp=2, cores=2)
    plain = explore_exhaustive(settings, 2000, bound)
    reduced = explore_exhaustive(settings, 2000, bound, symmetry=True)
    assert len(plain.states) == len(reduced.states) and plain.schedules == reduced.schedules


@pytest.mark.parametrize("bound", BOUNDS)
def test_delay_bounding_finds_the_same_shortest_failure_in_fewer_schedules(seed_settings: RunSettings,
                                                                           bound: int) -> None:
    settings = variant(seed_settings, smp=2, cores=2)
    preemptions = explore_exhaustive(settings, 2000, bound)
    delays = explore_exhaustive(settings, 2000, bound, delays=True)
    assert delays.shortest is not None and preemptions.shortest is not None
    assert (delays.shortest.verdict, len(delays.shortest.steps)) == ("lockup", len(preemptions.shortest.steps))
    assert delays.schedules < preemptions.schedules and delays.incomplete is None
    fixed = explore_exhaustive(variant(settings, fix="quiesced"), 2000, bound, delays=True)
    assert fixed.shortest is None and fixed.incomplete is None
