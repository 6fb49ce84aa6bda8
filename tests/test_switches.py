"""The open questions as switches (review section 5): each changes one mechanism, and each test checks that
link in the events - not only the verdict, which the matrix rows check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import logged_run
from vcpu_sched.config import RunSettings
from vcpu_sched.scenario import load


def _run(settings: RunSettings, tmp_path: Path, **changes: Any) -> tuple[str, list[dict[str, Any]]]:
    return logged_run(settings, tmp_path, smp=4, cores=4, watchdog_s=2.0, **changes)


def _lpcr_changing_gets(events: list[dict[str, Any]], cpu: int) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "kvm_get_registers" and e["cpu"] == cpu
            and e["lpcr_before"] != e["lpcr"]]


def test_cas_without_logical_pvrs_leaves_the_first_get_to_do_lpcr_sync(seed_settings: RunSettings,
                                                                        tmp_path: Path) -> None:
    verdict, events = _run(seed_settings, tmp_path, cas_pvrs="raw")
    assert verdict == "lockup"
    assert [e["new_pvr"] for e in events if e["event"] == "spapr_cas_pvr"] == ["0x0"]
    assert not any(e["event"] == "kvm_get_registers" and e["via"] == "do_set_compat" for e in events)
    assert _lpcr_changing_gets(events, 1)[-1]["via"] == "do_lpcr_sync"


def test_psscr_ec_kept_through_kvm_leaves_the_lpcr_wake_bits_alone(seed_settings: RunSettings,
                                                                   tmp_path: Path) -> None:
    verdict, events = _run(seed_settings, tmp_path, psscr_ec_kvm="kept")
    assert verdict == "lockup"
    gets = [e for e in events if e["event"] == "kvm_get_registers" and e["cpu"] == 1]
    assert gets and all(e["psscr_ec"] for e in gets if e["psscr_ec_before"])  # EC survives every get
    hard = next(e for e in events if e["event"] == "ppc_maybe_interrupt" and e["cpu"] == 1 and e["hard"])
    assert "PSSCR[EC]=1" in hard["rule"] and "LPCR[DEE]" in hard["rule"]
    # Close that path too (a host LPCR without PECE): nothing wakes a halted secondary any more.
    verdict, _ = _run(seed_settings, tmp_path, psscr_ec_kvm="kept", host_lpcr=0xC)
    assert verdict == "booted"


def _blocked_in(events: list[dict[str, Any]]) -> str:
    """Which spapr_set_all_lpcrs was running when the hang formed: the last one that started."""
    return str([e for e in events if e["event"] == "spapr_set_all_lpcrs"][-1]["why"])


def test_which_caller_of_spapr_set_all_lpcrs_blocks(seed_settings: RunSettings, tmp_path: Path) -> None:
    assert _blocked_in(_run(seed_settings, tmp_path)[1]) == "H_SET_MODE resource 3 (AIL=3)"
    verdict, events = _run(seed_settings, tmp_path, kvm_ail_filter=True)
    assert verdict == "lockup" and _blocked_in(events) == "H_SET_MODE resource 4 (little-endian)"
    refused = [e for e in events if e["event"] == "spapr_hypercall" and e["hcall"] == "H_SET_MODE"
               and e["args"][1] == "0x3"]
    assert refused == []  # the kernel answered AIL=3 itself: QEMU never saw it
    verdict, events = _run(seed_settings, tmp_path, kvm_ail_filter=True, guest_endian="be")
    assert verdict == "lockup" and _blocked_in(events) == "H_REGISTER_PROC_TBL (radix)"


def test_kernel_irqchip_off_sends_ipis_through_qemu(tmp_path: Path) -> None:
    settings = load("spapr-migrate").settings
    for irqchip, through_qemu in ((True, False), (False, True)):
        verdict, events = _run(settings, tmp_path, accel="kvm", fix="quiesced", kernel_irqchip=irqchip)
        assert verdict == "completed"
        ipis = [e for e in events if e["event"] == "spapr_hypercall" and e["hcall"] == "H_IPI"]
        ext = [e for e in events if e["event"] == "ppc_set_irq" and e["irq"] == "EXT" and e["level"] == 1]
        assert bool(ipis) == through_qemu and bool(ext) == through_qemu
