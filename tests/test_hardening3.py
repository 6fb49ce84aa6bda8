"""Issue 25, items 3, 4, 5, 6 (scenario files) and 9: each kind of bad input as the command a user types.

Every refusal is checked the same way: exit status 2, one stderr line `vcpu-sched: error: ...`, no
traceback, every file in the directory as it was (bytes, kind and mode; nothing created or removed), and no
process of ours left. Kinds with many members are generated (Hypothesis) and run in-process through
`main`, which is what the console script calls; one member of each also runs as a process.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import unicodedata
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcpu_sched import sweep as sweep_module
from vcpu_sched.cli import build_parser, main
from vcpu_sched.files import MAX_LINE
from vcpu_sched.qemu_command import _parser as qemu_parser

VCPU_SCHED = [sys.executable, "-m", "vcpu_sched"]
SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "spapr-rtas-stopped.toml"
QEMU_LINE = ["-M", "pseries,accel=kvm", "-smp", "2", "-cpu", "host"]
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    # what earlier tests left (multiprocessing's resource tracker after a Dask sweep) is not this test's
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    assert [c for c in psutil.Process().children(recursive=True) if c.pid not in before] == []


def _snapshot(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every entry under `root`: its kind, mode and (regular files) bytes; FIFOs are never opened."""
    out = {}
    for path in sorted(root.rglob("*")):
        st_ = path.lstat()
        kind = ("fifo" if stat.S_ISFIFO(st_.st_mode) else "link" if stat.S_ISLNK(st_.st_mode)
                else "dir" if stat.S_ISDIR(st_.st_mode) else "file")
        data = path.read_bytes() if kind == "file" else os.readlink(path).encode() if kind == "link" else b""
        out[str(path.relative_to(root))] = (kind, stat.S_IMODE(st_.st_mode), data)
    return out


