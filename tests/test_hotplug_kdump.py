"""spapr-hotplug-kdump (upstream a1c2dfee4f): the crash's NMI IPI (H_SIGNAL_SYS_RESET to all others) resets
a hotplugged CPU the guest never started; it keeps `quiesced`, loses `halted`, and the kdump kernel's
start-cpu refuses it; having no paca, it also saves registers over kexec's hold loop, where the crashed
kernel's other CPUs then stay. The fix leaves quiesced CPUs out of the broadcast. The kdump kernel's CPU
order is its loader's (`kexec_syscall`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import logged_result, variant
from vcpu_sched import runner
from vcpu_sched.analyze.logread import read_log
from vcpu_sched.analyze.summary import summarise
from vcpu_sched.explore import explore_random
from vcpu_sched.model.kdump import kdump_fdt_cpus
from vcpu_sched.result import RunResult
from vcpu_sched.scenario import load


def _run(tmp_path: Path, **changes: Any) -> tuple[RunResult, list[dict[str, Any]]]:
    return logged_result(load("spapr-hotplug-kdump").settings, tmp_path, **changes)


def _resets(events: list[dict[str, Any]]) -> dict[int, bool]:
    return {e["cpu"]: e["quiesced"] for e in events if e["event"] == "spapr_do_system_reset_on_cpu"}


def test_without_the_fix_the_kdump_kernel_cannot_start_the_hotplugged_cpu(tmp_path: Path) -> None:
    result, events = _run(tmp_path, sysreset_fix=False)
    assert result.verdict == "stuck-cpu"
    assert _resets(events) == {1: False, 2: True}  # every other CPU, the RTAS-stopped one included
    # kexec_load's tree is by address: the hotplugged CPU is logical 2, tried after the crashed kernel's CPU 1,
    # which the reset CPU (never started, no paca) kept in kexec's hold loop by saving over its way out.
    assert [line for line in result.console if "stuck" in line or "failed" in line] == [
        "Processor 1 is stuck.", "start-cpu failed: -1", "smp: failed starting cpu 2 (rc -2)"]
    assert result.cpus_online == 1
    assert any("while quiesced" in step for step in result.why)
    assert any("__secondary_hold's way out" in step for step in result.why)
    assert summarise(read_log(tmp_path / "run.jsonl"))["failure_chain"] == result.why  # analyze agrees


def test_the_kdump_kernels_cpu_order_is_its_loaders() -> None:
    """fs2dt sorts cores by unit address; update_cpus_node's fdt_add_subnode reverses the live order. A
    core's threads stay together, in their own order."""
    live = [4, 5, 0, 1, 2, 3]  # a 2-thread core hotplugged (first child) into a guest of cores 0 and 1
    assert kdump_fdt_cpus(live, 2, "kexec_load") == (0, 1, 2, 3, 4, 5)
    assert kdump_fdt_cpus(live, 2, "kexec_file_load") == (2, 3, 0, 1, 4, 5)
    assert kdump_fdt_cpus([2, 0, 1], 1, "kexec_file_load") == (1, 0, 2)
    assert kdump_fdt_cpus([0, 1, 2, 3], 1, "kexec_file_load") == (3, 2, 1, 0)  # without a hotplug too


def test_with_kexec_file_load_logical_cpu_0_is_an_old_cpu(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, sysreset_fix=False, kexec_syscall="kexec_file_load")
    assert result.verdict == "stuck-cpu"
    assert [line for line in result.console if "stuck" in line or "failed" in line] == [
        "Processor 0 is stuck.", "start-cpu failed: -1", "smp: failed starting cpu 2 (rc -2)"]
    assert "Processor 0 is stuck. (hwid 1)" in result.reason


def test_with_the_fix_the_quiesced_cpu_is_skipped_and_comes_up(tmp_path: Path) -> None:
    result, events = _run(tmp_path)
    assert result.verdict == "completed" and result.cpus_online == 3
    assert _resets(events) == {1: False}
    started = [e for e in events if e["event"] == "rtas_return" and e["call"] == "start-cpu"]
    assert [e["rets"] for e in started][-1] == [0]


def test_a_kdump_kernel_with_maxcpus_1_sees_it_only_where_it_is_not_logical_cpu_0(tmp_path: Path) -> None:
    """cpuhp_bringup_mask walks the first maxcpus CPUs in logical order, the booting one counted where it
    stands. kexec_load: the kdump kernel on CPU 0 is logical 0 and tries nothing; kexec_file_load reverses
    the tree, so it is logical 1 and tries CPU 1, stuck in the overwritten hold loop."""
    hidden, events = _run(tmp_path, sysreset_fix=False, kdump_cpus=1)
    assert hidden.verdict == "completed" and _resets(events)[2] is True
    seen, _ = _run(tmp_path, sysreset_fix=False, kdump_cpus=1, kexec_syscall="kexec_file_load")
    assert seen.verdict == "stuck-cpu" and seen.reason == "Processor 0 is stuck. (hwid 1)"
    fixed, _ = _run(tmp_path, kdump_cpus=1, kexec_syscall="kexec_file_load")
    assert fixed.verdict == "completed" and fixed.cpus_online == 2


