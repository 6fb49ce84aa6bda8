"""--qemu-version: the vCPU loop as QEMU 10.0 writes it (qemu_wait_io_event; kvm_cpu_exec and tcg_cpu_exec
clear exit_request) or as 10.2 does after 871de7078f and 9a191d3782 (qemu_process_cpu_events, which
clears exit_request first, for every accelerator). Names follow the version, events included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import variant
from vcpu_sched import runner
from vcpu_sched.config import RunSettings
from vcpu_sched.model.cpus import cpu_events
from vcpu_sched.model.effects import CondWait
from vcpu_sched.model.kvm import kvm_cpu_exec
from vcpu_sched.model.machine import Machine


def _cpu(settings: RunSettings, version: str):  # type: ignore[no-untyped-def]
    machine = Machine(variant(settings, smp=2, cores=2, qemu_version=version))
    machine.runstate = "running"
    cpu = machine.cpus[1]
    cpu.halted = True
    cpu.exit_request = True
    return cpu


def test_who_clears_exit_request(seed_settings: RunSettings) -> None:
    old = _cpu(seed_settings, "10.0")
    with pytest.raises(StopIteration):
        next(kvm_cpu_exec(old))  # halted: the EXCP_HLT short-cut clears it in 10.0
    assert not old.exit_request
    new = _cpu(seed_settings, "10.2")
    with pytest.raises(StopIteration):
        next(kvm_cpu_exec(new))
    assert new.exit_request  # 9a191d3782: no longer here...
    assert isinstance(next(cpu_events(new)), CondWait)
    assert not new.exit_request  # ... but first thing in qemu_process_cpu_events, before it sleeps


@pytest.mark.parametrize("version,function", [("10.0", "qemu_wait_io_event"), ("10.2", "qemu_process_cpu_events")])
def test_the_log_and_the_report_use_the_versions_names(seed_settings: RunSettings, tmp_path: Path,
                                                        version: str, function: str) -> None:
    log = tmp_path / "run.jsonl"
    result = runner.run(variant(seed_settings, smp=4, cores=4, watchdog_s=2.0, qemu_version=version), log)
    assert result.verdict == "lockup" and result.lockup is not None
    names = {json.loads(line)["event"] for line in log.read_text().splitlines()}
    other = "qemu_process_cpu_events" if version == "10.0" else "qemu_wait_io_event"
    assert f"{function}_sleep" in names and f"{other}_sleep" not in names
    assert any(step.startswith(f"{function} never sleeps") for step in result.lockup.chain)
