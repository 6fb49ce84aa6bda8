"""Whole runs on the virtual clock: the seed case locks up, every mechanism change boots."""

from __future__ import annotations

import pytest
import trio

from tests.conftest import run_in_test_clock, variant
from vcpu_sched.config import RunSettings
from vcpu_sched.engine.trio_engine import SPEND_QUANTUM_NS


async def test_seed_case_locks_up_with_the_chain(seed_settings: RunSettings,
                                                 autojump_clock: trio.testing.MockClock) -> None:
    result = await run_in_test_clock(seed_settings)
    assert result.verdict == "lockup"
    lockup = result.lockup
    assert lockup is not None
    assert lockup.stuck_cpu == 0 and lockup.waiting_for == "BQL"
    assert lockup.bql_holder is not None and lockup.bql_holder != 0
    assert "do_lpcr_sync" in lockup.wait_site
    assert lockup.held_for_s >= seed_settings.watchdog_s - 0.1
    assert lockup.holder_iterations >= lockup.held_for_s * 1e9 / seed_settings.loop_cost_ns * 0.99
    assert lockup.main_loop_blocked_s is not None, "the monitor is unresponsive too"
    cause = lockup.cause
    for link in ("halted", "PPC_INTERRUPT_DECR", "overwrote QEMU's LPCR", "PSSCR[EC] back as 0",
                 "set CPU_INTERRUPT_HARD", "EXCP_HLT", "qemu_wait_io_event never sleeps", "H_SET_MODE"):
        assert link in cause, link
    assert result.console[-1].startswith("Booting Linux via __start()")
    assert result.cpus_online == 1


@pytest.mark.parametrize("cpu", ["POWER10", "POWER9", "POWER8"])
@pytest.mark.parametrize("change", [{"fix": "quiesced"}, {"accel": "tcg"}, {"timebase_reset": "reverted"}],
                         ids=["fix", "tcg", "timebase-reverted"])
async def test_each_mechanism_change_boots(seed_settings: RunSettings, autojump_clock: trio.testing.MockClock,
                                           cpu: str, change: dict[str, str]) -> None:
    result = await run_in_test_clock(variant(seed_settings, cpu=cpu, **change))
    assert result.verdict == "booted", result.reason
    assert result.cpus_online == 32
    assert result.console[-1] == "smp: Brought up 1 node, 32 CPUs"


@pytest.mark.parametrize("cpu", ["POWER9", "POWER8"])
async def test_older_cpus_lock_up_too(seed_settings: RunSettings, autojump_clock: trio.testing.MockClock,
                                      cpu: str) -> None:
    result = await run_in_test_clock(variant(seed_settings, cpu=cpu))
    assert result.verdict == "lockup"
    assert result.lockup is not None and result.lockup.bql_holder not in (None, 0)


async def test_smp_1_boots(seed_settings: RunSettings, autojump_clock: trio.testing.MockClock) -> None:
    result = await run_in_test_clock(variant(seed_settings, smp=1, cores=1))
    assert result.verdict == "booted"
    assert result.console[-1] == "smp: Brought up 1 node, 1 CPU"


async def test_smt_guest_shares_the_vcore_lpcr_and_still_locks_up(seed_settings: RunSettings,
                                                                  autojump_clock: trio.testing.MockClock) -> None:
    result = await run_in_test_clock(variant(seed_settings, smp=8, cores=2, threads=4))
    assert result.verdict == "lockup"


@pytest.mark.parametrize("watchdog_s,verdict", [(1.0, "booted"), (0.5, "lockup")])
async def test_slow_progressing_boot_is_no_lockup(seed_settings: RunSettings, autojump_clock: trio.testing.MockClock,
                                                  watchdog_s: float, verdict: str) -> None:
    # The main loop holds the BQL for 0.8 s every turn: CPU 0 waits up to 0.8 s each time, but gets through.
    # With the fix and a 1 s threshold that is progress; a 0.5 s threshold shorter than one hold does fire.
    slow = variant(seed_settings, fix="quiesced", smp=4, cores=4, main_loop_hold_ns=800_000_000,
                   watchdog_s=watchdog_s, deadline_s=3600.0)
    result = await run_in_test_clock(slow)
    assert result.verdict == verdict, result.reason
    if verdict == "booted":
        assert result.bql_stats["CPU 0/KVM"]["max_wait_ns"] > 700_000_000, "CPU 0 really waited long"


async def test_fast_forward_changes_cost_not_outcome(seed_settings: RunSettings,
                                                     autojump_clock: trio.testing.MockClock) -> None:
    quick = variant(seed_settings, smp=4, cores=4, watchdog_s=0.02)
    fast = await run_in_test_clock(quick)
    slow = await run_in_test_clock(variant(quick, fast_forward=False))
    assert fast.verdict == slow.verdict == "lockup"
    assert fast.lockup is not None and slow.lockup is not None
    assert fast.lockup.bql_holder == slow.lockup.bql_holder
    # Equal up to one quantum of owed CPU time (the clock's step when turns are not fast-forwarded).
    quantum_turns = SPEND_QUANTUM_NS // quick.loop_cost_ns
    assert abs(fast.lockup.holder_iterations - slow.lockup.holder_iterations) <= quantum_turns
    assert slow.lockup.holder_iterations > 19_000


async def test_guest_deadline_ends_a_run(seed_settings: RunSettings, autojump_clock: trio.testing.MockClock) -> None:
    result = await run_in_test_clock(variant(seed_settings, fix="quiesced", deadline_s=0.5))
    assert result.verdict == "deadline"
