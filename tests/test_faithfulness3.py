"""Issue 24 items 3, 6 and 7: DLPAR's order, the other unguarded system resets, s390x and QEMU 10.2 details."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import logged_result
from vcpu_sched.scenario import load


def _index(events: list[dict[str, Any]], event: str, **match: Any) -> int:
    """The position of the first `event` whose fields include `match`."""
    for i, e in enumerate(events):
        if e["event"] == event and all(e.get(k) == v for k, v in match.items()):
            return i
    raise AssertionError(f"no {event} with {match}")


def test_dlpar_puts_before_the_resets_and_gets_in_spapr_core_plug(tmp_path: Path) -> None:
    """Upstream's order (77251365ec): realize puts the pre-reset registers into KVM and resumes the vCPU,
    the CPU's and then the core's reset follow, and spapr_core_plug's ppc_set_compat gets KVM's registers
    back through run_on_cpu from the main thread: env then holds KVM's LPCR and PSSCR (no EC), not the
    reset's, and nothing re-evaluated HARD."""
    result, events = logged_result(load("spapr-hotplug").settings, tmp_path)
    assert result.verdict == "completed"
    started = _index(events, "kvm_vcpu_thread_start", cpu=2)
    put = _index(events, "kvm_put_registers", cpu=2, level=3)
    reset = _index(events, "spapr_reset_vcpu", cpu=2)
    plug = _index(events, "spapr_core_plug", cpu=2)
    get = _index(events, "kvm_get_registers", cpu=2)
    assert started < put < reset < plug < get
    assert events[get]["via"] == "do_kvm_cpu_synchronize_state"
    assert events[_index(events, "run_on_cpu", cpu=2, work="do_kvm_cpu_synchronize_state")]["caller"] == "main"
    assert events[get]["psscr_ec_before"] and not events[get]["psscr_ec"], "the reset's EC is replaced by KVM's"
    assert int(events[get]["lpcr"], 16) & 0xF000, "KVM's LPCR has the host's exit-enable bits"
    # The get sits between the reset's HARD evaluation and the guest's start-cpu: no ppc_maybe_interrupt
    # for CPU 2 in between, so HARD stays what the quiesced reset left (clear).
    start = next(i for i, e in enumerate(events) if e["event"] == "rtas_call" and e["call"] == "start-cpu"
                 and e["args"][0] == 2)
    assert get < start
    assert not [e for e in events[get:start] if e["event"] == "ppc_maybe_interrupt" and e["cpu"] == 2]


def _resets(events: list[dict[str, Any]]) -> dict[int, tuple[bool, str]]:
    """Each CPU's last system reset: (quiesced then, by what)."""
    return {e["cpu"]: (e["quiesced"], e["by"]) for e in events if e["event"] == "spapr_do_system_reset_on_cpu"}


def test_the_watchdogs_dump_restart_resets_quiesced_cpus_unless_nmi_fix(tmp_path: Path) -> None:
    """hw/watchdog/spapr_watchdog.c watchdog_expired (77251365ec): dump-restart is spapr_nmi's loop, with no
    quiesced check. The guest arms it (H_WATCHDOG start, 60 s) and stops feeding it; QEMU's timer fires 60 s
    of virtual time later, on the main loop."""
    settings = load("spapr-nmi-kdump").settings
    changes: dict[str, Any] = {"workload": "watchdog-dump", "monitor": (), "deadline_s": 120.0}
    result, events = logged_result(settings, tmp_path, **changes)
    assert result.verdict == "stuck-cpu"
    armed = next(e for e in events if e["event"] == "spapr_hypercall" and e["hcall"] == "H_WATCHDOG")
    assert armed["args"] == ["0x103", "0x1", "0xea60"]  # start | dump-restart, watchdog 1, 60000 ms
    fired = min(e["t_ns"] for e in events if e["event"] == "spapr_do_system_reset_on_cpu")
    assert 60_000_000_000 <= fired - armed["t_ns"] <= 60_010_000_000  # up to one main-loop poll late
    assert _resets(events) == {0: (False, "spapr_watchdog"), 1: (False, "spapr_watchdog"),
                               2: (True, "spapr_watchdog"), 3: (True, "spapr_watchdog")}
    assert any("the spapr watchdog's dump-restart" in step and "a1c2dfee4f" in step for step in result.why)
    fixed, events = logged_result(settings, tmp_path, nmi_fix=True, **changes)
    assert fixed.verdict == "completed" and fixed.cpus_online == 4
    assert set(_resets(events)) == {0, 1}


def test_a_unicast_sys_reset_resets_the_quiesced_cpu_it_names_unless_nmi_fix(tmp_path: Path) -> None:
    """hw/ppc/spapr_hcall.c h_signal_sys_reset (77251365ec): a1c2dfee4f's check is in the broadcast branch only."""
    settings = load("spapr-nmi-kdump").settings
    changes: dict[str, Any] = {"workload": "sysreset-kdump", "monitor": (), "crash_cpu": 0}
    result, events = logged_result(settings, tmp_path, **changes)
    assert result.settings.sysreset_fix and result.verdict == "stuck-cpu"
    resets = _resets(events)
    assert resets[2] == (True, "H_SIGNAL_SYS_RESET unicast"), "the CPU it names, quiesced"
    assert 3 not in resets, "the crash's broadcast skips the quiesced CPU 3 (a1c2dfee4f)"
    assert resets[1] == (False, "H_SIGNAL_SYS_RESET")
    assert "start-cpu of CPU 2 failed: -1" in result.reason and "Processor 1 is stuck." in result.reason
    fixed, events = logged_result(settings, tmp_path, nmi_fix=True, **changes)
    assert fixed.verdict == "completed" and fixed.cpus_online == 4
    assert 2 not in _resets(events)


