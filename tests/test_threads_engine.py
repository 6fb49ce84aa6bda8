"""The threads engine: the hang on real OS threads, psutil's view of it, a clean end, the same verdicts.

Wall time is bounded: every run here has a wall deadline, and each is checked to end well within it.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import expectation_rows, variant
from vcpu_sched import runner
from vcpu_sched.analyze.logread import read_log
from vcpu_sched.analyze.summary import summarise
from vcpu_sched.config import RunSettings
from vcpu_sched.engine.threads_engine import ThreadsEngine
from vcpu_sched.model.machine import Machine
from vcpu_sched.scenario import apply, load

BOUND_S = 20.0


def _threads_run(settings: RunSettings) -> tuple[ThreadsEngine, object]:
    engine = ThreadsEngine(Machine(variant(settings, engine="threads", wall_deadline_s=BOUND_S)))
    return engine, engine.run()


def test_seed_case_hangs_for_real_and_the_spinning_thread_is_found(seed_settings: RunSettings) -> None:
    before = set(threading.enumerate())
    os_threads_before = psutil.Process().num_threads()
    engine, result = _threads_run(variant(seed_settings, watchdog_s=5.0))
    assert result.verdict == "lockup"  # type: ignore[attr-defined]
    lockup = result.lockup  # type: ignore[attr-defined]
    assert lockup.stuck_cpu == 0 and lockup.bql_holder == 1
    holder = lockup.holder_thread
    assert holder["name"] == "CPU 1/KVM" and isinstance(holder["native_id"], int)
    assert holder["cpu_percent"] > 40, "the holder burns a core (top -H)"
    assert lockup.top_threads[0]["name"] == "CPU 1/KVM", "it is the busiest thread"
    if sys.platform.startswith("linux"):
        assert holder["os_name"] == "CPU 1/KVM", "named for the OS too"
    assert lockup.holder_iterations > 10_000, "real loop turns, with the BQL held"
    assert result.guest_time_s < 7.0, "guest time stops at the verdict, not after the psutil sampling"  # type: ignore[attr-defined]
    # A clean end: the spinning thread saw the stop and let go, every thread was joined.
    assert engine.leftover_threads == []
    assert set(threading.enumerate()) == before
    # join() returns when the Python thread is done; its OS thread exits a moment later.
    deadline = time.monotonic() + 5
    while psutil.Process().num_threads() != os_threads_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert psutil.Process().num_threads() == os_threads_before
    assert result.wall_time_s < BOUND_S / 2  # type: ignore[attr-defined]


def test_fix_boots_on_threads(seed_settings: RunSettings) -> None:
    engine, result = _threads_run(variant(seed_settings, fix="quiesced"))
    assert result.verdict == "booted" and result.cpus_online == 32  # type: ignore[attr-defined]
    assert engine.leftover_threads == []


# Not the rows that pin a schedule of one engine (a race's seed): another engine does not follow it.
UNPINNED = [row for row in expectation_rows(one_hang=True)
            if "engine" not in load(row.values[0]).expect[row.values[1]].variant]


@pytest.mark.parametrize("name,index", UNPINNED)
def test_both_engines_agree(name: str, index: int) -> None:
    scenario = load(name)
    expect = scenario.expect[index]
    settings = apply(scenario.settings, {**expect.variant, "watchdog_s": 4.0}, name)
    trio_verdict = runner.run(settings).verdict
    engine, result = _threads_run(settings)
    assert trio_verdict == result.verdict == expect.verdict, result.reason  # type: ignore[attr-defined]
    assert engine.leftover_threads == []


def test_threads_log_is_analysable(seed_settings: RunSettings, tmp_path: Path) -> None:
    log = tmp_path / "threads.jsonl"
    result = runner.run(variant(seed_settings, engine="threads", watchdog_s=4.0, wall_deadline_s=BOUND_S), log)
    summary = summarise(read_log(log))
    assert summary["complete"] and summary["verdict"] == result.verdict == "lockup"
    assert summary["lockup_signature"]["holder_cpu"] == result.lockup.bql_holder  # type: ignore[union-attr]


def test_a_model_error_in_a_thread_is_raised_and_every_thread_ends(seed_settings: RunSettings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object, cpu: object, hc: object) -> object:
        raise RuntimeError("model bug")
        yield  # a generator, like the real one

    monkeypatch.setattr("vcpu_sched.model.spapr.Spapr.spapr_hypercall", broken)
    before = set(threading.enumerate())
    engine = ThreadsEngine(Machine(variant(seed_settings, smp=4, cores=4, engine="threads",
                                           wall_deadline_s=BOUND_S)))
    with pytest.raises(RuntimeError, match="model bug"):
        engine.run()
    assert engine.leftover_threads == [] and set(threading.enumerate()) == before
