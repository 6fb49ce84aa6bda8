"""Every scenario file, every documented variant; the QEMU command-line import; the matrix."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import trio

from tests.conftest import run_in_test_clock
from vcpu_sched.cli import main
from vcpu_sched.matrix import rows_for
from vcpu_sched.scenario import SCENARIO_DIR, apply, load

SCENARIOS = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
CASES = [(name, i) for name in SCENARIOS for i in range(len(load(name).expect))]


def test_the_five_scenarios_exist_and_document_their_variants() -> None:
    assert set(SCENARIOS) >= {"spapr-rtas-stopped", "spapr-cpu-offline-online", "spapr-system-reset",
                              "spapr-migrate", "powernv-core-stop-start"}
    for name in SCENARIOS:
        scenario = load(name)
        binaries = {"s390-ccw-virtio": "qemu-system-s390x", "q35": "qemu-system-x86_64"}
        binary = binaries.get(scenario.settings.machine, "qemu-system-ppc64")
        assert scenario.description.strip() and scenario.qemu.startswith(binary)
        assert len(scenario.expect) >= 3, name
        assert all(e.reason for e in scenario.expect)


@pytest.mark.parametrize("name,index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
async def test_documented_verdict(autojump_clock: trio.testing.MockClock, name: str, index: int) -> None:
    scenario = load(name)
    expect = scenario.expect[index]
    settings = apply(scenario.settings, expect.variant, name)
    if settings.engine == "explore":  # a row that pins one of its schedules: the explore engine runs it
        from vcpu_sched import runner

        result = runner.run(settings)
    else:
        result = await run_in_test_clock(settings)
    assert result.verdict == expect.verdict, f"{expect.reason}: got {result.reason}"


async def test_migration_failure_names_the_cause(autojump_clock: trio.testing.MockClock) -> None:
    s = apply(load("spapr-migrate").settings, {"fix": "quiesced"}, "test")
    result = await run_in_test_clock(s)
    assert result.verdict == "lost-interrupts" and result.exit_status == 1
    assert "never took the IPI" in result.reason
    assert "smp: CPU 1 did not answer an IPI within 1 s" in result.console


async def test_powernv_failure_and_fix(autojump_clock: trio.testing.MockClock) -> None:
    base = load("powernv-core-stop-start").settings
    broken = await run_in_test_clock(base)
    assert broken.verdict == "ran-while-stopped"
    assert "OPAL: thread 1 ran while stopped by direct controls!" in broken.console
    fixed = await run_in_test_clock(apply(base, {"fix": "quiesced"}, "test"))
    assert fixed.verdict == "completed" and fixed.console[-1] == "OPAL: thread 1 restarted"
    assert any("RAS status 0xc0000000000000" in line for line in fixed.console), "thread 1 reads back quiesced"


async def test_offline_online_loops_really_hotplug(autojump_clock: trio.testing.MockClock) -> None:
    s = apply(load("spapr-cpu-offline-online").settings, {"fix": "quiesced", "smp": 4, "loops": 3}, "test")
    result = await run_in_test_clock(s)
    assert result.verdict == "completed"
    assert [line for line in result.console if line.startswith("loop ")] == [
        f"loop {n}: {what}" for n in (1, 2, 3) for what in ("3 secondary CPUs offline", "4 CPUs online")]


async def test_system_reset_boots_twice(autojump_clock: trio.testing.MockClock) -> None:
    s = apply(load("spapr-system-reset").settings, {"fix": "quiesced"}, "test")
    result = await run_in_test_clock(s)
    assert result.console.count("smp: Brought up 1 node, 8 CPUs") == 2


SEED_QEMU = "-machine pseries,accel=kvm -smp 32,sockets=1,cores=32,threads=1 -cpu host -m 32768"


def test_qemu_command_line_gives_the_seed_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--qemu", SEED_QEMU, "--json", "--quiet"]) == 1
    captured = capsys.readouterr()
    imported = json.loads(captured.out)
    assert main(["run", "spapr-rtas-stopped", "--json", "--quiet"]) == 1
    seed = json.loads(capsys.readouterr().out)
    assert imported["verdict"] == seed["verdict"] == "lockup"
    assert imported["lockup"]["bql_holder"] == seed["lockup"]["bql_holder"]
    assert "ignored (not modelled): -m 32768" in captured.err


@pytest.mark.parametrize("options,needle", [
    ("-machine pseries,accel=kvm -accel tcg", "contradicts"),
    ("-machine pseries -smp 4,sockets=2,cores=3", "!= 4 CPUs"),
    ("-machine pseries -cpu host", "-cpu host needs KVM"),
    ("-machine powernv,accel=kvm", "does not support the KVM accelerator"),
    ("-machine virt", "not modelled"),
    ("-machine pseries -cpu POWER7", "not modelled"),
])
def test_qemu_command_line_contradictions_are_bad_input(capsys: pytest.CaptureFixture[str], options: str,
                                                        needle: str) -> None:
    assert main(["run", "--qemu", options, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_qemu_defaults_follow_qemu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--qemu", "-M pseries -smp 4", "--json", "--quiet"]) == 0  # TCG by default
    data = json.loads(capsys.readouterr().out)
    assert (data["settings"]["accel"], data["settings"]["cores"], data["settings"]["threads"]) == ("tcg", 4, 1)
    assert main(["run", "--qemu", "-M powernv10 -smp 4,cores=1,threads=4", "--json", "--quiet"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "ran-while-stopped"


def test_matrix_json_and_a_mismatch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["matrix", "spapr-migrate", "--json", "--jobs", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mismatches"] == 0 and data["runs"] == len(rows_for(load("spapr-migrate"))) >= 25
    wrong = tmp_path / "wrong.toml"
    wrong.write_text((SCENARIO_DIR / "powernv-core-stop-start.toml").read_text().replace(
        'verdict = "ran-while-stopped"', 'verdict = "completed"'))
    assert main(["matrix", str(wrong), "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "!! wrong" in out and "1 mismatch," in out


def test_matrix_lists_the_seed_claims(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "spapr-rtas-stopped", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    claims = out.split("\n\n")[0].splitlines()[1:]
    expected = tomllib.loads((SCENARIO_DIR / "spapr-rtas-stopped.toml").read_text())["expect"]
    assert len(claims) == len(expected) >= 4 and all(line.startswith("  ok ") for line in claims)


def test_the_readme_documents_every_scenario_setting() -> None:
    """docs/scenario-files.md's table of scenario keys names every key the scenario schema accepts."""
    import re

    from vcpu_sched.scenario import SCHEMA

    readme = (SCENARIO_DIR.parent / "docs" / "scenario-files.md").read_text()
    start = readme.index("| key | type | values | meaning |")
    table = readme[start:readme.index("\n\n", start)]
    documented = set(re.findall(r"`([a-z_0-9]+)`", "\n".join(row.split("|")[1] for row in table.splitlines()[2:])))
    assert set(SCHEMA) - documented == set()
