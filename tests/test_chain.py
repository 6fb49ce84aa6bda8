"""Each link of the hang's chain on its own, driving the model's generators by hand (no engine)."""

from __future__ import annotations

import contextvars

import pytest

from tests.conftest import variant
from vcpu_sched.config import RunSettings
from vcpu_sched.model.cpus import (
    CPU_INTERRUPT_HARD,
    EXCP_HLT,
    cpu_thread_is_idle,
    current_cpu,
    process_queued_cpu_work,
    qemu_wait_io_event,
    run_on_cpu,
)
from vcpu_sched.model.effects import BqlUnlock, CondWait
from vcpu_sched.model.guest import RtasArgs
from vcpu_sched.model.interrupts import ppc_maybe_interrupt
from vcpu_sched.model.kvm import (
    KVM_PUT_RESET_STATE,
    kvm_arch_get_registers,
    kvm_arch_put_registers,
    kvm_cpu_exec,
)
from vcpu_sched.model.machine import Machine
from vcpu_sched.model.ppc import LPCR_DEE, LPCR_EEE, LPCR_ILE, LPCR_LPES0, PSSCR_EC, Interrupt
from vcpu_sched.model.spapr_abi import RTAS_QUERY_CPU_STOPPED_STATE, RTAS_START_CPU


def _machine(seed_settings: RunSettings, **overrides: object) -> Machine:
    machine = Machine(variant(seed_settings, smp=2, cores=2, **overrides))
    return machine


def _reset(machine: Machine) -> None:
    """spapr_machine_reset's per-CPU part, without the run_on_cpu LPCR sync (no threads here)."""
    for cpu in machine.cpus:
        machine.spapr.spapr_reset_vcpu(cpu)


def test_kvm_ignores_the_pece_clear(seed_settings: RunSettings) -> None:
    machine = _machine(seed_settings)
    cpu, vcpu = machine.cpus[1], machine.kvm.vcpus[1]  # type: ignore[union-attr]
    cpu.env.lpcr = LPCR_LPES0 | LPCR_ILE  # wake-up bits clear, ILE set
    kvm_arch_put_registers(cpu, KVM_PUT_RESET_STATE)
    assert vcpu.vcore.lpcr & LPCR_ILE, "userspace may change ILE"
    assert vcpu.vcore.lpcr & (LPCR_EEE | LPCR_DEE) == LPCR_EEE | LPCR_DEE, "but not the PECE bits"
    kvm_arch_get_registers(cpu)
    assert cpu.env.lpcr & LPCR_DEE, "the get hands QEMU KVM's value"


def test_psscr_ec_is_lost_on_sync(seed_settings: RunSettings) -> None:
    machine = _machine(seed_settings)
    cpu = machine.cpus[1]
    cpu.env.psscr = PSSCR_EC | 0x3
    kvm_arch_put_registers(cpu, KVM_PUT_RESET_STATE)
    kvm_arch_get_registers(cpu)
    assert cpu.env.psscr == 0x3


def test_dec_pending_at_reset_only_with_the_timebase_commit_under_kvm(seed_settings: RunSettings) -> None:
    for timebase, accel, pending in (("applied", "kvm", True), ("reverted", "kvm", False),
                                     ("applied", "tcg", True), ("reverted", "tcg", True)):
        machine = _machine(seed_settings, timebase_reset=timebase, accel=accel)
        _reset(machine)
        assert machine.cpus[1].env.pending(Interrupt.DECR) is pending, (timebase, accel)


@pytest.mark.parametrize("fix,hard", [("none", True), ("quiesced", False)])
def test_register_get_then_maybe_interrupt_sets_hard_only_without_the_fix(seed_settings: RunSettings,
                                                                          fix: str, hard: bool) -> None:
    machine = _machine(seed_settings, fix=fix)
    _reset(machine)
    cpu = machine.cpus[1]
    assert not cpu.interrupt_request & CPU_INTERRUPT_HARD, "V40: after reset the secondary stays asleep"
    for c in machine.cpus:
        kvm_arch_put_registers(c, KVM_PUT_RESET_STATE)
    kvm_arch_get_registers(cpu)
    ppc_maybe_interrupt(cpu)
    assert bool(cpu.interrupt_request & CPU_INTERRUPT_HARD) is hard


def test_kvm_cpu_exec_returns_excp_hlt_with_the_bql_held(seed_settings: RunSettings) -> None:
    machine = _machine(seed_settings)
    halted, running = machine.cpus[1], machine.cpus[0]
    halted.halted, running.halted = True, False
    gen = kvm_cpu_exec(halted)
    with pytest.raises(StopIteration) as stop:
        next(gen)  # no effect at all: in particular no BqlUnlock
    assert stop.value.value == EXCP_HLT
    assert isinstance(next(kvm_cpu_exec(running)), BqlUnlock), "a running CPU drops the BQL for KVM_RUN"


