"""Bad input, every kind: one line on stderr, exit status 2, no traceback, and no file changed.

The first tests rerun each defect found by hand (issue 11) as the command a user typed; the property
tests then feed generated malformed options, scenario files, logs and schedules."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcpu_sched import runner
from vcpu_sched.cli import main
from vcpu_sched.scenario import SCENARIO_DIR, load


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own errors
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def _one_line_error(status: int, err: str, needle: str = "") -> None:
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


@pytest.fixture(scope="module")
def a_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "run.jsonl"
    runner.run(load("spapr-rtas-stopped").settings, path)
    return path


@pytest.fixture(scope="module")
def a_schedule(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schedules") / "hang.schedule.json"
    main(["explore", "--smp", "2", "--preemption-bound", "1", "--json", "--save", str(path)])
    return path


@pytest.mark.parametrize("argv,needle", [
    (["run", "--replay", "{schedule}", "--fix", "quiesced"], "drop --fix"),
    (["run", "--replay", "{schedule}", "--smp", "4"], "drop --smp"),
    (["run", "--replay", "{schedule}", "--qemu", "-smp 2"], "drop --qemu"),
    (["run", "--replay", "{schedule}", "--engine", "threads"], "drop --engine"),
    (["run", "--engine", "threads", "--clock", "virtual"], "threads engine runs in real time"),
    (["run", "--engine", "explore", "--clock", "real"], "explore engine has no clock"),
    (["run", "--qemu", "-M pseries,accel=kvm -smp 4", "--accel", "tcg"], "--accel tcg contradicts --qemu"),
    (["run", "--qemu", "-M pseries -smp 4", "--smp", "8"], "--smp 8 contradicts --qemu"),
    (["run", "powernv-core-stop-start", "--qemu", "-M pseries -smp 4"], "--qemu describes a pseries machine"),
    (["run", "--qemu", "-M pseries -smp 32,dies=2"], "dies not supported"),
    (["run", "--trace", "", "--log", "{tmp}/x.jsonl"], "empty pattern"),
    (["run", "--trace", "kvm_*"], "add --log FILE"),
    (["run", "--set", "boots=2"], "boots=2 needs 1 monitor system_reset"),
    (["run", "--watchdog", "600"], "must be shorter than deadline_s=600"),
    (["run", "s390x-sigp-cross", "--set", 'monitor=[["", "migrate"]]'], "migrate is modelled for the POWER"),
    (["run", "s390x-sigp-cross", "--set", 'monitor=[["", "nmi"]]'], "nmi is modelled for pseries only"),
    (["irq", "--lpcr", "-1"], "does not fit a 64-bit register"),
    (["irq", "--lpcr", "0x1ffffffffffffffff"], "does not fit a 64-bit register"),
    (["irq", "--lpcr", "0x8", "--psscr", "0x0", "--psscr-ec"], "give one or the other"),
    (["irq", "--cpu", "POWER8", "--lpcr", "0x8", "--psscr-ec"], "POWER8 has no PSSCR"),
    (["analyze", "{log}", "--plot", "{tmp}/out.xyz"], "name the picture's format"),
    (["analyze", "{log}", "--plot", "{tmp}"], "is a directory"),
    (["analyze", "{log}", "--plot", "{tmp}/missing/out.png"], "no such directory"),
    (["analyze", "{log}", "--perfetto", "{log}"], "is the input file"),
    (["explore", "--smp", "2", "--save", "{tmp}/missing/x.json"], "no such directory"),
    (["run", "--log", "{tmp}"], "is a directory"),
    (["run", "--log", "/dev/full", "--quiet"], "No space left on device"),
    (["run", "--log", "/dev/full", "--quiet", "--engine", "threads"], "No space left on device"),
])
def test_each_defect_is_one_line_and_exit_2(argv: list[str], needle: str, tmp_path: Path, a_log: Path,
                                            a_schedule: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_before = a_log.read_bytes()
    argv = [a.format(tmp=tmp_path, log=a_log, schedule=a_schedule) for a in argv]
    started = time.monotonic()
    status, _, err = _main(argv, capsys)
    _one_line_error(status, err, needle)
    assert a_log.read_bytes() == log_before
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing was written"
    assert time.monotonic() - started < 30, "refused before doing the work"


def test_a_replay_that_does_not_fit_leaves_the_log_file_as_it_was(tmp_path: Path, a_schedule: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    other = json.loads(a_schedule.read_text())
    other["choices"] = ["CPU 7/KVM"]
    bad = tmp_path / "other.schedule.json"
    bad.write_text(json.dumps(other))
    keep = tmp_path / "keep.jsonl"
    keep.write_text("precious\n")
    status, _, err = _main(["run", "--replay", str(bad), "--log", str(keep)], capsys)
    _one_line_error(status, err, "not runnable here")
    assert keep.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jsonl", "other.schedule.json"]


@pytest.mark.parametrize("steps", ["many", None, -1, 1.5])
def test_a_schedule_with_impossible_steps(steps: object, tmp_path: Path, a_schedule: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(a_schedule.read_text())
    data["steps"] = steps
    bad = tmp_path / "bad.schedule.json"
    bad.write_text(json.dumps(data))
    status, _, err = _main(["run", "--replay", str(bad)], capsys)
    _one_line_error(status, err, "steps: must be a whole number")


def test_trace_minus_pattern_excludes_as_the_readme_writes_it(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "run.jsonl"
    status, _, err = _main(["run", "--quiet", "--trace", "-qemu_mutex_*", "--log", str(log)], capsys)
    assert status == 1, err
    events = {json.loads(line)["event"] for line in log.read_text().splitlines()}
    assert "kvm_cpu_exec" in events and not any(e.startswith("qemu_mutex") for e in events)


def test_impossible_values_in_a_log_are_flagged_line_by_line(a_log: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    lines = a_log.read_text().splitlines()
    end = json.loads(lines[-1])
    damaged = [*lines[:3],
               json.dumps({"event": "qemu_mutex_unlock", "t_ns": 0, "cpu": 1, "thread": "CPU 1/KVM",
                           "site": "x", "held_ns": -5}),
               json.dumps({"event": "console", "t_ns": 0, "cpu": 77, "text": "hello"}),
               *lines[3:-1],
               json.dumps({"event": "console", "t_ns": end["t_ns"] - 1, "cpu": 0, "text": "backwards"}),
               json.dumps({**end, "verdict": 42})]
    path = tmp_path / "damaged.jsonl"
    path.write_text("\n".join(damaged) + "\n")
    status, out, _ = _main(["analyze", str(path), "--json"], capsys)
    assert status == 0
    summary = json.loads(out)
    reasons = {c["line"]: c["why"] for c in summary["corrupt"]}
    assert "held_ns -5 is not a count or a duration" in reasons[4]
    assert "cpu 77" in reasons[5]
    assert "time runs backwards" in reasons[len(damaged) - 1]
    assert "verdict 42 is not a verdict" in reasons[len(damaged)]
    assert summary["verdict"] is None and summary["complete"] is False, "a log whose end is damaged is truncated"
    header = json.loads(lines[0])
    header["settings"]["smp"] = "many"
    path.write_text(json.dumps(header) + "\n")
    status, _, err = _main(["analyze", str(path)], capsys)
    _one_line_error(status, err, "smp: expected int, got str")


def test_a_closed_stdout_ends_quietly() -> None:
    proc = subprocess.run(f"{sys.executable} -m vcpu_sched run | true", shell=True, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.stderr == ""


def test_the_lockups_own_hold_is_in_the_bql_statistics(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _main(["run", "--json", "--quiet"], capsys)
    data = json.loads(out)
    assert status == 1 and data["verdict"] == "lockup"
    assert data["bql_stats"]["CPU 1/KVM"]["max_hold_ns"] == round(data["lockup"]["held_for_s"] * 1e9)


def test_explore_keeps_what_it_found_at_its_wall_limit(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    status, out, _ = _main(["explore", "--smp", "2048", "--strategy", "exhaustive", "--wall-limit", "1", "--json"],
                           capsys)
    assert time.monotonic() - started < 15
    data = json.loads(out)
    assert data["complete"] is False and "wall-clock limit of 1 s" in data["incomplete"]
    # a search cut short that found nothing is inconclusive (exit 3), not a pass
    assert status == 3 and data["inconclusive"] is True and data["schedules"] >= 1


# --- generated malformed input ---------------------------------------------------------------------

_words = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_wrong = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=False), st.booleans(), _words,
                   st.lists(st.integers(), max_size=3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["smp", "accel", "cpu", "fix", "watchdog_s", "deadline_s", "seed", "threads",
                            "loop_cost_ns", "monitor", "boots", "host_lpcr", "engine", "colour"]), value=_wrong)
def test_a_scenario_file_with_a_wrong_value(key: str, value: object, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    text = (SCENARIO_DIR / "spapr-rtas-stopped.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[settings]\n", f"[settings]\n{key} = {json.dumps(value)}\n", 1))
    before = bad.read_bytes()
    status, _, err = _main(["run", str(bad), "--quiet"], capsys)
    if status != 2:  # a value that happens to be valid (seed = 3, fix = "none", ...) runs
        assert status in (0, 1) and err == ""
        return
    _one_line_error(status, err)
    assert bad.read_bytes() == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--smp", "--watchdog", "--deadline", "--seed", "--set", "--qemu", "--accel",
                               "--cpu", "--fix", "--engine", "--clock", "--trace", "--expect"]), value=_words)
def test_an_option_with_a_malformed_value(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _main(["run", "--quiet", option, value], capsys)
    if status in (0, 1):  # a value that happens to be valid
        return
    _one_line_error(status, err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(_words, st.just('{"event": "run_start", "t_ns": 0}'),
                                st.builds(json.dumps, st.dictionaries(_words, _wrong, max_size=3))), max_size=8))
def test_a_file_that_is_not_a_log(lines: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    before = path.read_bytes()
    status, _, err = _main(["analyze", str(path), "--perfetto", str(tmp_path / "t.json")], capsys)
    _one_line_error(status, err, "vcpu_sched event log")
    assert path.read_bytes() == before and not (tmp_path / "t.json").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["format", "settings", "choices", "steps", "verdict"]), value=_wrong)
def test_a_malformed_schedule(key: str, value: object, tmp_path: Path, a_schedule: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(a_schedule.read_text())
    data[key] = value
    bad = tmp_path / "bad.schedule.json"
    bad.write_text(json.dumps(data))
    log = tmp_path / "keep.jsonl"
    log.write_text("keep\n")
    status, _, err = _main(["run", "--replay", str(bad), "--log", str(log)], capsys)
    if status in (0, 1):  # e.g. a verdict string the file did not have: the replay still runs
        return
    _one_line_error(status, err)
    assert log.read_text() == "keep\n"
