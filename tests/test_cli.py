"""The command line: verdicts and exit statuses, JSON output, bad input as one line and status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vcpu_sched.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_seed_case_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "run", "spapr-rtas-stopped", "--json")
    data = json.loads(out)
    assert status == 1
    assert data["verdict"] == "lockup" and data["smp"] == 32 and data["cpus_online"] == 1
    lockup = data["lockup"]
    assert lockup["stuck_cpu"] == 0 and lockup["bql_holder"] not in (None, 0)
    assert lockup["holder_iterations"] > 1_000_000 and lockup["held_for_s"] > 19.99
    assert "CPU_INTERRUPT_HARD" in lockup["cause"]
    for key in ("guest_time_s", "wall_time_s", "settings"):
        assert key in data


@pytest.mark.parametrize("cpu", ["POWER10", "POWER9", "POWER8"])
@pytest.mark.parametrize("flags", [["--fix", "quiesced"], ["--accel", "tcg"], ["--timebase-reset", "reverted"]])
def test_booting_variants_exit_0(capsys: pytest.CaptureFixture[str], cpu: str, flags: list[str]) -> None:
    status, out, _ = _run(capsys, "run", "--json", "--cpu", cpu, *flags)
    data = json.loads(out)
    assert (status, data["verdict"], data["cpus_online"], data["lockup"]) == (0, "booted", 32, None)


def test_expect_turns_the_verdict_into_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "run", "--quiet", "--expect", "lockup")[0] == 0
    assert _run(capsys, "run", "--quiet", "--expect", "booted")[0] == 1


def test_text_report_names_stuck_cpu_holder_and_replay(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "run", "--seed", "7")
    assert status == 1
    assert "Booting Linux via __start()" in out
    assert "stuck:      CPU 0/KVM waits for BQL" in out
    assert "replay: vcpu-sched run spapr-rtas-stopped --seed 7" in out


def _bad_scenario(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text('description = "x"\nqemu = "qemu-system-ppc64"\n' + body)
    return str(path)


@pytest.mark.parametrize("argv,needle", [
    (["run", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
    (["run", "--accel", "hvf"], "invalid choice: 'hvf'"),
    (["run", "--smp", "0"], "smp: 0 is out of range"),
    (["run", "--smp", "2049"], "smp: 2049 is out of range"),
    (["run", "--fix", "maybe"], "invalid choice: 'maybe'"),
    (["run", "--watchdog", "soon"], "invalid float value: 'soon'"),
    (["irq", "--lpcr", "zz"], "'zz' is not a hexadecimal number"),
    (["irq", "--lpcr", "0x8", "--pending", "DEC,NMI"], "unknown interrupt 'NMI'"),
])
def test_bad_command_line(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own errors
        status = int(e.code or 0)
    _, err = capsys.readouterr()
    assert status == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("body,needle", [
    ("[settings]\nsmp = 'many'\n", "settings: smp: expected int, got str"),
    ("[settings]\nsmp = 0\n", "smp: 0 is out of range"),
    ("[settings]\nsmp = 4096\n", "smp: 4096 is out of range"),
    ("[settings]\ncolour = 'blue'\n", "unknown key 'colour'"),
    ("[settings]\nsmp = 4\ncores = 3\n", "does not match"),
    ("[settings\n", "not valid TOML"),
    ("extra = 1\n", "unknown key 'extra'"),
    ("[[expect]]\nverdict = 'fine'\nreason = 'x'\n", "verdict: 'fine' is not one of"),
])
def test_bad_scenario_files(capsys: pytest.CaptureFixture[str], tmp_path: Path, body: str, needle: str) -> None:
    path = _bad_scenario(tmp_path, body)
    status, _, err = _run(capsys, "run", path)
    assert status == 2
    assert needle in err and path in err
    assert len(err.strip().splitlines()) == 1


def test_irq_json_answers_would_this_cpu_wake(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "irq", "--cpu", "POWER9", "--lpcr", "0x54f41f", "--halted", "--psscr-ec",
                          "--pending", "DEC", "--json")
    assert status == 0
    data = json.loads(out)
    assert (data["interrupt"], data["hard"]) == ("DECR", True)
    assert "DEE" in data["rule"]
    _, out, _ = _run(capsys, "irq", "--lpcr", "0x54f41f", "--halted", "--psscr-ec", "--pending", "DEC",
                     "--quiesced", "--json")
    assert json.loads(out)["interrupt"] == "none"
    _, out, _ = _run(capsys, "irq", "--lpcr", "0x54f41f", "--halted", "--psscr-ec", "--pending", "DEC",
                     "--quiesced", "--pre-fix", "--json")
    assert json.loads(out)["interrupt"] == "DECR"


def test_console_script_and_module_entry_points() -> None:
    for argv in ([sys.executable, "-m", "vcpu_sched"], [str(Path(sys.executable).parent / "vcpu-sched")]):
        proc = subprocess.run([*argv, "run", "--fix", "quiesced", "--json", "--quiet"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["verdict"] == "booted"