def test_offlined_cpus_are_reset_too_and_the_fix_covers_them(tmp_path: Path) -> None:
    before, events = _run(tmp_path, sysreset_fix=False, workload="offline-kdump")
    assert before.verdict == "bad-rtas-answer" and _resets(events) == {1: True}
    after, events = _run(tmp_path, workload="offline-kdump")
    assert after.verdict == "completed" and _resets(events) == {}


def test_random_schedules_find_it_and_none_with_the_fix() -> None:
    settings = load("spapr-hotplug-kdump").settings
    found = explore_random(variant(settings, sysreset_fix=False), 3, 0.1, 3000)
    assert found.shortest is not None and found.shortest.verdict == "stuck-cpu"
    fixed = explore_random(settings, 3, 0.1, 3000)
    assert fixed.shortest is None and fixed.outcomes == {"completed": 3}


def test_where_the_query_answers_from_halted_the_hotplugged_threads_are_stuck(tmp_path: Path) -> None:
    """Before fb802acdc8 QEMU answered query-cpu-stopped-state from halted: a 2-thread core reset by the
    crash is reported running, kicked without start-cpu, and never calls in. Both loaders put it after
    the boot core, so its threads are logical 2 and 3, not the commit's 0 and 1."""
    for syscall in ("kexec_load", "kexec_file_load"):
        result, _ = _run(tmp_path, fix="none", timebase_reset="reverted", cores=1, threads=2, kexec_syscall=syscall)
        assert result.verdict == "stuck-cpu"
        stuck = [line for line in result.console if line.startswith("Processor")]
        # first the crashed kernel's own other thread, kept in the overwritten hold loop, then the reset ones
        assert stuck == ["Processor 1 is stuck.", "Processor 2 is stuck.", "Processor 3 is stuck."]
        assert sum("never calls in" in step for step in result.why) == 3


def test_the_commits_two_lines_come_from_old_cpus_in_the_overwritten_hold_loop(tmp_path: Path) -> None:
    """With QEMU's current answers (from quiesced), "Processor 0/1 is stuck." to the letter needs the
    kdump kernel to try two CPUs of the crashed kernel first: 3 CPUs and maxcpus=2, the crash on CPU 2
    (kexec_load) or CPU 0 (kexec_file_load, which reverses the tree). Each stays in the hold loop that the
    reset hotplugged CPU saved over; a1c2dfee4f, by not resetting it, brings both up."""
    core3 = (("dlpar: waiting", "device_add host-spapr-cpu-core,core-id=3"),)
    for syscall, crash in (("kexec_load", 2), ("kexec_file_load", 0)):
        changes: dict[str, Any] = {"smp": 3, "kdump_cpus": 2, "crash_cpu": crash, "monitor": core3,
                                   "kexec_syscall": syscall}
        result, events = _run(tmp_path, sysreset_fix=False, **changes)
        assert [line for line in result.console if "stuck" in line or "failed" in line] == [
            "Processor 0 is stuck.", "Processor 1 is stuck."]
        assert _resets(events)[3] is True
        fixed, _ = _run(tmp_path, **changes)
        assert fixed.verdict == "completed" and fixed.cpus_online == 3


def test_an_injected_nmi_resets_quiesced_cpus_even_with_a1c2dfee4f(tmp_path: Path) -> None:
    """spapr-nmi-kdump: `nmi` (QMP inject-nmi) goes through spapr_nmi, which a1c2dfee4f left alone."""
    result, events = logged_result(load("spapr-nmi-kdump").settings, tmp_path)
    assert result.settings.sysreset_fix and result.verdict == "stuck-cpu"  # CPU 1 first, as on a real 11.1.3
    resets = {e["cpu"]: (e["quiesced"], e["by"]) for e in events if e["event"] == "spapr_do_system_reset_on_cpu"}
    assert resets == {0: (False, "spapr_nmi"), 1: (False, "spapr_nmi"), 2: (True, "spapr_nmi"),
                      3: (True, "spapr_nmi")}
    assert not any(e["event"] == "spapr_hypercall" and e["hcall"] == "H_SIGNAL_SYS_RESET" for e in events)
    assert any("only in h_signal_sys_reset's broadcast: spapr_nmi resets" in step for step in result.why)
    fixed = runner.run(variant(load("spapr-nmi-kdump").settings, nmi_fix=True))
    assert fixed.verdict == "completed" and fixed.cpus_online == 4
