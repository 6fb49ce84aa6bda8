"""spapr-migrate-from-9.2: 628bda1ab7's inference of quiesced for a stream without the cpu/rtas_stopped
subsection, as upstream writes it, and what follows for CPUs the guest never started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import logged_run
from vcpu_sched.scenario import load


def _run(tmp_path: Path, **changes: Any) -> tuple[str, list[dict[str, Any]]]:
    return logged_run(load("spapr-migrate-from-9.2").settings, tmp_path, **changes)


def test_never_started_cpus_are_inferred_running_and_never_start(tmp_path: Path) -> None:
    verdict, events = _run(tmp_path)
    assert verdict == "stuck-cpu"
    inferred = {e["cpu"]: e for e in events if e["event"] == "cpu_post_load_infer_quiesced"}
    for cpu in (2, 3):  # never started: halted, EC set by the reset, the PM bits cleared by it
        assert inferred[cpu]["halted"] and inferred[cpu]["psscr_ec"] and inferred[cpu]["lpcr_pm"] == "0x0"
        assert inferred[cpu]["quiesced"] is False
    queries = [e for e in events if e["event"] == "rtas_return" and e["call"] == "query-cpu-stopped-state"]
    assert queries[-1]["rets"] == [0, 2]  # NOT_STOPPED: Linux will not call start-cpu
    assert not any(e["event"] == "rtas_call" and e["call"] == "start-cpu" and e["args"][0] == 2
                   for e in events[events.index(inferred[2]):])


def test_under_kvm_the_seed_hang_comes_back_at_the_load(tmp_path: Path) -> None:
    verdict, events = _run(tmp_path, accel="kvm")
    assert verdict == "lockup"
    load_at = next(e["t_ns"] for e in events if e["event"] == "cpu_post_load_infer_quiesced")
    hard = next(e for e in events if e["event"] == "ppc_maybe_interrupt" and e["cpu"] == 2 and e["hard"]
                and e["t_ns"] >= load_at)
    assert hard["interrupt"] == "DECR" and not hard["quiesced"]


def test_with_the_subsection_quiesced_travels(tmp_path: Path) -> None:
    verdict, events = _run(tmp_path, rtas_stopped_state=True)
    assert verdict == "completed"
    assert not any(e["event"] == "cpu_post_load_infer_quiesced" for e in events)


def _inferred(events: list[dict[str, Any]]) -> dict[int, bool]:
    return {e["cpu"]: e["quiesced"] for e in events if e["event"] == "cpu_post_load_infer_quiesced"}


def test_an_idle_boot_cpu_is_inferred_quiesced(tmp_path: Path) -> None:
    """The boot CPU keeps the EC its reset set (only rtas_start_cpu clears it) and has the PM bits its entry
    state set: idle in H_CEDE at the migration, it passes 628bda1ab7's test (seen on a real 11.1.3: CPU 0
    stops for good after the load)."""
    _, events = _run(tmp_path, workload="idle", monitor=(("idle: waiting", "migrate"),), deadline_s=30.0)
    assert _inferred(events) == {0: True, 1: False, 2: False, 3: False}
    _, events = _run(tmp_path, workload="idle", monitor=(("idle: waiting", "migrate"),), deadline_s=30.0,
                     infer_fix=True)
    assert _inferred(events) == {0: False, 1: False, 2: True, 3: True}


def test_the_infer_fix_what_if_starts_the_stopped_cpus_under_tcg_only(tmp_path: Path) -> None:
    verdict, _ = _run(tmp_path, infer_fix=True)
    assert verdict == "completed"
    verdict, _ = _run(tmp_path, infer_fix=True, accel="kvm")
    assert verdict == "lockup"  # KVM's PSSCR has no EC: the saved registers cannot tell a stopped CPU


def _dec_after_load(events: list[dict[str, Any]]) -> dict[int, bool]:
    return {e["cpu"]: e["dec_pending"] for e in events if e["event"] == "cpu_post_load"}


def test_the_stream_carries_no_pending_interrupts_tcg_re_arms_the_dec_from_decr(tmp_path: Path) -> None:
    """vmstate_ppc_cpu has no pending_interrupts: the destination's own reset raised a DEC on every CPU.
    Since 578912ad73 (8.2) TCG's cpu_post_load stores the saved DECR again, which lowers it where the
    guest had programmed the DEC (CPUs 0 and 1) and keeps it where the reset's -1 stands (2 and 3)."""
    from vcpu_sched.versions import profile

    verdict, events = _run(tmp_path, rtas_stopped_state=True)
    assert verdict == "completed"
    assert _dec_after_load(events) == {0: False, 1: False, 2: True, 3: True}
    # QEMU 7.2: no re-arm, the reset's DEC stays on the running CPUs; their handler (timer_interrupt)
    # takes it and sets DEC again, so the guest goes on
    verdict, events = _run(tmp_path, **profile("7.2"))
    assert _dec_after_load(events) == {0: True, 1: True, 2: True, 3: True}
    assert any(e["event"] == "ppc_cpu_do_interrupt" and e["interrupt"] == "DECR" for e in events)
    assert verdict == "completed"
