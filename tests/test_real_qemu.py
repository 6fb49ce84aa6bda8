"""The model's findings on a real QEMU with a real Linux guest (pytest -m real; tools/dev.py test-real).

Each test skips, saying why, when its binary or the guest kit is not set up (`python3 tools/dev.py
real-qemu`). The rows of one test run side by side: a TCG guest keeps about one core busy, and most of a
stuck-CPU row is Linux waiting for the CPU to call in.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest

from vcpu_sched.errors import BadInput
from vcpu_sched.real.command import Binary, binary, run_real
from vcpu_sched.real.kit import Kit, find_kit, installed_qemus
from vcpu_sched.scenario import apply, load

pytestmark = pytest.mark.real
DEADLINE_S = 400.0


@pytest.fixture(scope="module")
def kit() -> Kit:
    try:
        return find_kit()
    except BadInput as e:
        pytest.skip(str(e))


def _qemu(release: str) -> Binary:
    path = installed_qemus().get(release)
    if path is None and release == "7.2":
        path = shutil.which("qemu-system-ppc64")
    if path is None:
        pytest.skip(f"no QEMU {release}: run python3 tools/dev.py real-qemu")
    found = binary(path)
    if found.release != release:
        pytest.skip(f"{path} is QEMU {found.version}, not {release}")
    return found


@pytest.fixture(scope="module")
def qemu_11_1() -> Binary:
    return _qemu("11.1")


def _rows(name: str, qemu: Binary, kit: Kit, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    scenario = load(name)
    with concurrent.futures.ThreadPoolExecutor(len(variants)) as pool:
        futures = [pool.submit(run_real, apply(scenario.settings, v, "test"), v, qemu, kit, DEADLINE_S)
                   for v in variants]
        return [f.result() for f in futures]


def _rtas_answers(row: dict[str, Any], call: str, cpu: int) -> list[str]:
    """The traced answers to `call` for CPU `cpu` (the call's first argument), in order."""
    out, asked = [], False
    for line in row["evidence"]:
        if f"calls {call} {{{hex(cpu)}" in line:
            asked = True
        elif asked and f"{call} answers" in line:
            out.append(line.split("answers ", 1)[1])
            asked = False
    return out


def test_628bda1ab7_leaves_a_never_started_cpu_stuck_after_a_pseries_10_0_migration(
        qemu_11_1: Binary, kit: Kit) -> None:
    finding, subsection, no_migration = _rows("spapr-migrate-from-9.2", qemu_11_1, kit, [
        {}, {"rtas_stopped_state": True}, {"monitor": []}])
    assert finding["qemu_args"][1] == "pseries-10.0,accel=tcg"
    assert finding["verdict"] == "stuck-cpu", finding["reason"]
    assert any("Processor 2 is stuck." in line for line in finding["evidence"])
    # the RTAS answer that caused it: query-cpu-stopped-state says CPU 2 is not stopped (2), so Linux
    # never calls start-cpu
    assert _rtas_answers(finding, "query-cpu-stopped-state", 2) == ["status 0 {0x2}"]
    assert _rtas_answers(finding, "start-cpu", 2) == []
    assert subsection["qemu_args"][1] == "pseries,accel=tcg"
    assert subsection["verdict"] == "completed", subsection["reason"]
    assert _rtas_answers(subsection, "start-cpu", 2) == ["status 0 {}"]
    assert no_migration["verdict"] == "completed", no_migration["reason"]
    assert all(row["model"]["verdict"] == row["verdict"] for row in (finding, subsection, no_migration))


def test_an_injected_nmi_resets_rtas_stopped_cpus_after_a1c2dfee4f(qemu_11_1: Binary, kit: Kit) -> None:
    nmi, one_cpu = _rows("spapr-nmi-kdump", qemu_11_1, kit, [{"accel": "tcg"}, {"accel": "tcg", "kdump_cpus": 1}])
    failed = [line for line in nmi["evidence"] if "start-cpu failed: -1" in line]
    assert len(failed) == 2, nmi["evidence"]
    assert _rtas_answers(nmi, "start-cpu", 2) == ["status -1 {}"]
    # maxcpus=1: no start-cpu for the reset CPUs, so none fails. Which CPU wins the NMI's crash is a race;
    # when CPU 1 does, the kdump kernel still tries CPU 0 (cpuhp_bringup_mask), kept in the hold loop
    assert not any("start-cpu failed" in line for line in one_cpu["evidence"])
    assert one_cpu["verdict"] == "completed" or one_cpu["reason"].endswith("Processor 0 is stuck."), one_cpu["reason"]


def test_a_sysrq_crash_leaves_never_started_cpus_stopped(qemu_11_1: Binary, kit: Kit) -> None:
    (crash,) = _rows("spapr-nmi-kdump", qemu_11_1, kit, [{"accel": "tcg", "workload": "kdump", "monitor": []}])
    assert not any("start-cpu failed" in line for line in crash["evidence"])
    assert _rtas_answers(crash, "start-cpu", 2) == ["status 0 {}"]


def test_the_command_runs_a_boot_on_qemu_7_2_end_to_end(kit: Kit) -> None:
    qemu = _qemu("7.2")
    out = subprocess.run([sys.executable, "-m", "vcpu_sched", "real", "spapr-rtas-stopped", "--accel", "tcg",
                          "--smp", "2", "--qemu-binary", qemu.path, "--json"], capture_output=True, text=True,
                         check=False, timeout=DEADLINE_S)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout)
    assert (row["verdict"], row["model"]["verdict"], row["release"]) == ("booted", "booted", "7.2")
    assert "Booting Linux via __start()" in out.stderr  # the console goes to stderr with --json
    assert _rtas_answers(row, "start-cpu", 1) == ["status 0 {}"]