def test_halted_cpu_with_hard_does_not_sleep(seed_settings: RunSettings) -> None:
    machine = _machine(seed_settings)
    machine.runstate = "running"
    cpu = machine.cpus[1]
    cpu.halted = True
    assert isinstance(next(qemu_wait_io_event(cpu)), CondWait), "halted, no work: it sleeps"
    cpu.interrupt_request |= CPU_INTERRUPT_HARD
    assert not cpu_thread_is_idle(cpu)
    with pytest.raises(StopIteration):
        next(qemu_wait_io_event(cpu))


def test_run_on_cpu_waits_on_the_work_condition_until_done(seed_settings: RunSettings) -> None:
    machine = _machine(seed_settings)
    boot, target = machine.cpus
    kicks = target.halt_cond.generation
    ran: list[int] = []
    context = contextvars.copy_context()
    context.run(current_cpu.set, boot)
    gen = run_on_cpu(target, lambda c: ran.append(c.cpu_index), "probe")
    effect = context.run(next, gen)
    assert isinstance(effect, CondWait) and effect.cond is machine.work_cond
    assert target.halt_cond.generation == kicks + 1, "the target was kicked"
    assert isinstance(context.run(gen.send, None), CondWait), "not done yet: it waits again"
    assert list(process_queued_cpu_work(target)) == [], "plain work runs with the BQL held, no effects"
    with pytest.raises(StopIteration):
        context.run(gen.send, None)
    assert ran == [1]


@pytest.mark.parametrize("fix", ["none", "quiesced"])
def test_a_cpu_never_started_is_stopped_at_both_fix_levels(seed_settings: RunSettings, fix: str) -> None:
    machine = _machine(seed_settings, fix=fix)
    _reset(machine)
    args = RtasArgs(RTAS_QUERY_CPU_STOPPED_STATE, 1, 2, [1])
    machine.spapr.rtas_query_cpu_stopped_state(args)
    assert args.rets == [0, 0]


def test_query_reads_quiesced_with_the_fix_and_halted_without(seed_settings: RunSettings) -> None:
    # A CPU that halted itself (H_CEDE under TCG) but was never RTAS-stopped: the fix says "not stopped".
    for fix, state in (("none", 0), ("quiesced", 2)):
        machine = _machine(seed_settings, fix=fix)
        cpu = machine.cpus[1]
        cpu.halted, cpu.env.quiesced = True, False
        args = RtasArgs(RTAS_QUERY_CPU_STOPPED_STATE, 1, 2, [1])
        machine.spapr.rtas_query_cpu_stopped_state(args)
        assert args.rets == [0, state], fix


def test_rtas_argument_checks(seed_settings: RunSettings) -> None:
    machine = _machine(seed_settings)
    wrong_count = RtasArgs(RTAS_QUERY_CPU_STOPPED_STATE, 2, 2, [1, 0])
    unknown_cpu = RtasArgs(RTAS_QUERY_CPU_STOPPED_STATE, 1, 2, [9])
    for args in (wrong_count, unknown_cpu):
        machine.spapr.rtas_query_cpu_stopped_state(args)
        assert args.rets[0] == -3
    start = RtasArgs(RTAS_START_CPU, 3, 1, [0, 0x100, 0])  # CPU 0 is running: not halted
    gen = machine.spapr.rtas_start_cpu(machine.cpus[1], start)
    machine.cpus[0].halted = False
    with pytest.raises(StopIteration):
        next(gen)
    assert start.rets == [-1]


def test_the_first_link_says_what_halted_the_cpu() -> None:
    """Review D20: a CPU the guest took offline with stop-self is not 'left before start-cpu'."""
    from vcpu_sched.explain import Facts, Wait, chain

    stuck = Wait("CPU 0/KVM", "BQL", "run_on_cpu(do_lpcr_sync) -> CPU 1", 5)
    for calls, expected in (([], "as spapr leaves a secondary before start-cpu"),
                            (["stop-self"], "the guest took it offline with RTAS stop-self")):
        facts = Facts()
        facts.feed("spapr_reset_vcpu", 1, {"cpu": 1, "halted": True, "quiesced": False})
        for call in calls:
            facts.feed("rtas_call", 2, {"cpu": 1, "call": call, "args": []})
        facts.feed("ppc_maybe_interrupt", 3, {"cpu": 1, "halted": True, "hard": True, "quiesced": False,
                                              "interrupt": "DECR", "rule": "r", "hard_before": False})
        assert expected in chain(facts, stuck, "CPU 1/KVM", 1, 4, "kvm_cpu_exec", 10, 20, None)[0]
