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
