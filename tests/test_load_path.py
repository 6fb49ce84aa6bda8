"""The load path as QEMU does it (review D3): after the reset, cpu_synchronize_all_pre_loadvm marks every
vCPU dirty, cpu_post_load re-evaluates HARD through post_load_update_msr -> hreg_store_msr, and
spapr_post_load's spapr_set_all_lpcrs does no KVM get (the vCPU is dirty): the migrated LPCR and PSSCR are
what is used, and put back by cpu_synchronize_all_post_init."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import read_events, variant
from vcpu_sched import runner
from vcpu_sched.scenario import load


def test_kvm_load_gets_nothing_and_reevaluates_hard(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    settings = variant(load("spapr-migrate").settings, accel="kvm", fix="quiesced+migration")
    assert runner.run(settings, log).verdict == "completed"
    events = read_events(log)
    post_load = [i for i, e in enumerate(events) if e["event"] == "cpu_post_load"]
    assert len(post_load) == settings.smp
    for i in post_load:  # hreg_store_msr's ppc_maybe_interrupt for that CPU comes right before
        assert events[i - 1]["event"] == "ppc_maybe_interrupt" and events[i - 1]["cpu"] == events[i]["cpu"]
    first, last_put = post_load[0], max(i for i, e in enumerate(events) if e["event"] == "kvm_put_registers"
                                         and e["level"] == 3)
    between = events[first:last_put]
    assert any(e["event"] == "spapr_set_all_lpcrs" and e["why"] == "spapr_post_load" for e in between)
    assert not any(e["event"] == "kvm_get_registers" for e in between)
