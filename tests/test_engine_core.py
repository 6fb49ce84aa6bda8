"""The engine core's primitives, on every engine: BQL ownership, no lost wake-up, barging, owed time, and
the fast-forward credit. Small machines whose threads are written here, so each property is checked
alone; then determinism of whole runs across processes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import variant
from vcpu_sched import runner
from vcpu_sched.config import ENGINES, RunSettings
from vcpu_sched.engine import make_engine
from vcpu_sched.engine.explore_engine import ExploreEngine, first_enabled
from vcpu_sched.errors import ModelError
from vcpu_sched.model.effects import BqlLock, BqlUnlock, CondWait, QemuCond, Spend, Thread
from vcpu_sched.model.machine import Machine

ThreadFn = Callable[[Machine], Thread]


class ToyMachine(Machine):
    """A Machine whose QEMU threads are the given generator functions (named A, B, ...)."""

    def __init__(self, settings: RunSettings, programs: list[ThreadFn]) -> None:
        super().__init__(settings)
        self.programs = programs
        self.cond = QemuCond("toy_cond")
        self.log: list[str] = []
        self.flag = False

    def all_conds(self) -> list[QemuCond]:
        return [*super().all_conds(), self.cond]

    def threads(self) -> list[tuple[str, Callable[[], Thread]]]:
        return [(chr(ord("A") + i), lambda p=p: p(self)) for i, p in enumerate(self.programs)]


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _run(engine_name: str, programs: list[ThreadFn]) -> tuple[ToyMachine, Any]:
    settings = RunSettings(smp=1, cores=1, engine=engine_name, wall_deadline_s=20.0, watchdog_s=5.0,
                           deadline_s=10.0)
    machine = ToyMachine(settings, programs)
    if engine_name == "explore":  # the non-preemptive schedule: the running thread goes on
        return machine, ExploreEngine(machine, first_enabled).run()
    return machine, make_engine(machine).run()


def test_unlocking_a_bql_the_thread_does_not_hold_is_a_model_error(engine_name: str) -> None:
    def bad(m: Machine) -> Thread:
        yield BqlUnlock("bad_site")

    with pytest.raises(ModelError, match="A unlocks the BQL at bad_site but does not hold it"):
        _run(engine_name, [bad])


def test_locking_the_bql_twice_is_a_model_error(engine_name: str) -> None:
    def twice(m: Machine) -> Thread:
        yield BqlLock("first")
        yield BqlLock("second")

    with pytest.raises(ModelError, match="A locks the BQL at second while it already holds it"):
        _run(engine_name, [twice])


def test_a_broadcast_between_check_and_sleep_is_not_lost(engine_name: str) -> None:
    """The waiter checks its flag and sleeps in one CondWait; the signaller sets the flag and broadcasts
    with the BQL held. Whatever the interleaving, the waiter wakes and the guest finishes."""
    def waiter(m: Machine) -> Thread:
        assert isinstance(m, ToyMachine)
        for _ in range(200):
            yield BqlLock("waiter")
            while not m.flag:
                yield CondWait(m.cond, "waiter")
            m.flag = False
            m.log.append("woke")
            m.cond.broadcast()
            yield BqlUnlock("waiter")
        m.guest_finished()

    def signaller(m: Machine) -> Thread:
        assert isinstance(m, ToyMachine)
        for _ in range(200):
            yield BqlLock("signaller")
            while m.flag:
                yield CondWait(m.cond, "signaller")
            m.flag = True
            m.cond.broadcast()
            yield BqlUnlock("signaller")

    machine, result = _run(engine_name, [waiter, signaller])
    assert result.verdict == "booted", result.reason
    assert machine.log == ["woke"] * 200


@pytest.mark.parametrize("engine_name", ["trio", "explore"])
def test_an_unlock_relock_barges_past_a_waiter(engine_name: str) -> None:
    """As with a pthread mutex: letting go hands nothing over, so the running thread takes it again."""
    def holder(m: Machine) -> Thread:
        assert isinstance(m, ToyMachine)
        yield BqlLock("holder")
        yield Spend(100_000)  # more than a quantum: paid now, so B runs and waits for the BQL
        for _ in range(3):
            yield BqlUnlock("holder")
            yield BqlLock("holder")
            m.log.append("A")
        yield BqlUnlock("holder")

    def waiter(m: Machine) -> Thread:
        assert isinstance(m, ToyMachine)
        yield BqlLock("waiter")
        m.log.append("B")
        yield BqlUnlock("waiter")
        m.guest_finished()

    machine, result = _run(engine_name, [holder, waiter])
    assert result.verdict == "booted"
    assert machine.log == ["A", "A", "A", "B"]


def test_owed_cpu_time_is_paid_before_the_thread_blocks() -> None:
    """1000 loop turns of 1 us are owed and paid in quanta; before the next lock all of it has passed."""
    seen: list[int] = []

    def spender(m: Machine) -> Thread:
        for _ in range(1000):
            yield Spend(1_000)
        yield BqlLock("after")
        seen.append(m.now_ns())
        yield BqlUnlock("after")
        m.guest_finished()

    _run("trio", [spender])
    assert seen == [1_000_000]


@pytest.mark.parametrize("engine_name", ["trio", "explore"])
def test_a_fast_forwarded_spin_is_credited_its_loop_turns(engine_name: str, seed_settings: RunSettings) -> None:
    """The seed's hang: the holder's turns equal the time it held the BQL over the cost of a turn."""
    settings = variant(seed_settings, smp=2, cores=2, engine=engine_name, watchdog_s=2.0)
    result = make_engine(Machine(settings)).run()
    assert result.verdict == "lockup" and result.lockup is not None
    assert result.lockup.bql_holder == 1
    turns = result.cpu_stats["CPU 1/KVM"]["loop_iterations"]
    if engine_name == "trio":
        held_ns = result.bql_stats["CPU 1/KVM"]["max_hold_ns"]
        assert held_ns >= 2_000_000_000 - 10_000_000
        assert abs(turns - held_ns // settings.loop_cost_ns) <= 5  # the turns before the spin began
    else:
        assert turns >= 1, "the explorer steps a spin once, then parks it"


# --- determinism -----------------------------------------------------------------------------------

def _log_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_seed_gives_the_same_log_in_any_process(tmp_path: Path) -> None:
    """From the shell, and from a Python that imported hypothesis and ran other seeds first."""
    shell = tmp_path / "shell.jsonl"
    inproc = tmp_path / "inproc.jsonl"
    subprocess.run([sys.executable, "-m", "vcpu_sched", "run", "--seed", "1", "--watchdog", "5", "--quiet",
                    "--log", str(shell)], check=False, capture_output=True, timeout=120)
    script = ("import hypothesis, sys\n"
              "from vcpu_sched.cli import main\n"
              "for seed in ('7', '3514'):\n"
              "    main(['run', '--seed', seed, '--watchdog', '5', '--quiet', '--json'])\n"
              f"main(['run', '--seed', '1', '--watchdog', '5', '--quiet', '--log', {str(inproc)!r}])\n")
    subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, timeout=120)
    assert shell.stat().st_size > 10_000
    assert _log_digest(shell) == _log_digest(inproc)


def test_a_seed_gives_the_same_run_again_and_with_or_without_a_log(seed_settings: RunSettings,
                                                                    tmp_path: Path) -> None:
    for seed in (4131, 3514):
        settings = variant(seed_settings, seed=seed)
        runs = [runner.run(settings) for _ in range(3)] + [runner.run(settings, tmp_path / f"{seed}.jsonl")]
        assert len({(r.verdict, r.guest_time_s, r.effects) for r in runs}) == 1


def test_different_seeds_give_different_interleavings(seed_settings: RunSettings) -> None:
    times = {runner.run(variant(seed_settings, seed=seed, fix="quiesced")).guest_time_s for seed in range(5)}
    assert len(times) == 5


# A scenario of few quick rows (and four verdicts) in the default suite; the seed scenario's many rows are slow.
@pytest.mark.parametrize("name", ["spapr-hotplug-kdump", pytest.param("spapr-rtas-stopped", marks=pytest.mark.slow)])
def test_a_matrix_worker_gives_the_same_run_as_this_process(name: str) -> None:
    from vcpu_sched.matrix import rows_for, run_matrix
    from vcpu_sched.scenario import load

    rows = rows_for(load(name))
    results = run_matrix([name], jobs=2)
    assert len(results) == len(rows)
    for row, result in zip(rows, results, strict=True):
        here = runner.run(row.settings)
        assert (result["actual"], result["guest_time_s"]) == (here.verdict, here.guest_time_s), row.label
