"""RCU in the model: grace periods, drain_call_rcu and QEMU issue 650's device_add hang."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trio

from tests.conftest import Qemu, logged_run, run_in_test_clock, variant, wait_for
from vcpu_sched.analyze.logread import read_log
from vcpu_sched.analyze.summary import summarise
from vcpu_sched.config import RunSettings
from vcpu_sched.model.effects import Block
from vcpu_sched.model.machine import Machine
from vcpu_sched.model.rcu import rcu_read_lock, rcu_read_unlock, rcu_register_thread, synchronize_rcu
from vcpu_sched.scenario import load


@pytest.fixture
def device_add() -> RunSettings:
    return load("tcg-rcu-device-add").settings


def test_a_grace_period_waits_for_a_reader_that_began_before_it(device_add: RunSettings) -> None:
    machine = Machine(device_add)
    old = rcu_register_thread(machine, "old reader")
    rcu_read_lock(machine, old)
    sync = synchronize_rcu(machine)
    wait = next(sync)
    assert isinstance(wait, Block) and machine.rcu.gp_event in wait.wake
    late = rcu_register_thread(machine, "late reader")
    rcu_read_lock(machine, late)  # began after the grace period started: does not hold it up
    generation = machine.rcu.gp_event.generation
    rcu_read_unlock(machine, old)
    assert machine.rcu.gp_event.generation == generation + 1, "the leaving reader wakes the writer"
    with pytest.raises(StopIteration):
        next(sync)


async def test_the_monitor_hang_is_explained_as_a_grace_period(autojump_clock: trio.testing.MockClock,
                                                               device_add: RunSettings) -> None:
    result = await run_in_test_clock(device_add)
    assert result.verdict == "lockup" and result.lockup is not None
    lockup = result.lockup
    assert lockup.stuck_thread == "main" and lockup.bql_holder_thread is None
    assert lockup.main_loop_waits_for == "drain_complete_event"
    text = " ".join(lockup.chain)
    assert "grace period that never ends" in text and "CPU 0/TCG" in text and "force_rcu" in text


async def test_with_force_rcu_device_add_fails_as_qemu_says(autojump_clock: trio.testing.MockClock,
                                                            device_add: RunSettings) -> None:
    result = await run_in_test_clock(variant(device_add, force_rcu=True))
    assert result.verdict == "completed" and "busy-loop: done" in result.console


def test_analyze_agrees(device_add: RunSettings, tmp_path: Path) -> None:
    verdict, events = logged_run(device_add, tmp_path)
    summary = summarise(read_log(tmp_path / "run.jsonl"))
    assert verdict == "lockup" and summary["agrees_with_watchdog"]
    assert summary["lockup_signature"]["waiting_for"] == "drain_complete_event"
    waits = [e for e in events if e["event"] == "rcu_wait_for_readers"]
    assert waits and waits[-1]["readers"] == ["CPU 0/TCG"] and not waits[-1]["forced"]


def _drain_latency_ms(settings: RunSettings, tmp_path: Path) -> float:
    """Guest milliseconds from `device_add` to its error: the drain_call_rcu it waits in."""
    _, events = logged_run(settings, tmp_path)
    start = next(e["t_ns"] for e in events if e["event"] == "monitor_command")
    return (next(e["t_ns"] for e in events if e["event"] == "monitor_error") - start) / 1e6


@pytest.mark.parametrize(("version", "naps"), [("10.1", True), ("10.2", False), ("11.1", False)])
def test_the_call_rcu_thread_naps_before_a_grace_period_only_before_55d98e3ede(
        device_add: RunSettings, tmp_path: Path, version: str, naps: bool) -> None:
    # Before it, call_rcu_thread waited five 10 ms naps for callbacks to pile up; since, the grace period
    # starts at once and the drain forces it.
    latency = _drain_latency_ms(variant(device_add, force_rcu=True, qemu_version=version), tmp_path)
    assert (latency >= 50) == naps, latency


def test_since_55d98e3ede_a_grace_period_forces_itself_after_five_naps(device_add: RunSettings) -> None:
    # No drain waits: the old RCU never calls a notifier then; the new one does after 50 ms of polling.
    for version, forced in (("10.1", False), ("11.1", True)):
        machine = Machine(variant(device_add, qemu_version=version))
        reader = rcu_register_thread(machine, "busy reader")
        kicks: list[bool] = []
        reader.force_rcu.append(lambda kicks=kicks: kicks.append(True))
        rcu_read_lock(machine, reader)
        sync = synchronize_rcu(machine)
        waits = [next(sync) for _ in range(6)]
        assert bool(kicks) == forced, version
        assert all(isinstance(w, Block) for w in waits)
        if forced:
            assert [w.timeout_ns for w in waits] == [10_000_000] * 5 + [None]
            assert machine.rcu.gp_event in waits[-1].wake and len(kicks) == 1
        else:
            assert all(w.timeout_ns is None for w in waits)


qmp = pytest.importorskip("qemu.qmp")


# Without the notifier the test waits 3 s to see device_add go unanswered: slow. The default suite keeps
# device_add over QMP (with it), the seed hang's unanswered commands (test_qmp) and the verdicts (test_scenarios).
@pytest.mark.parametrize("force_rcu", [pytest.param(False, marks=pytest.mark.slow), True])
def test_device_add_over_qmp(tmp_path: Path, force_rcu: bool) -> None:
    """A management tool's view: without the notifier device_add is never answered (out-of-band commands
    still are); with it, QEMU 7.2's own error comes back."""
    q = Qemu(tmp_path, "--scenario", "tcg-rcu-device-add", "--set", f"force_rcu={str(force_rcu).lower()}",
             "--set", "monitor=[]", "-M", "pseries,accel=tcg", "-smp", "2", paused=False)
    try:
        wait_for(lambda: "busy-loop: CPU 0 spins" in q.console() or q.proc.poll() is not None, 60)
        assert q.proc.poll() is None

        async def session() -> None:
            client = qmp.QMPClient("test")
            await client.connect(str(q.sock))
            if force_rcu:
                with pytest.raises(qmp.ExecuteError) as error:
                    await asyncio.wait_for(client.execute("device_add"), 5)
                assert error.value.error_class == "GenericError"
                assert error.value.error.error.desc == "Parameter 'driver' is missing"
            else:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(client.execute("device_add"), 3)
                assert await asyncio.wait_for(client.execute("query-yank", oob=True), 5)
            await client.disconnect()

        asyncio.run(session())
    finally:
        q.proc.kill()
        q.proc.wait()
