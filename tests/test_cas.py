"""CAS as QEMU does it (review D1): a Linux guest lists logical PVRs, so ibm,client-architecture-support
switches every vCPU's compatibility mode through ppc_set_compat_all -> run_on_cpu(do_set_compat) ->
cpu_synchronize_state: the KVM register get that brings back the wake-up bits happens there, before the
first H_SET_MODE, whose do_lpcr_sync then only stores the LPCR (and sets HARD)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import read_events, variant
from vcpu_sched import runner
from vcpu_sched.config import RunSettings
from vcpu_sched.scenario import load


@pytest.mark.parametrize("cpu,logical", [("POWER10", "0xf000006"), ("POWER9", "0xf000005")])
def test_the_lpcr_changing_get_comes_from_cas_before_h_set_mode(seed_settings: RunSettings, tmp_path: Path,
                                                                cpu: str, logical: str) -> None:
    path = tmp_path / "run.jsonl"
    result = runner.run(variant(seed_settings, cpu=cpu, smp=4, cores=4, watchdog_s=2.0), path)
    assert result.verdict == "lockup" and result.lockup is not None
    events = read_events(path)
    cas = [e for e in events if e["event"] == "spapr_cas_pvr"]
    assert [(e["cur_pvr"], e["new_pvr"]) for e in cas] == [("0x0", logical)]
    h_set_mode = next(e for e in events if e["event"] == "spapr_set_all_lpcrs" and "H_SET_MODE" in str(e["why"]))
    # The last get that changed CPU 1's LPCR (after spapr_reset_vcpu cleared its wake-up bits).
    changing = [e for e in events if e["event"] == "kvm_get_registers" and e["cpu"] == 1
                and e["lpcr_before"] != e["lpcr"]]
    assert changing and changing[-1]["via"] == "do_set_compat"
    assert changing[-1]["t_ns"] < h_set_mode["t_ns"]  # type: ignore[operator]
    hard = next(e for e in events if e["event"] == "ppc_maybe_interrupt" and e["cpu"] == 1 and e["hard"])
    assert hard["t_ns"] >= h_set_mode["t_ns"]  # type: ignore[operator]
    assert "at CAS (ibm,client-architecture-support)" in " ".join(result.lockup.chain)


def test_the_fix_still_boots_and_each_boot_negotiates_again(tmp_path: Path) -> None:
    settings = variant(load("spapr-system-reset").settings, fix="quiesced", smp=4, cores=4)
    path = tmp_path / "run.jsonl"
    result = runner.run(settings, path)
    assert result.verdict == "completed"
    cas = [e for e in read_events(path) if e["event"] == "spapr_cas_pvr"]
    assert [e["cur_pvr"] for e in cas] == ["0x0", "0x0"], "system_reset puts every vCPU back in raw mode"
