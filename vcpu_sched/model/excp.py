"""Interrupt selection: which pending interrupt, if any, a vCPU can take now.

Mirrors target/ppc/excp_helper.c: `ppc_next_unmasked_interrupt` and its per-generation helpers
(`p8_next_unmasked_interrupt`, `p8_interrupt_powersave`, `p9_next_unmasked_interrupt`,
`p9_interrupt_powersave`). Theory of operation: a *halted* CPU is in a power-saving state, where the
LPCR exit-enable (PECE) bits decide what wakes it (POWER9/10 only while PSSCR[EC]=1; with EC=0 "any
exception wakes", so MSR[EE] is treated as set); a *running* CPU takes what MSR[EE] and the LPCR allow.
The seed's fix adds one guard in front of all of it: a `quiesced` ("RTAS stopped") CPU takes nothing.

Each function returns the interrupt and the rule that decided, so the CLI (`vcpu-sched irq`) and the
watchdog report can explain a decision in the words used here.
"""

from __future__ import annotations

from typing import NamedTuple

from .ppc import (
    LPCR_DEE,
    LPCR_EEE,
    LPCR_HDEE,
    LPCR_HDICE,
    LPCR_HEIC,
    LPCR_HVEE,
    LPCR_HVICE,
    LPCR_LPES0,
    LPCR_OEE,
    LPCR_PDEE,
    MSR_EE,
    MSR_HV,
    MSR_PR,
    PSSCR_EC,
    CPUPPCState,
    ExcpModel,
    Interrupt,
)


class IrqDecision(NamedTuple):
    """What `ppc_next_unmasked_interrupt` picked and why."""

    interrupt: Interrupt | None
    rule: str

    @property
    def name(self) -> str:
        return self.interrupt.name if self.interrupt else "none"


def _powersave(env: CPUPPCState, enables: tuple[tuple[Interrupt, int, str], ...], label: str) -> IrqDecision:
    """Shared body of p8_/p9_interrupt_powersave: the first pending interrupt whose exit bit is set."""
    lpcr = env.lpcr
    for irq, bit, bit_name in enables:
        if not env.pending(irq) or not lpcr & bit:
            continue
        if irq is Interrupt.EXT and env.model.excp_model is not ExcpModel.POWER8:
            heic = bool(lpcr & LPCR_HEIC)
            if heic and env.msr & MSR_HV and not env.msr & MSR_PR:
                continue
        return IrqDecision(irq, f"{label}: {irq.name} pending and LPCR[{bit_name}] set")
    if env.pending(Interrupt.RESET):
        return IrqDecision(Interrupt.RESET, f"{label}: system reset always wakes")
    pending = [irq.name for irq, _, _ in enables if env.pending(irq)]
    if pending:
        return IrqDecision(None, f"{label}: {', '.join(pending)} pending but its LPCR exit-enable bit is clear")
    return IrqDecision(None, f"{label}: nothing pending")


_P9_POWERSAVE = (
    (Interrupt.EXT, LPCR_EEE, "EEE"),
    (Interrupt.DECR, LPCR_DEE, "DEE"),
    (Interrupt.MCK, LPCR_OEE, "OEE"),
    (Interrupt.HMI, LPCR_OEE, "OEE"),
    (Interrupt.DOORBELL, LPCR_PDEE, "PDEE"),
    (Interrupt.HDOORBELL, LPCR_HDEE, "HDEE"),
    (Interrupt.HVIRT, LPCR_HVEE, "HVEE"),
)
_P8_POWERSAVE = (
    (Interrupt.EXT, LPCR_EEE, "PECE2"),
    (Interrupt.DECR, LPCR_DEE, "PECE3"),
    (Interrupt.MCK, LPCR_OEE, "PECE4"),
    (Interrupt.HMI, LPCR_OEE, "PECE4"),
    (Interrupt.DOORBELL, LPCR_PDEE, "PECE0"),
    (Interrupt.HDOORBELL, LPCR_HDEE, "PECE1"),
)


def p9_interrupt_powersave(env: CPUPPCState) -> IrqDecision:
    """target/ppc/excp_helper.c p9_interrupt_powersave: halted with PSSCR[EC]=1, MSR[EE] ignored."""
    return _powersave(env, _P9_POWERSAVE, "halted with PSSCR[EC]=1, LPCR exit bits decide")


def p8_interrupt_powersave(env: CPUPPCState) -> IrqDecision:
    """target/ppc/excp_helper.c p8_interrupt_powersave: a halted POWER8 always uses the PECE table."""
    return _powersave(env, _P8_POWERSAVE, "halted POWER8, LPCR PECE bits decide")