def _one_line(status: int, err: str, needle: str) -> None:
    assert status == 2, err
    assert err.startswith("vcpu-sched: error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and needle in err, err


def refused(cwd: Path, argv: list[str | bytes], needle: str, env: dict[str, str] | None = None) -> None:
    """The command, as a process in `cwd`: exit 2, one line naming the problem, no file touched."""
    before = _snapshot(cwd)
    proc = subprocess.run([*VCPU_SCHED, *argv], cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=120, env=None if env is None else {**os.environ, **env})
    _one_line(proc.returncode, proc.stderr.decode("utf-8", "replace"), needle)
    assert _snapshot(cwd) == before


def refused_here(capsys: pytest.CaptureFixture[str], cwd: Path, argv: list[str], needle: str) -> None:
    """The same through `main` in this process (for generated cases: a process each would take minutes)."""
    before = _snapshot(cwd)
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own errors
        status = int(e.code or 0)
    _, err = capsys.readouterr()
    _one_line(status, err, needle)
    assert _snapshot(cwd) == before


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """A working directory with a scenario file `s.toml`, a hard link and a symbolic link to it."""
    (tmp_path / "s.toml").write_bytes(SCENARIO.read_bytes())
    os.link(tmp_path / "s.toml", tmp_path / "hard.toml")
    (tmp_path / "sym.toml").symlink_to("s.toml")
    return tmp_path


@pytest.fixture(scope="module")
def a_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("log") / "run.jsonl"
    assert main(["run", "--smp", "2", "--quiet", "--log", str(path)]) in (0, 1)
    return path.read_bytes()


# Item 3: an output over one of the command's own inputs, however the input was named.
@pytest.mark.parametrize("argv", [
    ["run", "s", "--scenarios", ".", "--quiet", "--log", "s.toml"],
    ["run", "s", "--scenarios", ".", "--quiet", "--log", "hard.toml"],
    ["run", "sym.toml", "--quiet", "--log", "hard.toml"],
    ["run", "s.toml", "--quiet", "--log", "./sub/../s.toml"],
    ["explore", "s.toml", "--save", "s.toml"],
    ["explore", "s", "--scenarios", ".", "--save", "sym.toml"],
    ["sweep", "s", "--scenarios", ".", "--seeds", "0:2", "--db", "s.toml"],
    ["sweep", "hard.toml", "--seeds", "0:2", "--db", "sym.toml"],
    ["qemu", "--scenario", "s.toml", "--log", "s.toml", *QEMU_LINE],
    ["qemu", "--scenario", "sym.toml", "-pidfile", "hard.toml", *QEMU_LINE],
])
def test_an_output_over_an_input_is_refused(here: Path, argv: list[str]) -> None:
    (here / "sub").mkdir()
    refused(here, list(argv), "is the input file")


@pytest.mark.parametrize("argv", [
    ["analyze", "{log}", "--perfetto", "out.svg", "--plot", "out.svg"],
    ["analyze", "{log}", "--perfetto", "out.svg", "--plot", "./out.svg"],
])
def test_two_outputs_of_one_command_are_refused(tmp_path: Path, a_log: bytes, argv: list[str]) -> None:
    (tmp_path / "run.jsonl").write_bytes(a_log)
    refused(tmp_path, [a.format(log="run.jsonl") for a in argv], "is also the --perfetto file")


# Item 4: bad input of every kind that gave a traceback.
DEEP_TOML = st.integers(300, 30_000).flatmap(lambda n: st.sampled_from([
    "[" * n + "]" * n, "{a=" * n + "1" + "}" * n, "[{a=" * n + "1" + "}]" * n]))


@HYPOTHESIS
@given(value=DEEP_TOML, where=st.sampled_from(["file", "set"]))
def test_toml_nested_deep_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str,
                                      where: str) -> None:
    if where == "file":
        (tmp_path / "deep.toml").write_text(f'description = "d"\nqemu = "q"\n[settings]\nmonitor = {value}\n')
        argv = ["run", str(tmp_path / "deep.toml"), "--quiet"]
    else:
        argv = ["run", "--quiet", "--set", f"monitor={value}"]
    refused_here(capsys, tmp_path, argv, "")  # too deep for tomllib, or read and then refused as a value


@pytest.mark.parametrize("value", ["[" * 30_000 + "]" * 30_000, "{a=" * 30_000 + "1" + "}" * 30_000])
def test_toml_nested_deep_as_a_process(tmp_path: Path, value: str) -> None:
    (tmp_path / "deep.toml").write_text(f'description = "d"\nqemu = "q"\n[settings]\nmonitor = {value}\n')
    refused(tmp_path, ["run", "deep.toml", "--quiet"], "deep.toml: not valid TOML: arrays or tables nested too deep")
    refused(tmp_path, ["run", "--quiet", "--set", f"monitor={value}"], "--set monitor: arrays or tables nested")
    (tmp_path / "deep.toml").unlink()