def _ticks_after_migration(qemu: Binary, kit: Kit, rtas_stopped_state: bool) -> dict[int, int]:
    """Boot spapr-migrate-from-9.2's guest, idle on both CPUs with a task on each printing a line a second,
    migrate 0-500 ms after the first line; how many lines each CPU printed."""
    import dataclasses

    from vcpu_sched.real import session
    from vcpu_sched.real.plan import plan

    settings = apply(load("spapr-migrate-from-9.2").settings,
                     {"monitor": [["idle-test: ready", "migrate"]], "rtas_stopped_state": rtas_stopped_state}, "test")
    base = plan(settings, {}, qemu.release)
    ticks = 'i=0; while [ $i -lt 20 ]; do echo "tick cpu$0 $i"; i=$((i + 1)); sleep 1; done'
    body = "\n".join([
        "echo idle-test: ready",
        f"taskset -c 1 sh -c '{ticks}' 1 &",
        f"taskset -c 0 sh -c '{ticks}' 0",
        "wait", "finish"]) + "\n"
    run = dataclasses.replace(base, script=dataclasses.replace(base.script, body=body, waits=(False,)))
    reading = session.run(qemu.path, run, kit, 0, 120.0)
    assert any("migrated" in line for line in reading.console), reading.qmp
    return {cpu: sum(line.startswith(f"tick cpu{cpu} ") for line in reading.console) for cpu in (0, 1)}


def test_628bda1ab7_takes_an_idle_boot_cpu_for_a_stopped_one(qemu_11_1: Binary, kit: Kit) -> None:
    """docs/findings/628bda1ab7-inference.md, consequence 2: after a pseries-10.0 migration of an idle guest,
    CPU 0 (EC from its reset, PM bits from its entry state) is inferred quiesced and never runs again."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        inferred = pool.submit(_ticks_after_migration, qemu_11_1, kit, False)
        carried = pool.submit(_ticks_after_migration, qemu_11_1, kit, True)
        inferred_ticks, carried_ticks = inferred.result(), carried.result()
    assert carried_ticks == {0: 20, 1: 20}
    assert inferred_ticks[1] == 20 and inferred_ticks[0] < 5, inferred_ticks


def test_a_restored_boot_runs_a_row_as_a_fresh_boot_does(qemu_11_1: Binary, kit: Kit) -> None:
    """The saved boot (boots.py) against a boot: the same verdict, the same workload, the same RTAS answers."""
    scenario = load("spapr-cpu-offline-online")
    variant = {"accel": "tcg", "smp": 4, "loops": 1}
    settings = apply(scenario.settings, variant, "test")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        fresh = pool.submit(run_real, settings, variant, qemu_11_1, kit, DEADLINE_S, None, False)
        restored = pool.submit(run_real, settings, variant, qemu_11_1, kit, DEADLINE_S)
        rows = fresh.result(), restored.result()
    assert rows[0]["boot"].startswith("booted afresh") and rows[1]["boot"].startswith("restored a saved boot")
    for row in rows:
        assert row["verdict"] == row["model"]["verdict"] == "completed", row["reason"]

    def work(row: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """The workload's markers in order, and the last answer RTAS gave to each call the script caused
        (how often Linux polls query-cpu-stopped-state before a dying CPU is stopped, and which CPU runs
        the shell, vary from run to run)."""
        evidence = row["evidence"]
        # from the script's start to its end (at the power-off the kernel's own stop-self calls race the console)
        after = evidence[evidence.index("vcpu-sched: ready for the script") + 1:evidence.index("vcpu-sched: done")]
        rtas = [re.sub(r"^rtas: \[[^]]*\] CPU \d+ +", "", line) for line in after if line.startswith("rtas:")]
        answered = {call: answer for call, answer in itertools.pairwise(rtas)
                    if call.startswith("calls ") and " answers " in answer}
        return [line for line in after if not line.startswith("rtas:")], answered

    assert work(rows[0]) == work(rows[1])


def test_a_stream_from_qemu_7_2_leaves_a_never_started_cpu_stuck_on_11_1(qemu_11_1: Binary, kit: Kit) -> None:
    """628bda1ab7's inference with a real pre-10.0 source: QEMU 7.2 boots the guest (pseries-7.2, maxcpus=2
    of 4) and migrates it into QEMU 11.1.3, which infers CPUs 2 and 3 not quiesced; Linux never calls start-cpu."""
    source = _qemu("7.2")
    out = subprocess.run([sys.executable, "-m", "vcpu_sched", "real", "spapr-migrate-from-9.2", "--qemu-binary",
                          source.path, "--migrate-to", qemu_11_1.path, "--quiet", "--json"], capture_output=True,
                         text=True, check=False, timeout=DEADLINE_S)
    row = json.loads(out.stdout)
    assert row["qemu_args"][1] == "pseries-7.2,accel=tcg" and row["migrate_to"]["version"] == qemu_11_1.version
    assert row["verdict"] == row["model"]["verdict"] == "stuck-cpu", row["reason"]
    assert out.returncode == 1  # a failure found, as `real` says it
    assert any("Processor 2 is stuck." in line for line in row["evidence"])
    assert _rtas_answers(row, "query-cpu-stopped-state", 2) == ["status 0 {0x2}"]
    assert _rtas_answers(row, "start-cpu", 2) == []
