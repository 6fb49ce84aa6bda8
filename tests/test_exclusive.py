"""Exclusive sections (model/exclusive.py) and e533f45d7d's deadlock on the x86 target (x86-synic-hotplug)."""

from __future__ import annotations

import contextvars
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import logged_result, run_in_test_clock, variant
from vcpu_sched.analyze.logread import read_log
from vcpu_sched.analyze.summary import summarise
from vcpu_sched.config import RunSettings
from vcpu_sched.errors import BadInput
from vcpu_sched.explore import explore_random
from vcpu_sched.model.cpus import current_cpu
from vcpu_sched.model.effects import Block
from vcpu_sched.model.exclusive import cpu_exec_end, cpu_exec_start, end_exclusive, start_exclusive
from vcpu_sched.model.machine import Machine
from vcpu_sched.model.qapi import QmpError
from vcpu_sched.model.x86.machine import device_add_x86_cpu
from vcpu_sched.scenario import apply, load

LOCKING_SEEDS = (279, 383, 526)  # seeds of the default engine that lock up without the fix (a sweep of 1000)


@pytest.fixture
def synic() -> RunSettings:
    return load("x86-synic-hotplug").settings


def _step(gen: Generator[Any, Any, Any], context: contextvars.Context) -> Any:
    """The generator's next effect, or StopIteration's value wrapped as ("done", value)."""
    try:
        return context.run(next, gen)
    except StopIteration as done:
        return ("done", done.value)


def test_start_exclusive_waits_for_every_running_vcpu_to_leave(synic: RunSettings) -> None:
    machine = Machine(synic)
    me, other = machine.cpus
    context = contextvars.copy_context()
    context.run(current_cpu.set, me)
    other.running = True  # inside kvm_cpu_exec's KVM_RUN loop
    kicks = other.kick_cond.generation
    section = start_exclusive(me)
    wait = _step(section, context)
    assert isinstance(wait, Block) and wait.wake == (machine.cpu_list.exclusive_cond,)
    assert other.has_waiter and other.kick_cond.generation > kicks, "counted and kicked"
    assert machine.cpu_list.pending_cpus == 2
    cpu_exec_end(other)  # it leaves guest code: the last one wakes the section
    assert machine.cpu_list.pending_cpus == 1 and not other.has_waiter
    assert _step(section, context) == ("done", None)
    assert me.exclusive_context_count == 1
    end_exclusive(me)
    assert machine.cpu_list.pending_cpus == 0


def test_a_cpu_arriving_during_a_section_waits_for_its_end(synic: RunSettings) -> None:
    machine = Machine(synic)
    me, late = machine.cpus
    context = contextvars.copy_context()
    context.run(current_cpu.set, me)
    assert _step(start_exclusive(me), context) == ("done", None), "nobody running: no wait"
    arrive = cpu_exec_start(late)
    wait = _step(arrive, context)
    assert isinstance(wait, Block) and wait.wake == (machine.cpu_list.exclusive_resume,)
    assert not late.running, "not running while it waits, so no later section counts on it"
    assert wait.seen == (machine.cpu_list.exclusive_resume.generation,), "what it saw under the list lock"
    end_exclusive(me)
    assert machine.cpu_list.exclusive_resume.generation != wait.seen[0], "the end is broadcast"
    assert _step(arrive, context) == ("done", None) and late.running
    assert machine.cpu_list.lock.acquire(blocking=False), "the CPU list lock is free again"


async def test_the_deadlock_is_explained_with_the_commits_waits(autojump_clock: trio.testing.MockClock,
                                                                synic: RunSettings) -> None:
    result = await run_in_test_clock(variant(synic, cpu_list_add_fix=False, seed=LOCKING_SEEDS[0]))
    assert result.verdict == "lockup" and result.lockup is not None
    assert result.lockup.bql_holder_thread == "main"
    text = " ".join(result.lockup.chain)
    for wait in ("async_synic_update", "start_exclusive", "cpu_list_add", "finish_safe_work", "cpu_exec_start",
                 "exclusive_resume", "e533f45d7d"):
        assert wait in text, wait