@pytest.mark.parametrize("text", ["9" * 5000, "0x" + "f" * 5000, "-" + "9" * 4301])
def test_toml_numbers_beyond_the_int_string_limit(here: Path, text: str) -> None:
    (here / "big.toml").write_text(f'description = "d"\nqemu = "q"\n[settings]\nseed = {text}\n')
    refused(here, ["run", "big.toml", "--quiet"], "big.toml")
    refused(here, ["run", "--quiet", "--set", f"seed={text}"], "seed")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _numeric_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every command that takes a number."""
    out = []
    for name in _subparsers(build_parser()):
        for action in _subparsers(build_parser(name))[name]._actions:
            if action.type in (int, float) and action.option_strings:
                out.append((name, action.option_strings[-1]))
    out += [("qemu", a.option_strings[-1]) for a in qemu_parser()._actions if a.type in (int, float)]
    return out


NUMERIC_OPTIONS = _numeric_options()
NON_ASCII_DIGITS = [chr(c) for c in range(sys.maxunicode + 1)
                    if unicodedata.category(chr(c)) == "Nd" and not chr(c).isascii()]
UNICODE_NUMBERS = st.tuples(st.text(st.sampled_from("0123456789"), max_size=2),
                            st.text(st.sampled_from(NON_ASCII_DIGITS), min_size=1, max_size=3),
                            st.text(st.sampled_from("0123456789"), max_size=2)).map("".join)


def test_every_numeric_option_is_covered() -> None:
    assert {("run", "--smp"), ("run", "--seed"), ("run", "--deadline"), ("sweep", "--jobs"), ("matrix", "--jobs"),
            ("explore", "--max-steps"), ("analyze", "--threshold"), ("qemu", "--seed"),
            ("qemu", "--watchdog")} <= set(NUMERIC_OPTIONS)


@HYPOTHESIS
@given(option=st.sampled_from(NUMERIC_OPTIONS), number=UNICODE_NUMBERS)
def test_unicode_digits_in_any_numeric_option(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                              option: tuple[str, str], number: str) -> None:
    command, flag = option
    refused_here(capsys, tmp_path, [command, flag, number], "invalid")


@HYPOTHESIS
@given(number=UNICODE_NUMBERS | st.sampled_from(["²", "³", "¹²", "½", "1_0", " 2", "2 ", "0x2", "9" * 5000]),
       where=st.sampled_from(["{}", "2,maxcpus={}", "sockets=1,cores={}"]))
def test_unicode_digits_in_qemu_smp(capsys: pytest.CaptureFixture[str], tmp_path: Path, number: str,
                                    where: str) -> None:
    smp = where.format(number)
    refused_here(capsys, tmp_path, ["run", "--quiet", "--qemu", f"-smp {shlex.quote(smp)}"],
                 "is not a positive number")
    refused_here(capsys, tmp_path, ["qemu", "-M", "pseries", "-smp", smp], "is not a positive number")


@pytest.mark.parametrize("argv,needle", [
    (["run", "--smp", "²"], "invalid int value"),
    (["run", "--smp", "٣"], "invalid int value"),  # int("٣") == 3: refused all the same
    (["run", "--deadline", "inf"], "invalid float value"),
    (["sweep", "--seeds", "٣:٥"], "in digits 0-9"),
    (["irq", "--lpcr", "٣"], "is not a hexadecimal number"),
    (["qemu", "-M", "pseries", "-smp", "²"], "is not a positive number"),
    (["qemu", "--seed", "٣", "-M", "pseries"], "invalid int value"),
])
def test_unicode_digits_as_a_process(tmp_path: Path, argv: list[str], needle: str) -> None:
    refused(tmp_path, argv, needle)


def _no_such_time() -> st.SearchStrategy[str]:
    """ISO 8601 stamps, in QEMU's format, of times that do not exist."""
    def stamp(y: int, mo: int, d: int, h: int, mi: int, s: int) -> str:
        return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    ok = {"y": st.integers(1970, 2100), "mo": st.integers(1, 12), "d": st.integers(1, 28), "h": st.integers(0, 23),
          "mi": st.integers(0, 59), "s": st.integers(0, 59)}
    bad = {"y": st.just(0), "mo": st.sampled_from([0, *range(13, 100)]), "d": st.sampled_from([0, *range(32, 100)]),
           "h": st.integers(24, 99), "mi": st.integers(60, 99), "s": st.integers(60, 99)}
    feb = st.builds(stamp, st.sampled_from([2023, 2025, 1900, 2100]), st.just(2), st.sampled_from([29, 30, 31]),
                    ok["h"], ok["mi"], ok["s"])
    one_bad = st.sampled_from(sorted(bad)).flatmap(
        lambda k: st.builds(stamp, **{f: (bad if f == k else ok)[f] for f in ok}))
    months = st.builds(stamp, ok["y"], st.sampled_from([4, 6, 9, 11]), st.just(31), ok["h"], ok["mi"], ok["s"])
    return one_bad | feb | months