def test_h_watchdog_answers_as_spapr_watchdog_does() -> None:
    """The start and stop operations' checks and answers (hw/watchdog/spapr_watchdog.c h_watchdog)."""
    from vcpu_sched.model.machine import Machine
    from vcpu_sched.model.spapr_abi import H_NOOP, H_P2, H_P3, H_PARAMETER, H_SUCCESS

    machine = Machine(load("spapr-nmi-kdump").settings)
    spapr = machine.spapr
    assert spapr.h_watchdog(0x103, 5, 1000) == H_P2  # only 4 watchdogs
    assert spapr.h_watchdog(0x103, 1, 1) == H_P3  # at or below the 1 ms minimum
    assert spapr.h_watchdog(0x104, 1, 1000) == H_PARAMETER  # no action 4
    assert spapr.h_watchdog(1 << 20 | 0x103, 1, 1000) == H_PARAMETER  # a reserved bit
    assert spapr.h_watchdog(0x200, 1) == H_NOOP and not machine.timers  # stopping a stopped one
    assert spapr.h_watchdog(0x103, 1, 1000) == H_SUCCESS and machine.timers["wdt1"][0] == 1_000_000_000
    assert spapr.h_watchdog(0x200, 1) == H_SUCCESS and not machine.timers


def _machine(scenario: str, **changes: Any) -> Any:
    import dataclasses

    from vcpu_sched.model.machine import Machine

    return Machine(dataclasses.replace(load(scenario).settings, **changes))


def test_queued_work_kicks_with_cpu_exit_from_qemu_10_2() -> None:
    """f8217ae54e (QEMU 10.2): queue_work_on_cpu and cpu_pause call cpu_exit, which since dcb46ecb2e sets
    exit_request and kicks; before, they only kicked (under KVM: SIG_IPI, no exit_request)."""
    from vcpu_sched.model.cpus import WorkItem, cpu_pause, queue_work_on_cpu

    for version, exit_request in (("10.0", False), ("10.1", False), ("10.2", True), ("11.1", True)):
        machine = _machine("spapr-rtas-stopped", qemu_version=version)
        cpu = machine.cpus[1]
        queue_work_on_cpu(cpu, WorkItem(lambda c: None, "nothing"))
        assert cpu.exit_request is exit_request and cpu.immediate_exit and cpu.stats["kicks"] == 1, version
        other = machine.cpus[2]
        cpu_pause(other)
        assert other.stop and other.exit_request is exit_request and other.immediate_exit, version


def test_rtas_stop_self_and_h_cede_exit_with_cpu_exit_from_qemu_10_2() -> None:
    """f8217ae54e: rtas_stop_self's qemu_cpu_kick and h_cede's exit_request store become cpu_exit; h_cede
    re-evaluates HARD for the halted CPU in both versions (before the exit from 10.2, after it before)."""
    from vcpu_sched.model.cpus import current_cpu

    for version, kicks in (("10.0", 0), ("10.2", 1)):
        machine = _machine("spapr-rtas-stopped", accel="tcg", qemu_version=version)
        cpu = machine.cpus[0]
        token = current_cpu.set(cpu)
        try:
            cpu.halted = False
            machine.spapr.h_cede(cpu)
            assert cpu.halted and cpu.exit_request and cpu.stats.get("kicks", 0) == kicks, version
            stopping = machine.cpus[1]
            current_cpu.set(stopping)
            stopping.halted = False
            machine.spapr.rtas_stop_self(stopping)
            assert stopping.halted and stopping.exit_request and stopping.stats["kicks"] == 1, version
        finally:
            current_cpu.reset(token)


def test_s390x_boot_resets_each_secondary_before_its_prefix_and_restart(tmp_path: Path) -> None:
    """Linux arch/s390/kernel/smp.c __cpu_up: SIGP INITIAL CPU RESET, then SET PREFIX, then RESTART; QEMU's
    sigp_restart (77251365ec) sets OPERATING before it loads the restart PSW."""
    result, events = logged_result(load("s390x-sigp-cross").settings, tmp_path, workload="none", smp=3)
    assert result.verdict == "booted"
    orders = [(e["order"], e["dst"]) for e in events if e["event"] == "sigp_handle"]
    assert orders == [("INITIAL_CPU_RESET", 1), ("SET_PREFIX", 1), ("RESTART", 1),
                      ("INITIAL_CPU_RESET", 2), ("SET_PREFIX", 2), ("RESTART", 2)]
    states = [(e["cpu"], e["state"]) for e in events if e["event"] == "cpu_set_state" and e["cpu"] == 1]
    assert states[-2:] == [(1, "STOPPED"), (1, "OPERATING")], "the reset stops it, the restart starts it"
