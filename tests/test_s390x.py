"""The s390x target: SIGP handling, the cross run_on_cpu deadlock of f9530c3242 and its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.conftest import Qemu, logged_run, run_in_test_clock, variant, wait_for
from vcpu_sched.analyze.logread import read_log
from vcpu_sched.analyze.summary import summarise
from vcpu_sched.config import RunSettings
from vcpu_sched.errors import BadInput
from vcpu_sched.explore import explore_exhaustive
from vcpu_sched.model.cpus import CPU_INTERRUPT_HARD, cpu_has_work
from vcpu_sched.model.machine import Machine
from vcpu_sched.model.s390x.cpu import S390_CPU_STATE_OPERATING, S390_CPU_STATE_STOPPED, s390_cpu_set_state
from vcpu_sched.model.s390x.sigp import SIGP_CC_BUSY, SIGP_START, handle_sigp
from vcpu_sched.qemu_cmdline import parse
from vcpu_sched.scenario import load


@pytest.fixture
def cross() -> RunSettings:
    return load("s390x-sigp-cross").settings


def test_a_stopped_cpu_never_has_work(cross: RunSettings) -> None:
    machine = Machine(cross)
    cpu = machine.cpus[1]
    cpu.interrupt_request |= CPU_INTERRUPT_HARD
    s390_cpu_set_state(S390_CPU_STATE_STOPPED, cpu)
    assert cpu.halted and not cpu_has_work(cpu)
    s390_cpu_set_state(S390_CPU_STATE_OPERATING, cpu)
    assert not cpu.halted
    assert machine.s390 is not None and machine.s390.kvm.vcpus[1].mp_state == S390_CPU_STATE_OPERATING


@pytest.mark.parametrize("lock, busy", [(True, True), (False, False)])
def test_the_sigp_lock_answers_busy_only_when_it_is_on(cross: RunSettings, lock: bool, busy: bool) -> None:
    machine = Machine(variant(cross, sigp_lock=lock))
    assert machine.s390 is not None
    machine.s390.sigp_mutex = "CPU 1/KVM"  # another SIGP in progress
    sigp = handle_sigp(machine.cpus[0], SIGP_START, 1, 0)
    try:
        next(sigp)  # without the lock the order goes on to run_on_cpu, which waits for CPU 1
        answered = None
    except StopIteration as done:
        answered = done.value
    assert (answered == (SIGP_CC_BUSY, 0)) is busy


async def test_the_deadlock_is_explained_as_a_cross_run_on_cpu_wait(autojump_clock: trio.testing.MockClock,
                                                                    cross: RunSettings) -> None:
    result = await run_in_test_clock(cross)
    assert result.verdict == "lockup" and result.lockup is not None
    lockup = result.lockup
    assert lockup.bql_holder_thread is None and lockup.waiting_for == "qemu_work_cond"
    text = " ".join(lockup.chain)
    assert "cross run_on_cpu deadlock" in text and "handling SIGP START" in text
    assert "f9530c3242" in text
    assert {row.where for row in lockup.cpus} == {"waits qemu_work_cond"}


def test_analyze_gives_the_same_explanation_from_the_log(cross: RunSettings, tmp_path: Path) -> None:
    verdict, _ = logged_run(cross, tmp_path)
    summary = summarise(read_log(tmp_path / "run.jsonl"))
    assert verdict == "lockup" and summary["agrees_with_watchdog"]
    signature = summary["lockup_signature"]
    assert signature["holder"] is None and signature["stuck"] == "CPU 0/KVM"
    assert signature["chain"] == summary["watchdog"]["chain"]


@pytest.mark.parametrize("bound", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_the_explorer_finds_the_deadlock_at_smp_2(cross: RunSettings, bound: int) -> None:
    report = explore_exhaustive(cross, max_steps=2000, preemption_bound=bound)
    assert report.shortest is not None and report.shortest.verdict == "lockup"
    assert report.first_failure_at is not None and 1 <= report.first_failure_at <= report.schedules
    assert report.to_dict()["first_failure_at"] == report.first_failure_at


@pytest.mark.slow  # test_explore.py's sleep-set search finds both outcomes of the same race by default
def test_with_jitter_the_explorer_finds_both_outcomes(cross: RunSettings) -> None:
    """With jitter the two exits coincide in some schedules only: the search finds both outcomes."""
    jittered = explore_exhaustive(variant(cross, sigp_jitter_us=8), max_steps=2000, preemption_bound=2)
    assert jittered.shortest is not None and jittered.outcomes.get("completed", 0) >= 1


@pytest.mark.slow
def test_with_the_lock_no_schedule_deadlocks(cross: RunSettings) -> None:
    report = explore_exhaustive(variant(cross, sigp_lock=True), max_steps=2000, preemption_bound=2)
    assert report.shortest is None and report.bound_hits == 0


def test_qemu_system_s390x_command_lines() -> None:
    line = parse("qemu-system-s390x -M s390-ccw-virtio-9.2,accel=kvm -smp 4 -cpu host -m 2G")
    assert line.overrides["machine"] == "s390-ccw-virtio" and line.overrides["cpu"] == "z16"
    assert line.overrides["smp"] == 4
    for bad in ("qemu-system-s390x -M s390-ccw-virtio -smp 2",  # TCG: not modelled
                "qemu-system-s390x -M s390-ccw-virtio -enable-kvm -cpu POWER9",
                "qemu-system-ppc64 -M pseries -cpu z16"):
        with pytest.raises(BadInput):
            parse(bad)


def test_a_management_tool_sees_the_sigp_deadlock(tmp_path: Path) -> None:
    """`vcpu-sched qemu` with a qemu-system-s390x command line runs the SIGP test by default: the vCPUs
    deadlock but the BQL is free, so QMP still answers - unlike the seed's hang - with s390x's shapes."""
    qmp = pytest.importorskip("qemu.qmp")
    import asyncio

    q = Qemu(tmp_path, "--watchdog", "1", "-M", "s390-ccw-virtio,accel=kvm", "-smp", "2", "-cpu", "host",
             paused=False)
    try:
        wait_for(lambda: "Brought up 1 node, 2 CPUs" in q.console() or q.proc.poll() is not None, 60)
        assert q.proc.poll() is None

        async def session() -> None:
            client = qmp.QMPClient("test")
            await client.connect(str(q.sock))
            cpus = await asyncio.wait_for(client.execute("query-cpus-fast"), 5)
            assert [(c["target"], c["cpu-state"]) for c in cpus] == [("s390x", "operating")] * 2
            hotpluggable = await asyncio.wait_for(client.execute("query-hotpluggable-cpus"), 5)
            assert {h["type"] for h in hotpluggable} == {"host-s390x-cpu"}
            await asyncio.sleep(2)  # past the watchdog's second: the vCPUs are deadlocked by now ...
            status = await asyncio.wait_for(client.execute("query-status"), 5)  # ... and QMP answers
            assert status["status"] == "running"
            await client.disconnect()

        asyncio.run(session())
    finally:
        q.proc.kill()
        q.proc.wait()
    assert "cross run_on_cpu deadlock" in q.err.read_text()
