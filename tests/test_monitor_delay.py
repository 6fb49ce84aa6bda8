"""A monitor command comes a moment after its console pattern (`monitor_delay_ms`, drawn from the seed), and
the guest waits for it where a real run's guest would."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.conftest import logged_result, variant
from tests.test_hardening3 import refused_here
from vcpu_sched.config import RunSettings, parse_set
from vcpu_sched.report import replay_command
from vcpu_sched.scenario import apply, load

MS = 1_000_000


def test_the_delay_is_the_seeds_draw_within_the_range() -> None:
    settings = RunSettings(monitor_delay_ms=(100.0, 400.0))
    draws = {seed: dataclasses.replace(settings, seed=seed).monitor_delay_ns(0) for seed in range(50)}
    assert all(100 * MS <= d <= 400 * MS for d in draws.values())
    assert len(set(draws.values())) > 40, "different seeds, different moments"
    assert dataclasses.replace(settings, seed=7).monitor_delay_ns(0) == draws[7], "a function of the seed"
    assert settings.monitor_delay_ns(0) != settings.monitor_delay_ns(1), "each command draws its own"
    assert RunSettings(monitor_delay_ms=(0.0, 0.0)).monitor_delay_ns(3) == 0


@pytest.mark.parametrize("delay_ms", [0, 250])
def test_the_command_comes_its_delay_after_the_pattern(tmp_path: Path, delay_ms: int) -> None:
    settings = load("spapr-system-reset").settings
    result, events = logged_result(variant(settings, fix="quiesced", monitor_delay_ms=(delay_ms, delay_ms)), tmp_path)
    pattern = settings.monitor[0][0]
    shown = next(e["t_ns"] for e in events if e["event"] == "console" and pattern in e["text"])
    typed = next(e["t_ns"] for e in events if e["event"] == "monitor_command")
    # the main loop sees the line at its next wake-up (at most its 10 ms poll), then waits out the delay
    assert delay_ms * MS <= typed - shown <= delay_ms * MS + 10 * MS
    assert result.verdict == "completed"


@pytest.mark.parametrize("delay_ms", [0, 450])
def test_the_guest_waits_for_a_command_whose_pattern_it_printed(tmp_path: Path, delay_ms: int) -> None:
    # The migration comes after the 200 ms "rest of the boot" when late: the guest's IPI round waits for it,
    # as the real harness's /init does, so the lost interrupts of QEMU issue 3079 show however late it comes.
    settings = variant(load("spapr-migrate").settings, fix="quiesced", monitor_delay_ms=(delay_ms, delay_ms))
    result, events = logged_result(settings, tmp_path)
    typed = next(e["t_ns"] for e in events if e["event"] == "monitor_command")
    ipi = next(e["t_ns"] for e in events if e["event"] == "spapr_hypercall" and e.get("hcall") == "H_IPI")
    assert typed < ipi
    assert result.verdict == "lost-interrupts"


@pytest.mark.parametrize(("value", "needle"), [("[5, 1]", "0 <= low <= high"), ("-1", "0 <= low <= high"),
                                               ("[1, 2, 3]", "a number or [low, high]"),
                                               ("fast", "a number or [low, high]"),
                                               ("100000", "60000")])
def test_a_bad_delay_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str,
                                 needle: str) -> None:
    refused_here(capsys, tmp_path, ["run", "spapr-migrate", "--set", f"monitor_delay_ms={value}"], needle)


def test_one_number_is_a_fixed_delay_and_the_replay_line_reads_back() -> None:
    base = load("spapr-migrate").settings
    fixed = apply(base, dict([parse_set("monitor_delay_ms=120")]), "--set")
    assert fixed.monitor_delay_ms == (120.0, 120.0)
    line = replay_command(fixed, base)
    assert "monitor_delay_ms=[120.0, 120.0]" in line
    text = line.split("monitor_delay_ms=", 1)[1].split("'")[0]
    assert apply(base, dict([parse_set(f"monitor_delay_ms={text}")]), "--set") == fixed


def test_the_shares_page_lists_every_monitor_row_with_its_claimed_verdict() -> None:
    # The table (tools/monitor_shares.py, 20 minutes of runs) is not re-run here: its rows and claims are.
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import docgen
    import monitor_shares

    block = next(b for b in docgen.blocks(monitor_shares.PAGE) if b.name == "monitor-shares")
    assert block.intact, "edited by hand: rerun tools/monitor_shares.py --write"
    listed = [line.split(" | ")[:3] for line in block.body.splitlines()[2:]]
    rows = monitor_shares.rows(monitor_shares.monitor_scenarios())
    wanted = [[f"| {name}", label, claimed] for name, label, claimed, _ in rows]
    assert listed == wanted
    for line in block.body.splitlines()[2:]:
        claimed, shares = line.split(" | ")[2:4]
        assert shares.split()[0] == claimed, line  # the most common verdict is the one the row claims
