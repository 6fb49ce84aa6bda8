"""The CPU reset as QEMU does it (review D2): ppc_cpu_reset_hold puts every SPR back to its default, clears
the pending interrupts and the stop state to resume, and resets MSR through hreg_store_msr - before
spapr's (or pnv's) own reset code runs. The model used to carry the old state across a reset."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import read_events, variant
from vcpu_sched import runner
from vcpu_sched.config import RunSettings
from vcpu_sched.model.cpus import CPU_INTERRUPT_HARD
from vcpu_sched.model.interrupts import ppc_cpu_reset_hold
from vcpu_sched.model.machine import Machine
from vcpu_sched.model.ppc import (
    HRESET_VECTOR,
    LPCR_LPES0,
    LPCR_LPES1,
    MSR_EE,
    MSR_HV,
    MSR_SF,
    PSSCR_EC,
    Interrupt,
)
from vcpu_sched.scenario import load


def test_reset_values_replace_whatever_the_cpu_held(seed_settings: RunSettings) -> None:
    machine = Machine(variant(seed_settings, smp=2, cores=2))
    cpu = machine.cpus[1]
    env = cpu.env
    env.lpcr, env.psscr, env.msr = 0x54F41F, PSSCR_EC | 0x3F, MSR_SF | MSR_EE
    env.pending_interrupts = Interrupt.DECR.value | Interrupt.EXT.value
    env.resume_as_sreset = True
    cpu.interrupt_request |= CPU_INTERRUPT_HARD
    ppc_cpu_reset_hold(cpu)
    assert (env.lpcr, env.psscr, env.msr, env.nip) == (LPCR_LPES0 | LPCR_LPES1, 0, MSR_SF, HRESET_VECTOR)
    assert env.pending_interrupts == 0 and not env.resume_as_sreset
    assert not env.msr & MSR_HV  # spapr's virtual hypervisor: MSR[HV] is not in the CPU's mask
    # QEMU's order: hreg_store_msr re-evaluates HARD while the old interrupts, LPCR and PSSCR are still in
    # place (a halted CPU with wake-up bits and a DEC pending: deliverable), and only then clears them, so
    # HARD stays stale until the next evaluation - which spapr's own reset code makes with ppc_store_lpcr.
    assert cpu.interrupt_request & CPU_INTERRUPT_HARD
    machine.spapr.spapr_reset_vcpu(cpu)
    assert not cpu.interrupt_request & CPU_INTERRUPT_HARD
    assert env.pending_interrupts == Interrupt.DECR.value  # raised again by cpu_ppc_tb_reset, not carried



def test_every_reset_starts_from_the_defaults_before_spapr_reset_code(tmp_path: Path) -> None:
    """Through a system_reset (with the fix, so the guest gets that far): each spapr_reset_vcpu of a CPU is
    preceded by its ppc_cpu_reset with QEMU's defaults, the first boot's and the second's alike."""
    scenario = load("spapr-system-reset")
    log = tmp_path / "run.jsonl"
    result = runner.run(variant(scenario.settings, smp=4, cores=4, fix="quiesced"), log)
    assert result.verdict == "completed"
    events = read_events(log)
    for cpu in range(4):
        mine = [e for e in events if e.get("cpu") == cpu and e["event"] in ("ppc_cpu_reset", "spapr_reset_vcpu")]
        kinds = [e["event"] for e in mine]
        assert kinds == ["ppc_cpu_reset", "spapr_reset_vcpu"] * (len(kinds) // 2) and len(kinds) >= 4
        for e in mine[::2]:
            assert (e["lpcr"], e["psscr"], e["msr"]) == (hex(LPCR_LPES0 | LPCR_LPES1), "0x0", hex(MSR_SF))
