"""Regression tests for the RTAS-stopped hang, on Trio's virtual clock (milliseconds of wall time)."""

import pytest

from vcpu_sched.testing import assert_boots, assert_locks_up, run_scenario


async def test_quiesced_fix_boots_all_32_cpus(autojump_clock):
    result = await run_scenario("spapr-rtas-stopped", fix="quiesced")
    assert_boots(result, within=3.0)
    assert result.cpus_online == 32


@pytest.mark.seeds(0, 1, 2)
async def test_without_the_fix_the_first_secondary_holds_the_bql(autojump_clock, seed):
    result = await run_scenario("spapr-rtas-stopped", seed=seed, watchdog_s=5.0)
    assert_locks_up(result, stuck=0, holder=1, chain=["CPU_INTERRUPT_HARD", "EXCP_HLT"])
