"""The what-if fix `lpcr-sync` (the patch author's "spapr should synchronize its LPCR properly with KVM"):
spapr's LPCR stores under KVM keep what KVM accepts. What it does follows from the mechanism: alone, the
wake-up bits are never cleared, so the reset's DEC wakes a halted secondary at once; with `quiesced` no
interrupt of a stopped CPU is deliverable whatever the LPCR holds."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import read_events, variant
from vcpu_sched import runner
from vcpu_sched.config import RunSettings
from vcpu_sched.model.ppc import LPCR_DEE


def test_lpcr_sync_keeps_the_wake_bits_and_hangs_at_reset(seed_settings: RunSettings, tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    result = runner.run(variant(seed_settings, smp=4, cores=4, fix="lpcr-sync", watchdog_s=2.0), log)
    assert result.verdict == "lockup" and result.lockup is not None
    events = read_events(log)
    stores = [e for e in events if e["event"] == "ppc_store_lpcr" and e["cpu"] != 0]
    assert stores and all(int(e["lpcr"], 16) & LPCR_DEE for e in stores)  # never cleared by spapr
    assert not any(e["event"] == "console" for e in events)  # the guest never printed a line
    hard = next(e for e in events if e["event"] == "ppc_maybe_interrupt" and e["hard"] and e["cpu"] != 0)
    reset = next(e for e in events if e["event"] == "spapr_reset_vcpu" and e["cpu"] == hard["cpu"])
    assert hard["t_ns"] <= reset["t_ns"] and "PSSCR[EC]=1" in hard["rule"]


def test_with_quiesced_the_same_lpcr_sets_no_hard(seed_settings: RunSettings, tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    result = runner.run(variant(seed_settings, smp=4, cores=4, fix="quiesced+lpcr-sync"), log)
    assert result.verdict == "booted"
    events = read_events(log)
    secondary_stores = [e for e in events if e["event"] == "ppc_store_lpcr" and e["cpu"] == 1]
    assert all(int(e["lpcr"], 16) & LPCR_DEE for e in secondary_stores)
    started = next(e["t_ns"] for e in events if e["event"] == "spapr_cpu_set_entry_state" and e["cpu"] == 1)
    assert not any(e["event"] == "ppc_maybe_interrupt" and e["cpu"] == 1 and e["hard"] and e["t_ns"] < started
                   for e in events)