@pytest.mark.parametrize("seed", LOCKING_SEEDS)
async def test_the_fix_removes_the_deadlock_on_the_same_seeds(autojump_clock: trio.testing.MockClock,
                                                              synic: RunSettings, seed: int) -> None:
    before = await run_in_test_clock(variant(synic, cpu_list_add_fix=False, seed=seed))
    after = await run_in_test_clock(variant(synic, cpu_list_add_fix=True, seed=seed))
    assert (before.verdict, after.verdict) == ("lockup", "completed")
    assert after.cpus_online == 4


def test_analyze_tells_the_same_chain_from_the_log(synic: RunSettings, tmp_path: Path) -> None:
    result, _ = logged_result(synic, tmp_path, cpu_list_add_fix=False, seed=LOCKING_SEEDS[0])
    assert result.lockup is not None
    summary = summarise(read_log(tmp_path / "run.jsonl"))
    assert summary["watchdog"]["chain"] == result.lockup.chain
    signature = summary["lockup_signature"]
    assert signature is not None and signature["bql_held_by"] == "main"
    assert signature["chain"] == result.lockup.chain, "the log's events tell the same story"
    assert summary["agrees_with_watchdog"]


def test_the_explorer_sees_no_window(synic: RunSettings) -> None:
    """What races.md says: the explore engine's steps take no time, so the timing window never opens."""
    report = explore_random(variant(synic, cpu_list_add_fix=False), seeds=10, preempt=0.1, max_steps=2000)
    assert report.outcomes == {"completed": 10}


def test_an_x86_device_add_is_checked(synic: RunSettings) -> None:
    machine = Machine(synic)
    adds = [({"driver": "Skylake-Server-x86_64-cpu", "socket-id": 9}, "must be in range 0:3"),
            ({"driver": "Skylake-Server-x86_64-cpu", "socket-id": 1}, "exists"),
            ({"driver": "Skylake-Server-x86_64-cpu", "socket-id": "2"}, "expects int32"),
            ({"driver": "qemu64-x86_64-cpu", "socket-id": 2}, "Invalid CPU type")]
    for args, error in adds:
        with pytest.raises(QmpError, match=error):
            next(device_add_x86_cpu(machine, args))
    assert len(machine.cpus) == 2


@pytest.mark.parametrize("change, problem", [({"accel": "tcg"}, "KVM only"), ({"cpu": "POWER10"}, "does not fit"),
                                             ({"workload": "kdump"}, "not modelled on q35")])
def test_the_q35_model_refuses_what_it_lacks(synic: RunSettings, change: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadInput, match=problem):
        apply(synic, change, "--set")


def test_the_progress_watchdog_reports_a_vcpu_that_runs_on_when_asked_to_stop(synic: RunSettings) -> None:
    from vcpu_sched.engine.core import NS, EngineCore

    clock = [0]
    core = EngineCore(Machine(variant(synic, watchdog_s=2.0)), lambda: clock[0], fast_forward=True)
    cpu = core.machine.cpus[1]
    cpu.stop = True  # cpu_pause asked it to stop
    assert core.watchdog.spinning(0) is None
    clock[0] = 3 * NS
    assert core.watchdog.spinning(clock[0]) is None, "asked long ago but blocked, not running: not this check's"
    cpu.guest_entries += 5
    reason = core.watchdog.spinning(clock[0])
    assert reason is not None and "CPU 1/KVM" in reason and "5 times" in reason
    cpu.stop = False  # it stopped (or was resumed): the count starts again
    assert core.watchdog.spinning(clock[0]) is None
    cpu.stop = True
    cpu.guest_entries += 5
    assert core.watchdog.spinning(clock[0] + NS) is None, "a new request, not yet the threshold old"
