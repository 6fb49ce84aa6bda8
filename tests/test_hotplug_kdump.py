"""spapr-hotplug-kdump (upstream a1c2dfee4f): the crash's NMI IPI (H_SIGNAL_SYS_RESET to all others) resets
a hotplugged CPU the guest never started; it keeps `quiesced`, loses `halted`, and the kdump kernel's
start-cpu refuses it. The fix leaves quiesced CPUs out of the broadcast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import logged_result, variant
from vcpu_sched import runner
from vcpu_sched.analyze.logread import read_log
from vcpu_sched.analyze.summary import summarise
from vcpu_sched.explore import explore_random
from vcpu_sched.result import RunResult
from vcpu_sched.scenario import load


def _run(tmp_path: Path, **changes: Any) -> tuple[RunResult, list[dict[str, Any]]]:
    return logged_result(load("spapr-hotplug-kdump").settings, tmp_path, **changes)


def _resets(events: list[dict[str, Any]]) -> dict[int, bool]:
    return {e["cpu"]: e["quiesced"] for e in events if e["event"] == "spapr_do_system_reset_on_cpu"}


def test_without_the_fix_the_kdump_kernel_cannot_start_the_hotplugged_cpu(tmp_path: Path) -> None:
    result, events = _run(tmp_path, sysreset_fix=False)
    assert result.verdict == "bad-rtas-answer"
    assert _resets(events) == {1: False, 2: True}  # every other CPU, the RTAS-stopped one included
    # The kdump kernel numbers CPUs in device-tree order, where the hotplugged node is first: logical 0.
    failed = [line for line in result.console if "start-cpu failed" in line or "failed starting" in line]
    assert failed == ["start-cpu failed: -1", "smp: failed starting cpu 0 (rc -2)"]
    # and the reset CPU, never started, saves registers over kexec's hold loop: the crashed kernel's CPU 1
    # never gets out of it (kdump.system_reset_program)
    assert "Processor 2 is stuck." in result.console and result.cpus_online == 1
    assert any("while quiesced" in step for step in result.why)
    assert any("__secondary_hold's way out" in step for step in result.why)
    assert summarise(read_log(tmp_path / "run.jsonl"))["failure_chain"] == result.why  # analyze agrees


def test_with_the_fix_the_quiesced_cpu_is_skipped_and_comes_up(tmp_path: Path) -> None:
    result, events = _run(tmp_path)
    assert result.verdict == "completed" and result.cpus_online == 3
    assert _resets(events) == {1: False}
    started = [e for e in events if e["event"] == "rtas_return" and e["call"] == "start-cpu"]
    assert [e["rets"] for e in started][-1] == [0]


def test_a_kdump_kernel_with_maxcpus_1_meets_it_when_it_is_logical_cpu_0(tmp_path: Path) -> None:
    """cpuhp_bringup_mask walks the first maxcpus CPUs in logical order: booted on CPU 1, it tries CPU 0."""
    result, events = _run(tmp_path, sysreset_fix=False, kdump_cpus=1, crash_cpu=1)
    assert result.verdict == "bad-rtas-answer" and _resets(events)[2] is True
    assert "start-cpu failed: -1" in result.console
    result, _ = _run(tmp_path, sysreset_fix=True, kdump_cpus=1, crash_cpu=1)
    assert result.verdict == "completed" and result.cpus_online == 2  # the hotplugged CPU, started


def test_offlined_cpus_are_reset_too_and_the_fix_covers_them(tmp_path: Path) -> None:
    before, events = _run(tmp_path, sysreset_fix=False, workload="offline-kdump")
    assert before.verdict == "bad-rtas-answer" and _resets(events) == {1: True}
    after, events = _run(tmp_path, workload="offline-kdump")
    assert after.verdict == "completed" and _resets(events) == {}


def test_random_schedules_find_it_and_none_with_the_fix() -> None:
    settings = load("spapr-hotplug-kdump").settings
    found = explore_random(variant(settings, sysreset_fix=False), 3, 0.1, 3000)
    assert found.shortest is not None and found.shortest.verdict == "bad-rtas-answer"
    fixed = explore_random(settings, 3, 0.1, 3000)
    assert fixed.shortest is None and fixed.outcomes == {"completed": 3}


def test_where_the_query_answers_from_halted_the_commits_own_lines_come_out(tmp_path: Path) -> None:
    """Before fb802acdc8 QEMU answered query-cpu-stopped-state from halted: a 2-thread core reset by the
    crash is reported running, kicked without start-cpu, and never calls in - 5 s per CPU, as in the
    commit's log (5.5 s and 11.1 s)."""
    result, _ = _run(tmp_path, fix="none", timebase_reset="reverted", cores=1, threads=2)
    assert result.verdict == "stuck-cpu"
    stuck = [line for line in result.console if line.startswith("Processor")]
    # the commit's two lines first; then the crashed kernel's own other CPU, which the reset threads
    # (never started) kept in kexec's hold loop by saving registers over its way out
    assert stuck == ["Processor 0 is stuck.", "Processor 1 is stuck.", "Processor 3 is stuck."]
    assert sum("never calls in" in step for step in result.why) == 3


def test_an_injected_nmi_resets_quiesced_cpus_even_with_a1c2dfee4f(tmp_path: Path) -> None:
    """spapr-nmi-kdump: `nmi` (QMP inject-nmi) goes through spapr_nmi, which a1c2dfee4f left alone."""
    result, events = logged_result(load("spapr-nmi-kdump").settings, tmp_path)
    assert result.settings.sysreset_fix and result.verdict == "stuck-cpu"  # CPU 1 first, as on a real 11.1.3
    resets = {e["cpu"]: (e["quiesced"], e["by"]) for e in events if e["event"] == "spapr_do_system_reset_on_cpu"}
    assert resets == {0: (False, "spapr_nmi"), 1: (False, "spapr_nmi"), 2: (True, "spapr_nmi"),
                      3: (True, "spapr_nmi")}
    assert not any(e["event"] == "spapr_hypercall" and e["hcall"] == "H_SIGNAL_SYS_RESET" for e in events)
    assert any("h_signal_sys_reset only" in step for step in result.why)
    fixed = runner.run(variant(load("spapr-nmi-kdump").settings, nmi_fix=True))
    assert fixed.verdict == "completed" and fixed.cpus_online == 4
