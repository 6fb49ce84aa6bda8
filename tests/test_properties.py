"""Properties over many small machines: the verdict follows the mechanism, never the other way round."""

from __future__ import annotations

import io

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import variant
from vcpu_sched.config import RunSettings
from vcpu_sched.engine.trio_engine import TrioEngine
from vcpu_sched.events import EventLog
from vcpu_sched.irq import IrqQuery
from vcpu_sched.model.machine import Machine
from vcpu_sched.model.ppc import Interrupt
from vcpu_sched.scenario import load

SEED = load("spapr-rtas-stopped").settings


def _run(s: RunSettings) -> str:
    engine = TrioEngine(Machine(s))
    verdict: str = trio.run(engine.run_async, clock=trio.testing.MockClock(autojump_threshold=0)).verdict
    return verdict


@settings(max_examples=40, deadline=None)
@given(smp=st.integers(1, 8), cpu=st.sampled_from(["POWER8", "POWER9", "POWER10"]),
       accel=st.sampled_from(["kvm", "tcg"]), timebase=st.sampled_from(["applied", "reverted"]),
       fix=st.sampled_from(["none", "quiesced"]), seed=st.integers(0, 2**32))
def test_lockup_exactly_when_every_link_is_present(smp: int, cpu: str, accel: str, timebase: str, fix: str,
                                                  seed: int) -> None:
    s = variant(SEED, smp=smp, cores=smp, cpu=cpu, accel=accel, timebase_reset=timebase, fix=fix, seed=seed,
                watchdog_s=2.0)
    links = smp >= 2 and accel == "kvm" and timebase == "applied" and fix == "none"
    assert _run(s) == ("lockup" if links else "booted")


@given(lpcr=st.integers(0, 2**64 - 1), halted=st.booleans(), psscr=st.integers(0, 2**64 - 1),
       msr=st.integers(0, 2**64 - 1), pending=st.integers(0, 0xFFFFF),
       cpu=st.sampled_from(["POWER8", "POWER9", "POWER10"]))
def test_a_quiesced_cpu_takes_nothing_and_the_guard_is_the_only_difference(lpcr: int, halted: bool, psscr: int,
                                                                           msr: int, pending: int, cpu: str) -> None:
    base = IrqQuery(cpu=cpu, lpcr=lpcr, halted=halted, psscr=psscr, msr=msr, pending=pending, quiesced=True)
    assert base.decide().interrupt is None
    pre = IrqQuery(cpu=cpu, lpcr=lpcr, halted=halted, psscr=psscr, msr=msr, pending=pending, quiesced=True,
                   pre_fix=True).decide()
    unquiesced = IrqQuery(cpu=cpu, lpcr=lpcr, halted=halted, psscr=psscr, msr=msr, pending=pending).decide()
    assert pre.interrupt == unquiesced.interrupt
    if pre.interrupt is not None:
        assert pending & pre.interrupt.value, "only a pending interrupt can be taken"
        assert pre.interrupt is not Interrupt.EBB, "the model has no BESCR, so EBB is never taken"


@settings(max_examples=25, deadline=None)
@given(smp=st.integers(1, 64), cpu=st.sampled_from(["POWER8", "POWER9", "POWER10"]),
       accel=st.sampled_from(["kvm", "tcg"]), timebase=st.sampled_from(["applied", "reverted"]),
       fix=st.sampled_from(["none", "quiesced"]), seed=st.integers(0, 2**32))
def test_up_to_64_cpus_the_fix_never_locks_up_and_a_secondary_always_holds(
        smp: int, cpu: str, accel: str, timebase: str, fix: str, seed: int) -> None:
    s = variant(SEED, smp=smp, cores=smp, cpu=cpu, accel=accel, timebase_reset=timebase, fix=fix, seed=seed,
                watchdog_s=2.0)
    result = trio.run(TrioEngine(Machine(s)).run_async, clock=trio.testing.MockClock(autojump_threshold=0))
    if fix == "quiesced" or accel == "tcg" or timebase == "reverted" or smp == 1:
        assert result.verdict == "booted" and result.cpus_online == smp
    else:
        assert result.verdict == "lockup"
        assert result.lockup is not None and result.lockup.bql_holder not in (None, 0)


@settings(max_examples=15, deadline=None)
@given(hold_ms=st.integers(1, 900), seed=st.integers(0, 2**32))
def test_watchdog_never_fires_while_the_boot_cpu_gets_through(hold_ms: int, seed: int) -> None:
    # The main loop holds the BQL up to 0.9 s per turn; the boot CPU waits but always gets it in time.
    s = variant(SEED, smp=4, cores=4, fix="quiesced", seed=seed, watchdog_s=1.0, deadline_s=3600.0,
                main_loop_hold_ns=hold_ms * 1_000_000)
    assert _run(s) == "booted"


@settings(max_examples=10, deadline=None)
@given(smp=st.integers(1, 16), fix=st.sampled_from(["none", "quiesced"]), seed=st.integers(0, 2**32))
def test_same_seed_same_log(smp: int, fix: str, seed: int) -> None:
    logs = []
    for _ in range(2):
        stream = io.StringIO()
        log = EventLog(stream)
        s = variant(SEED, smp=smp, cores=smp, fix=fix, seed=seed, watchdog_s=1.0)
        trio.run(TrioEngine(Machine(s, log)).run_async, clock=trio.testing.MockClock(autojump_threshold=0))
        logs.append(stream.getvalue())
    assert logs[0] == logs[1]
    assert logs[0].count("\n") > 20


@pytest.mark.slow
@pytest.mark.parametrize("cpu", ["POWER8", "POWER9", "POWER10"])
@pytest.mark.parametrize("accel", ["kvm", "tcg"])
@pytest.mark.parametrize("timebase", ["applied", "reverted"])
@pytest.mark.parametrize("fix", ["none", "quiesced"])
def test_exhaustive_smp_1_to_64(cpu: str, accel: str, timebase: str, fix: str) -> None:
    for smp in range(1, 65):
        s = variant(SEED, smp=smp, cores=smp, cpu=cpu, accel=accel, timebase_reset=timebase, fix=fix,
                    watchdog_s=2.0)
        links = smp >= 2 and accel == "kvm" and timebase == "applied" and fix == "none"
        assert _run(s) == ("lockup" if links else "booted"), smp
