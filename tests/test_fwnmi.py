"""spapr-fwnmi-kdump (upstream aef92d87c5): the kernel's per-vCPU mutex, held by KVM_RUN, makes a vCPU
ioctl on another vCPU wait - with the BQL held - for as long as that vCPU stays in the guest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import logged_run, variant
from vcpu_sched.explore import explore_exhaustive
from vcpu_sched.scenario import apply, load
from vcpu_sched.sweep import sweep


def _events(tmp_path: Path, **changes: Any) -> tuple[str, list[dict[str, Any]]]:
    return logged_run(load("spapr-fwnmi-kdump").settings, tmp_path, **changes)


def test_before_the_fix_the_ioctl_waits_for_the_first_vcpu_inside_kvm_run(tmp_path: Path) -> None:
    verdict, events = _events(tmp_path)
    assert verdict == "lockup"
    console = [e["text"] for e in events if e["event"] == "console"]
    assert console[-1].startswith("numa:   NODE_DATA") and not any("kdump: kernel booted" in t for t in console)
    wait = next(e for e in events if e["event"] == "kvm_vcpu_mutex_wait")
    assert (wait["cpu"], wait["target"]) == (1, 0) and "KVM_CAP_PPC_FWNMI" in wait["ioctl"]
    entered = [i for i, e in enumerate(events) if e["event"] == "kvm_vcpu_ioctl_run" and e["cpu"] == 0]
    left = [i for i, e in enumerate(events) if e["event"] == "kvm_run_exit" and e["cpu"] == 0]
    assert entered[-1] > left[-1]  # CPU 0 entered KVM_RUN and never came back
    assert not any(e["event"] == "kvm_vcpu_enable_cap" and e["cpu"] == 1 for e in events)


def test_with_the_fix_the_ioctl_goes_to_the_calling_vcpu(tmp_path: Path) -> None:
    verdict, events = _events(tmp_path, fwnmi_fix=True)
    assert verdict == "completed"
    cap = [e for e in events if e["event"] == "kvm_vcpu_enable_cap" and e["cpu"] == 1]
    assert [e["target"] for e in cap] == [1] and not any(e["event"] == "kvm_vcpu_mutex_wait" for e in events)


def test_the_odds_are_those_of_the_commit() -> None:
    """crash_cpu drawn from the seed: a hang unless the first CPU crashed, (n - 1) / n."""
    scenario = load("spapr-fwnmi-kdump")
    settings = apply(scenario.settings, {"crash_cpu": -1, "smp": 4}, "test")
    counts = sweep("spapr-fwnmi-kdump", settings, scenario.settings, range(0, 120), None, None, jobs=2,
                   progress=False)["verdicts"]
    assert set(counts) == {"lockup", "completed"}
    assert 0.6 < counts["lockup"] / 120 < 0.9


@pytest.mark.parametrize("bound", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_the_explorer_finds_it_at_smp_2(bound: int) -> None:
    """A lockup, not a deadlock: CPU 0 spins in kexec_wait inside KVM_RUN, so something always runs. The
    last step before the watchdog is CPU 1 waiting for CPU 0's vCPU mutex, the BQL held."""
    report = explore_exhaustive(variant(load("spapr-fwnmi-kdump").settings, smp=2, cores=2), 2000, bound,
                                delays=True)
    assert report.shortest is not None and report.shortest.verdict == "lockup"
    mutex_waits = [s for s in report.shortest.steps if "kvm_vcpu_mutex_wait" in s.events]
    assert mutex_waits and mutex_waits[-1].thread == "CPU 1/KVM"
