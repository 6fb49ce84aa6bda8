"""Interrupt selection against QEMU's own code, on the reference vectors and a larger generated set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vcpu_sched.irq import IrqQuery
from vcpu_sched.model.ppc import MSR_EE, MSR_HV, MSR_PR, PSSCR_EC, Interrupt

DATA = Path(__file__).parent / "data"
EXAMPLES = json.loads((DATA / "interrupt_examples.json").read_text())["vectors"]
GENERATED = json.loads((DATA / "interrupt_vectors_qemu.json").read_text())


def _example_query(v: dict, pre_fix: bool) -> IrqQuery:
    msr = (MSR_EE if v["msr_ee"] else 0) | (MSR_HV if v["msr_hv"] else 0) | (MSR_PR if v["msr_pr"] else 0)
    pending = (Interrupt.DECR.value if v["dec"] else 0) | (Interrupt.EXT.value if v["ext"] else 0)
    return IrqQuery(cpu="POWER9", lpcr=int(v["lpcr"], 16), halted=bool(v["halted"]),
                    psscr=PSSCR_EC if v["psscr_ec"] else 0, msr=msr, pending=pending,
                    has_hv_mode=bool(v["has_hv_mode"]), quiesced=bool(v["quiesced"]),
                    resume_as_sreset=bool(v["resume_as_sreset"]), pre_fix=pre_fix)


@pytest.mark.parametrize("v", EXAMPLES, ids=[v["id"] for v in EXAMPLES])
@pytest.mark.parametrize("pre_fix", [False, True], ids=["post-fix", "pre-fix"])
def test_reference_example_vectors(v: dict, pre_fix: bool) -> None:
    decision = _example_query(v, pre_fix).decide()
    want, want_hard = (v["pre"], v["pre_hard"]) if pre_fix else (v["post"], v["post_hard"])
    assert decision.name == want, decision.rule
    assert (decision.interrupt is not None) == bool(want_hard)


def test_generated_vectors_agree_with_qemu() -> None:
    cols = GENERATED["columns"]
    mismatches = []
    for row in GENERATED["rows"]:
        v = dict(zip(cols, row, strict=True))
        for pre_fix, key in ((False, "post"), (True, "pre")):
            query = IrqQuery(cpu=v["cpu"], lpcr=v["lpcr"], halted=bool(v["halted"]), psscr=v["psscr"],
                             msr=v["msr"], pending=v["pending"], has_hv_mode=bool(v["has_hv_mode"]),
                             quiesced=bool(v["quiesced"]), resume_as_sreset=bool(v["resume_as_sreset"]),
                             pre_fix=pre_fix)
            got = query.decide().interrupt
            if (got.value if got else 0) != v[key]:
                mismatches.append((v, key, got))
    assert len(GENERATED["rows"]) >= 2000
    assert not mismatches, mismatches[:5]


def test_power8_ignores_psscr_and_uses_pece() -> None:
    # POWER8 has no PSSCR: a halted CPU always uses the PECE table (PECE3 = DEC).
    asleep = IrqQuery(cpu="POWER8", lpcr=0x8, halted=True, pending=Interrupt.DECR.value)
    awake = IrqQuery(cpu="POWER8", lpcr=0x2008, halted=True, pending=Interrupt.DECR.value)
    assert asleep.decide().interrupt is None
    assert awake.decide().interrupt is Interrupt.DECR
    assert "PECE3" in awake.decide().rule
