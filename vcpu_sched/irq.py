"""`vcpu-sched irq`: the interrupt-selection logic on its own ("would this CPU wake?")."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from .errors import BadInput
from .model.excp import IrqDecision, ppc_next_unmasked_interrupt
from .model.ppc import CPU_MODELS, MSR_EE, MSR_HV, MSR_PR, PSSCR_EC, CPUPPCState, Interrupt, decode_lpcr

PENDING_ALIASES = {"DEC": Interrupt.DECR, "HDEC": Interrupt.HDECR}


@dataclass(frozen=True)
class IrqQuery:
    """The inputs of one decision, as `vcpu-sched irq` and the vector tests give them."""

    cpu: str
    lpcr: int
    halted: bool = False
    psscr: int = 0
    msr: int = 0
    pending: int = 0
    has_hv_mode: bool = True
    quiesced: bool = False
    resume_as_sreset: bool = False
    pre_fix: bool = False

    def env(self) -> CPUPPCState:
        return CPUPPCState(CPU_MODELS[self.cpu], msr=self.msr, lpcr=self.lpcr, psscr=self.psscr,
                           pending_interrupts=self.pending, quiesced=self.quiesced,
                           resume_as_sreset=self.resume_as_sreset, has_hv_mode=self.has_hv_mode)

    def decide(self) -> IrqDecision:
        return ppc_next_unmasked_interrupt(self.env(), self.halted, quiesced_guard=not self.pre_fix)


def parse_pending(text: str) -> int:
    mask = 0
    for name in filter(None, (p.strip().upper() for p in text.split(","))):
        irq = PENDING_ALIASES.get(name) or Interrupt.__members__.get(name)
        if irq is None:
            known = ", ".join(["DEC", "HDEC", *Interrupt.__members__])
            raise BadInput(f"--pending: unknown interrupt {name!r} (known: {known})")
        mask |= irq.value
    return mask


def irq_main(args: argparse.Namespace) -> int:
    if args.psscr is not None and args.psscr_ec and not args.psscr & PSSCR_EC:
        raise BadInput(f"--psscr {args.psscr:#x} has EC clear, --psscr-ec sets it: give one or the other")
    if (args.psscr is not None or args.psscr_ec) and not CPU_MODELS[args.cpu].has_psscr:
        raise BadInput(f"--psscr: {args.cpu} has no PSSCR (it came with POWER9)")
    psscr = args.psscr if args.psscr is not None else 0
    if args.psscr_ec:
        psscr |= PSSCR_EC
    msr = (MSR_EE if args.msr_ee else 0) | (MSR_HV if args.msr_hv else 0) | (MSR_PR if args.msr_pr else 0)
    query = IrqQuery(cpu=args.cpu, lpcr=args.lpcr, halted=args.halted, psscr=psscr, msr=msr,
                     pending=parse_pending(args.pending), has_hv_mode=not args.no_hv_mode,
                     quiesced=args.quiesced, resume_as_sreset=args.resume_as_sreset, pre_fix=args.pre_fix)
    decision = query.decide()
    model = CPU_MODELS[args.cpu]
    if args.json:
        print(json.dumps({"interrupt": decision.name, "hard": decision.interrupt is not None,
                          "rule": decision.rule, "lpcr": hex(args.lpcr),
                          "lpcr_decoded": decode_lpcr(args.lpcr, model)}, sort_keys=True))
    else:
        print(f"interrupt: {decision.name}")
        print(f"CPU_INTERRUPT_HARD: {'set' if decision.interrupt is not None else 'clear'}")
        print(f"LPCR: {args.lpcr:#x} = {decode_lpcr(args.lpcr, model)}")
        print(f"rule: {decision.rule}")
    return 0
