"""The smaller review items that change what the model does (D4, D11, D12, D13, D16), each by its link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import logged_run, variant
from vcpu_sched.config import RunSettings
from vcpu_sched.model.effects import BqlLock, Spend
from vcpu_sched.model.interrupts import ppc_store_lpcr
from vcpu_sched.model.machine import Machine
from vcpu_sched.model.ppc import (
    LPCR_GTSE,
    LPCR_HDICE,
    LPCR_HEIC,
    LPCR_HR,
    LPCR_HVEE,
    LPCR_HVICE,
    LPCR_ILE,
    LPCR_LD,
    LPCR_LPES0,
    LPCR_LPES1,
    LPCR_MER,
    LPCR_ONL,
    LPCR_TC,
    LPCR_UPRT,
    LPCR_VPM0,
)
from vcpu_sched.model.tcg import mttcg_cpu_thread_fn


def _log(settings: RunSettings, tmp_path: Path, **changes: Any) -> list[dict[str, Any]]:
    return logged_run(settings, tmp_path, **changes)[1]


def test_d4_large_decrementer_sets_ld_in_qemu_and_in_the_vcore(seed_settings: RunSettings, tmp_path: Path) -> None:
    events = _log(seed_settings, tmp_path, smp=2, cores=2, watchdog_s=2.0)
    reset = next(i for i, e in enumerate(events) if e["event"] == "spapr_reset_vcpu" and e["cpu"] == 1)
    stores = [e for e in events[:reset] if e["event"] == "ppc_store_lpcr" and e["cpu"] == 1]
    assert int(stores[-1]["lpcr"], 16) & LPCR_LD and not int(stores[-2]["lpcr"], 16) & LPCR_LD
    gets = [e for e in events[reset:] if e["event"] == "kvm_get_registers" and e["cpu"] == 1]
    assert gets and all(int(e["lpcr"], 16) & LPCR_LD for e in gets)  # the vcore has it too


def test_d11_power8_keeps_only_its_own_lpcr_bits(seed_settings: RunSettings) -> None:
    cpu = Machine(variant(seed_settings, cpu="POWER8", smp=1, cores=1, accel="tcg")).cpus[0]
    ppc_store_lpcr(cpu, (1 << 64) - 1)
    kept = cpu.env.lpcr
    for bit in (LPCR_VPM0, LPCR_ILE, LPCR_ONL, LPCR_MER, LPCR_TC, LPCR_LPES0, LPCR_HDICE):
        assert kept & bit
    for bit in (LPCR_LPES1, LPCR_HEIC, LPCR_HVICE, LPCR_LD, LPCR_GTSE, LPCR_HVEE):
        assert not kept & bit


def test_d12_info_registers_syncs_the_monitors_cpu_only(seed_settings: RunSettings, tmp_path: Path) -> None:
    events = _log(seed_settings, tmp_path, smp=4, cores=4, fix="quiesced",
                  monitor=(("smp: Brought up", "info registers"),))
    start = next(i for i, e in enumerate(events) if e["event"] == "monitor_command")
    end = next(i for i, e in enumerate(events[start:], start) if e["event"] == "qemu_mutex_unlock"
               and e["cpu"] == "main" and e["site"] == "main_loop_wait")
    assert {e["cpu"] for e in events[start:end] if e["event"] == "kvm_get_registers"} == {0}


def test_d13_start_cpu_radix_bits_all_or_none(seed_settings: RunSettings, tmp_path: Path) -> None:
    radix_bits = LPCR_UPRT | LPCR_GTSE | LPCR_HR
    for radix, expected in ((True, radix_bits), (False, 0)):
        events = _log(seed_settings, tmp_path, smp=2, cores=2, accel="tcg", cpu="POWER9", radix=radix)
        entry = next(i for i, e in enumerate(events) if e["event"] == "spapr_cpu_set_entry_state" and e["cpu"] == 1)
        store = [e for e in events[:entry] if e["event"] == "ppc_store_lpcr" and e["cpu"] == 1][-1]
        assert int(store["lpcr"], 16) & radix_bits == expected


def test_d16_a_tcg_thread_starts_with_exit_request_set(seed_settings: RunSettings) -> None:
    machine = Machine(variant(seed_settings, smp=1, cores=1, accel="tcg"))
    cpu = machine.cpus[0]
    thread = mttcg_cpu_thread_fn(cpu)
    assert isinstance(next(thread), BqlLock)
    assert isinstance(thread.send(None), Spend) and cpu.exit_request