def _running(env: CPUPPCState, msr_ee: bool, why_ee: str) -> IrqDecision:
    """The running-state rules shared by p8_ and p9_next_unmasked_interrupt."""
    lpcr, msr = env.lpcr, env.msr
    hv = bool(msr & MSR_HV)
    if env.pending(Interrupt.MCK):
        return IrqDecision(Interrupt.MCK, f"{why_ee}: machine check is never masked")
    if env.pending(Interrupt.HDECR) and (msr_ee or not hv) and lpcr & LPCR_HDICE:
        return IrqDecision(Interrupt.HDECR, f"{why_ee}: HDEC pending and LPCR[HDICE] set")
    if (env.model.excp_model is not ExcpModel.POWER8 and env.pending(Interrupt.HVIRT)
            and (msr_ee or not hv) and lpcr & LPCR_HVICE):
        return IrqDecision(Interrupt.HVIRT, f"{why_ee}: HVIRT pending and LPCR[HVICE] set")
    if env.pending(Interrupt.EXT):
        heic = bool(lpcr & LPCR_HEIC)
        lpes0 = bool(lpcr & LPCR_LPES0)
        if msr_ee and not (heic and hv and not msr & MSR_PR):
            return IrqDecision(Interrupt.EXT, f"{why_ee}: EXT pending and MSR[EE] allows it")
        if env.has_hv_mode and not hv and not lpes0:
            return IrqDecision(Interrupt.EXT, f"{why_ee}: EXT to the hypervisor (MSR[HV]=0, LPCR[LPES0]=0), "
                                              "MSR[EE] does not matter")
    if msr_ee:
        for irq in (Interrupt.DECR, Interrupt.DOORBELL, Interrupt.HDOORBELL, Interrupt.PERFM):
            if env.pending(irq):
                return IrqDecision(irq, f"{why_ee}: {irq.name} pending and MSR[EE] allows it")
        # EBB needs MSR[PR] and BESCR[GE]; the model has no BESCR, so EBB is never taken.
        return IrqDecision(None, f"{why_ee}: nothing deliverable pending")
    masked = [i.name for i in (Interrupt.DECR, Interrupt.DOORBELL, Interrupt.HDOORBELL, Interrupt.PERFM)
              if env.pending(i)]
    if masked:
        return IrqDecision(None, f"{why_ee}: {', '.join(masked)} pending but masked by MSR[EE]=0")
    return IrqDecision(None, f"{why_ee}: nothing deliverable pending")


def _ee_state(env: CPUPPCState) -> tuple[bool, str]:
    msr_ee = bool(env.msr & MSR_EE) or env.resume_as_sreset
    why = "running, MSR[EE]=1" if env.msr & MSR_EE else "running, MSR[EE]=0"
    if env.resume_as_sreset and not env.msr & MSR_EE:
        why = "running, resume_as_sreset counts as MSR[EE]=1"
    return msr_ee, why


def p9_next_unmasked_interrupt(env: CPUPPCState, halted: bool) -> IrqDecision:
    """target/ppc/excp_helper.c p9_next_unmasked_interrupt (POWER9, POWER10)."""
    msr_ee, why = _ee_state(env)
    if halted:
        if env.psscr & PSSCR_EC:
            return p9_interrupt_powersave(env)
        msr_ee, why = True, "halted with PSSCR[EC]=0: any exception wakes (MSR[EE] forced)"
    return _running(env, msr_ee, why)


def p8_next_unmasked_interrupt(env: CPUPPCState, halted: bool) -> IrqDecision:
    """target/ppc/excp_helper.c p8_next_unmasked_interrupt (POWER8: no PSSCR)."""
    if halted:
        return p8_interrupt_powersave(env)
    msr_ee, why = _ee_state(env)
    return _running(env, msr_ee, why)


def ppc_next_unmasked_interrupt(env: CPUPPCState, halted: bool, quiesced_guard: bool = True) -> IrqDecision:
    """target/ppc/excp_helper.c ppc_next_unmasked_interrupt.

    `quiesced_guard` is the seed's fix in this file: with it (post-fix QEMU) a quiesced CPU takes
    nothing; without it (pre-fix) `quiesced` is ignored here, as before the patch.
    """
    if quiesced_guard and env.quiesced:
        return IrqDecision(None, "quiesced (RTAS stopped): no interrupt is deliverable")
    if env.model.excp_model is ExcpModel.POWER8:
        return p8_next_unmasked_interrupt(env, halted)
    return p9_next_unmasked_interrupt(env, halted)
