"""The pytest plugin: failure messages carry the report and a replay command that reproduces the run."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import trio

from vcpu_sched.cli import main
from vcpu_sched.testing import assert_boots, assert_locks_up, run_scenario

ROOT = Path(__file__).resolve().parent.parent


async def test_run_scenario_refuses_the_real_clock() -> None:
    with pytest.raises(pytest.UsageError, match="autojump_clock"):
        await run_scenario("spapr-rtas-stopped")


async def test_a_wrong_expectation_fails_with_the_report_and_an_exact_replay(
        autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]) -> None:
    result = await run_scenario("spapr-rtas-stopped", seed=3, smp=8, watchdog_s=2.0)
    with pytest.raises(pytest.fail.Exception) as failure:
        assert_boots(result, within=3.0)
    message = str(failure.value)
    assert message.startswith("expected the guest to boot within 3 s, got lockup")
    assert "BQL holder: CPU 1/KVM" in message and "Why:" in message
    replay = re.search(r"^replay: (.*)$", message, re.M)
    assert replay is not None
    argv = shlex.split(replay.group(1))
    assert argv[:3] == ["vcpu-sched", "run", "spapr-rtas-stopped"] and "--seed" in argv
    assert await trio.to_thread.run_sync(main, [*argv[1:], "--json", "--quiet"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["guest_time_s"] == pytest.approx(result.guest_time_s, abs=1e-9)
    assert again["lockup"]["bql_holder"] == result.lockup.bql_holder  # type: ignore[union-attr]
    assert again["lockup"]["holder_iterations"] == result.lockup.holder_iterations  # type: ignore[union-attr]


async def test_assert_locks_up_names_what_differs(autojump_clock: trio.testing.MockClock) -> None:
    result = await run_scenario("spapr-rtas-stopped", smp=4, watchdog_s=1.0)
    assert_locks_up(result, holder=1, chain=["PSSCR[EC]"])
    with pytest.raises(pytest.fail.Exception, match="expected CPU 2 to hold the BQL, it was CPU 1/KVM"):
        assert_locks_up(result, holder=2)
    with pytest.raises(pytest.fail.Exception, match="the causal chain to mention"):
        assert_locks_up(result, chain=["a reason that is not there"])
    booted = await run_scenario("spapr-rtas-stopped", smp=4, fix="quiesced")
    with pytest.raises(pytest.fail.Exception, match="expected a lockup, got booted"):
        assert_locks_up(booted)


@pytest.mark.seeds(11, 12)
async def test_seeds_marker_gives_each_seed_its_own_schedule(autojump_clock: trio.testing.MockClock,
                                                             seed: int) -> None:
    assert seed in (11, 12)
    mine = await run_scenario("spapr-rtas-stopped", fix="quiesced", seed=seed)
    other = await run_scenario("spapr-rtas-stopped", fix="quiesced", seed=seed + 100)
    assert mine.verdict == other.verdict == "booted"
    assert mine.guest_time_s != other.guest_time_s


def test_readme_example_is_the_test_file() -> None:
    readme = (ROOT / "docs" / "pytest-plugin.md").read_text()
    block = re.search(r"# Writing a regression test.*?```python\n(.*?)```", readme, re.S)
    assert block is not None, "docs/pytest-plugin.md has the section and its example"
    assert block.group(1) == (ROOT / "tests" / "test_readme_example.py").read_text()