LINE = "Z qemu_mutex_lock waiting on mutex 0x1 (../system/cpus.c:{})\n"


@HYPOTHESIS
@given(stamp=_no_such_time())
def test_a_trace_time_that_does_not_exist_is_a_corrupt_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                            stamp: str) -> None:
    trace = tmp_path / "trace-42.log"
    trace.write_text("".join(f"2025-02-28T10:00:0{i}.000001" + LINE.format(i) for i in range(4))
                     + f"{stamp}.000001" + LINE.format(9))
    assert main(["analyze", str(trace), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["corrupt_count"] == 1 and summary["events"] == 4
    trace.write_text(f"{stamp}.000001" + LINE.format(9))  # nothing else: not a trace at all
    refused_here(capsys, tmp_path, ["analyze", str(trace)], str(trace))


@pytest.mark.parametrize("line", [
    "9" * 5000 + "@1700000000.000001:qemu_mutex_lock waiting on mutex 0x1 (a.c:1)\n",  # TID
    "42@" + "9" * 5000 + ".000001:qemu_mutex_lock waiting on mutex 0x1 (a.c:1)\n",  # seconds
    "42@1700000000." + "9" * 5000 + ":qemu_mutex_lock waiting on mutex 0x1 (a.c:1)\n",
    "٤٢@1700000000.000001:qemu_mutex_lock waiting on mutex 0x1 (a.c:1)\n",  # Unicode digits
    "0000-01-01T00:00:00.000001Z qemu_mutex_lock waiting on mutex 0x1 (a.c:1)\n",
    "2025-02-30T00:00:00.000001Z qemu_mutex_lock waiting on mutex 0x1 (a.c:1)\n",
])
def test_trace_numbers_python_cannot_read(tmp_path: Path, line: str) -> None:
    good = "".join(f"42@170000000{i}.000001:qemu_mutex_lock waiting on mutex 0x1 (a.c:{i})\n" for i in range(3))
    good_iso = "".join(f"2025-01-01T00:00:0{i}.000001Z qemu_mutex_lock waiting on mutex 0x1 (a.c:{i})\n"
                       for i in range(3))
    trace = tmp_path / "trace-42.log"
    trace.write_text((good_iso if "T" in line[:20] else good) + line)
    proc = subprocess.run([*VCPU_SCHED, "analyze", str(trace), "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["corrupt_count"] == 1
    trace.write_text(line)
    refused(tmp_path, ["analyze", "trace-42.log"], "trace-42.log")


@pytest.mark.parametrize("where", ["header", "line"])
@pytest.mark.parametrize("deep", ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000,
                                  "9" * 5000])
def test_json_a_log_line_python_cannot_read(tmp_path: Path, a_log: bytes, where: str, deep: str) -> None:
    lines = a_log.decode().splitlines(keepends=True)
    bad = '{"event": "vcpu_kick", "t_ns": 1, "cpu": ' + deep + "}\n"
    log = tmp_path / "run.jsonl"
    if where == "header":
        log.write_text(bad.replace('"vcpu_kick"', '"run_start"') + "".join(lines[1:]))
        refused(tmp_path, ["analyze", "run.jsonl"], "not a vcpu_sched event log")
    else:
        log.write_text(lines[0] + bad + "".join(lines[1:]))
        proc = subprocess.run([*VCPU_SCHED, "analyze", "run.jsonl", "--json"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert json.loads(proc.stdout)["corrupt_lines"] == [2]


@pytest.mark.parametrize("seeds,needle", [
    ("0:1208925819614629174706176", "a seed is at most"),  # 2**80
    ("1208925819614629174706176", "a seed is at most"),
    ("9223372036854775807:9223372036854775809", "a seed is at most"),
    ("0:1000000001", "more than 1,000,000,000 seeds"),
    ("5:5", "an empty range"),
    ("-1:3", "in digits 0-9"),
    ("0:" + "9" * 5000, "expected A:B"),
])
def test_seed_ranges_beyond_what_a_sweep_can_run(tmp_path: Path, seeds: str, needle: str) -> None:
    refused(tmp_path, ["sweep", f"--seeds={seeds}", "--db", "seeds.jsonl"], needle)


@HYPOTHESIS
@given(start=st.integers(0, 2**90), length=st.integers(1, 2**90))
def test_any_seed_range_is_run_or_refused_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      start: int, length: int) -> None:
    if start + length - 1 <= sweep_module.MAX_SEED and length <= sweep_module.MAX_SEEDS:
        assert sweep_module.parse_seeds(f"{start}:{start + length}") == range(start, start + length)
    else:
        refused_here(capsys, tmp_path, ["sweep", "--seeds", f"{start}:{start + length}", "--no-db"], "--seeds")


LATIN1 = b"caf\xe9"  # "café" in latin-1: not UTF-8, so Python holds it as a lone surrogate


def test_a_latin1_file_name_under_a_strict_utf8_stdout(tmp_path: Path, a_log: bytes) -> None:
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    os.fsencode(str(tmp_path))  # the directory's own name is UTF-8
    (tmp_path / os.fsdecode(LATIN1 + b".jsonl")).write_bytes(a_log)
    (tmp_path / os.fsdecode(LATIN1 + b".toml")).write_bytes(SCENARIO.read_bytes())
    proc = subprocess.run([*VCPU_SCHED, "analyze", LATIN1 + b".jsonl"], cwd=tmp_path, capture_output=True,
                          timeout=120, env={**os.environ, **strict})
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
    assert b"caf\\udce9.jsonl" in proc.stdout
    refused(tmp_path, ["run", LATIN1 + b".toml", "--quiet", "--log", LATIN1 + b".toml"], "is the input file",
            env=strict)
    refused(tmp_path, ["analyze", LATIN1 + b".nope"], "caf\\udce9.nope", env=strict)


def test_a_file_name_with_a_newline_is_still_one_line(tmp_path: Path) -> None:
    refused(tmp_path, ["run", "a\nb.toml"], "a\\nb.toml")


# Item 5: a FIFO (or a directory, a device) as an input or as the seed database: refused at once.
@pytest.mark.parametrize("argv", [
    ["analyze", "f.jsonl"],
    ["analyze", "--format", "qemu-trace", "f.jsonl"],
    ["analyze", "--format", "vcpu-sched", "f.jsonl"],
    ["analyze", "trace-1.log", "f.jsonl"],
    ["run", "f.toml"],
    ["run", "ff", "--scenarios", "dir"],
    ["run", "--replay", "f.schedule.json"],
    ["sweep", "--seeds", "0:2", "--db", "f.jsonl"],
    ["qemu", "--scenario", "f.toml", *QEMU_LINE],
    ["matrix", "f.toml"],
])
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, argv: list[str]) -> None:
    for name in ("f.jsonl", "f.toml", "f.schedule.json"):
        os.mkfifo(tmp_path / name)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "dir" / "ff.toml")
    (tmp_path / "trace-1.log").write_text("2025-01-01T00:00:00.000001Z qemu_mutex_lock waiting on mutex 0x1 (a.c:1)\n")
    refused(tmp_path, argv, "is a FIFO (named pipe), not a regular file")


@pytest.mark.parametrize("argv,needle", [
    (["analyze", "."], "is a directory"),
    (["analyze", "/dev/null"], "is a device"),
    (["run", "/dev/null"], "is a device"),
    (["sweep", "--seeds", "0:2", "--db", "/dev/null"], "is a device"),
])
def test_other_inputs_that_are_not_regular_files(tmp_path: Path, argv: list[str], needle: str) -> None:
    refused(tmp_path, argv, needle)


# Item 6: a scenario file, --set and the options refuse the same things.
SCENARIO_HEAD = 'description = "d"\nqemu = "q"\n[settings]\n'


@pytest.mark.parametrize("settings_text,needle", [
    ('engine = "threads"\nclock = "virtual"\n', "the threads engine runs in real time"),
    ('engine = "explore"\nclock = "real"\n', "the explore engine has no clock"),
    ('engine = "explore"\nclock = "virtual"\n', "the explore engine has no clock"),
    ("smp = 2\ncores = 2\ncrash_cpu = 2000\n", "crash_cpu=2000 is not a CPU of this machine"),
    ("smp = 2\ncores = 2\ncrash_cpu = 2\n", "crash_cpu=2 is not a CPU"),
    ("smp = 2\ncores = 2\nboot_cpus = 3\n", "boot_cpus=3 is more than smp=2"),
    ("smp = 2\ncores = 2\nkdump_cpus = 3\n", "kdump_cpus=3 is more than"),
])
def test_a_scenario_file_refuses_what_the_command_line_refuses(tmp_path: Path, settings_text: str,
                                                                 needle: str) -> None:
    (tmp_path / "x.toml").write_text(SCENARIO_HEAD + settings_text)
    refused(tmp_path, ["run", "x.toml", "--quiet"], needle)
    sets = [w for line in settings_text.splitlines() for w in ("--set", line.replace(" ", ""))]
    refused(tmp_path, ["run", "--quiet", *sets], needle)


@pytest.mark.parametrize("argv,needle", [
    (["run", "--engine", "threads", "--clock", "virtual"], "the threads engine runs in real time"),
    (["run", "--engine", "threads", "--set", "clock=virtual"], "the threads engine runs in real time"),
    (["run", "--set", "engine=explore", "--clock", "real"], "the explore engine has no clock"),
    (["run", "--engine", "explore", "--clock", "real"], "the explore engine has no clock"),
    (["run", "{threads}", "--clock", "virtual"], "the threads engine runs in real time"),  # the file's engine
])
def test_engine_and_clock_from_any_source(tmp_path: Path, argv: list[str], needle: str) -> None:
    (tmp_path / "threads.toml").write_text(SCENARIO_HEAD + 'engine = "threads"\n')
    refused(tmp_path, [a.format(threads="threads.toml") for a in argv], needle)


@HYPOTHESIS
@given(smp=st.integers(1, 64), over=st.integers(0, 2047), key=st.sampled_from(["crash_cpu", "boot_cpus",
                                                                               "kdump_cpus"]))
def test_a_cpu_beyond_the_machine(capsys: pytest.CaptureFixture[str], tmp_path: Path, smp: int, over: int,
                                  key: str) -> None:
    value = min(smp + over + (0 if key == "crash_cpu" else 1), 2047)  # crash_cpu counts from 0: smp is out
    refused_here(capsys, tmp_path, ["run", "--quiet", "--smp", str(smp), "--set", f"{key}={value}"], key)


def test_the_shipped_scenarios_still_load() -> None:
    from vcpu_sched.scenario import SCENARIO_DIR, apply, load

    for path in sorted(SCENARIO_DIR.glob("*.toml")):
        scenario = load(str(path))
        for expectation in scenario.expect:
            apply(scenario.settings, expectation.variant, str(path))


# Item 9: modes, --jobs, --plot without matplotlib, a one-line file of a gigabyte's kind, Dask's port.
def test_an_output_keeps_the_umask_mode_or_its_own(tmp_path: Path, a_log: bytes) -> None:
    (tmp_path / "run.jsonl").write_bytes(a_log)
    for name, umask, existing, expected in (("new.json", 0o027, None, 0o640), ("new2.json", 0o002, None, 0o664),
                                            ("old.json", 0o077, 0o644, 0o644), ("old2.json", 0o022, 0o600, 0o600)):
        if existing is not None:
            (tmp_path / name).write_text("{}")
            (tmp_path / name).chmod(existing)
        proc = subprocess.run([*VCPU_SCHED, "analyze", "run.jsonl", "--perfetto", name], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, umask=umask)
        assert proc.returncode == 0, proc.stderr
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


@pytest.mark.parametrize("argv", [["sweep", "--seeds", "0:2", "--no-db", "--jobs", "257"],
                                  ["matrix", "--jobs", "100000"], ["sweep", "--seeds", "0:2", "--jobs", "0"]])
def test_jobs_has_an_upper_bound(tmp_path: Path, argv: list[str]) -> None:
    refused(tmp_path, argv, "--jobs")


def test_a_pool_is_never_larger_than_its_work(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int | None] = []
    real_pool = sweep_module.local_pool

    def pool(jobs: int | None) -> Any:
        sizes.append(jobs)
        return real_pool(jobs)

    monkeypatch.setattr(sweep_module, "local_pool", pool)
    from vcpu_sched.scenario import load

    settings_ = load("spapr-rtas-stopped").settings
    summary = sweep_module.sweep("spapr-rtas-stopped", settings_, settings_, range(2), None, None, jobs=200, batch=1,
                                 progress=False)
    assert summary["runs"] == 2 and sizes == [2]


def test_plot_without_matplotlib_fails_before_the_analysis(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "big.jsonl").write_text("not a log\n")  # analysed first, this would be the error
    refused(tmp_path / "work", ["analyze", "big.jsonl", "--plot", "out.png"], "--plot needs matplotlib",
            env={"PYTHONPATH": str(blocker)})


def _max_rss_kib(argv: list[str], cwd: Path) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run the command from a fresh parent, so that RUSAGE_CHILDREN is its peak alone."""
    probe = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) + '\\n' + p.stderr); "
             "sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", probe, *VCPU_SCHED, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    return int(proc.stdout.splitlines()[0]), proc


@pytest.mark.parametrize("first", [b"{", b"2025-01-01T00:00:00.000001Z qemu_mutex_lock "])
def test_a_file_of_one_huge_line_is_refused_without_holding_it(tmp_path: Path, first: bytes) -> None:
    size = 16 * MAX_LINE + 7  # 16 M characters; what matters is that the peak does not grow with it
    with open(tmp_path / "one.log", "wb") as out:
        out.write(first)
        out.write(b"a" * (size - len(first)))
    baseline, _ = _max_rss_kib(["analyze", "--help"], tmp_path)
    peak, proc = _max_rss_kib(["analyze", "one.log"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout, proc.stdout
    assert (peak - baseline) * 1024 < 6 * MAX_LINE * 4, (baseline, peak)  # a few bounded lines, never the file


def test_a_huge_line_among_good_ones_is_one_corrupt_line(tmp_path: Path, a_log: bytes) -> None:
    lines = a_log.decode().splitlines(keepends=True)
    (tmp_path / "run.jsonl").write_text(lines[0] + "x" * (MAX_LINE + 10) + "\n" + "".join(lines[1:]))
    proc = subprocess.run([*VCPU_SCHED, "analyze", "run.jsonl", "--json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["corrupt_lines"] == [2], proc.stderr


def test_a_dask_scheduler_with_port_8787_taken() -> None:
    """distributed's scheduler serves HTTP (health, metrics) even without a dashboard, on 8787 by default:
    `dashboard_address=None` does not move it, so a test cluster must name a free port of its own."""
    distributed = pytest.importorskip("distributed")
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 8787))
    except OSError:
        pytest.skip("port 8787 is in use: the case this test makes")
    holder.listen(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "Port 8787 is already in use" is a UserWarning
            with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                          dashboard_address=None,
                                          scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster:
                assert cluster.scheduler is not None
                assert cluster.scheduler.http_server is not None
    finally:
        holder.close()

