"""`vcpu-sched matrix` heads each commit's claims with that commit: the seed patch's under "Claims of the
patch", every other one's under its own header (issue 26 item 5)."""

from __future__ import annotations

from typing import Any

from vcpu_sched.matrix import CLAIMS_OF, claims_text, matrix_text


def _row(scenario: str, claim: str | None, match: bool = True) -> dict[str, Any]:
    return {"scenario": scenario, "label": "(as in the file)", "claim": claim, "match": match,
            "actual": "lockup", "expected": "lockup", "guest_time_s": 1.0, "spun": None, "reason": "r", "cause": "c"}


def test_each_commit_has_its_own_header_and_the_seed_patch_comes_first() -> None:
    rows = [_row("s390x-sigp-cross", "sigp claim"), _row("spapr-rtas-stopped", "seed claim"),
            _row("spapr-rtas-stopped", None), _row("my-own", "a user's claim", match=False)]
    groups = "\n".join(claims_text(rows)).split("\n\n")
    assert [g.splitlines()[0] for g in groups] == [
        'Claims of the patch ("ppc/spapr: Fix RTAS stopped state"):',
        "Claims of my-own:",
        f"Claims of {CLAIMS_OF['s390x-sigp-cross']}:"]
    assert groups[0].splitlines()[1:] == ["  ok seed claim: spapr-rtas-stopped (as in the file) -> lockup "
                                          "(expected lockup)"]
    assert groups[1].splitlines()[1].startswith("  !! a user's claim")
    assert "f9530c3242" in groups[2] and "sigp claim" in groups[2] and "seed claim" not in groups[2]


def test_no_claims_no_header() -> None:
    text = matrix_text([_row("powernv-core-stop-start", None)], 1.0)
    assert "Claims of" not in text and text.splitlines()[0].lstrip().startswith("scenario")
