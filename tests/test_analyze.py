"""`vcpu-sched analyze`: the same story as the watchdog, from the log alone; robust to damaged logs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import variant
from vcpu_sched import runner
from vcpu_sched.analyze.logread import parse_lines, read_log
from vcpu_sched.analyze.perfetto import chrome_trace
from vcpu_sched.analyze.summary import summarise
from vcpu_sched.analyze.timeline import build
from vcpu_sched.cli import main
from vcpu_sched.config import RunSettings
from vcpu_sched.scenario import load


@pytest.fixture(scope="module")
def lockup_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("logs") / "lockup.jsonl"
    result = runner.run(load("spapr-rtas-stopped").settings, path)
    return path, result


@pytest.fixture(scope="module")
def booted_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "booted.jsonl"
    runner.run(variant(load("spapr-rtas-stopped").settings, fix="quiesced"), path)
    return path


def test_analysis_names_the_watchdogs_stuck_cpu_holder_and_chain(lockup_log: tuple[Path, object]) -> None:
    path, result = lockup_log
    s = summarise(read_log(path))
    sig = s["lockup_signature"]
    assert s["verdict"] == "lockup" and s["complete"]
    assert sig["stuck_cpu"] == result.lockup.stuck_cpu == 0  # type: ignore[attr-defined]
    assert sig["holder_cpu"] == result.lockup.bql_holder  # type: ignore[attr-defined]
    assert s["agrees_with_watchdog"] is True
    assert sig["holder_iterations"] == pytest.approx(result.lockup.holder_iterations, rel=1e-3)  # type: ignore[attr-defined]
    chain = " ".join(sig["chain"])
    for link in ("PPC_INTERRUPT_DECR) has been pending", "overwrote QEMU's LPCR", "PSSCR[EC] back as 0",
                 "CPU_INTERRUPT_HARD", "returns EXCP_HLT at once", "never sleeps", "CPU 0/KVM waits for BQL",
                 "do_lpcr_sync"):
        assert link in chain, link
    hold = s["longest_hold"]
    assert hold["thread"] == sig["holder"] and hold["ongoing"]
    assert {w["thread"] for w in hold["waiters"]} == {"CPU 0/KVM", "main"}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("overrides", [{}, {"smp": 4, "cores": 4, "cpu": "POWER9"}, {"threads": 2, "cores": 16}])
def test_analyze_and_the_watchdog_tell_the_same_chain(seed: int, overrides: dict[str, object],
                                                      tmp_path: Path) -> None:
    """One explanation: the same code over the same events, so the same sentences (the loop count of the
    spinning thread is estimated from the log, so it may differ in the last digits)."""
    path = tmp_path / "run.jsonl"
    result = runner.run(variant(load("spapr-rtas-stopped").settings, seed=seed, watchdog_s=3.0, **overrides), path)
    assert result.lockup is not None
    sig = summarise(read_log(path))["lockup_signature"]

    def same(chain: list[str]) -> list[str]:
        return [re.sub(r"gone round [0-9,]+ times", "gone round N times", line) for line in chain]

    assert same(sig["chain"]) == same(result.lockup.chain)


@pytest.mark.parametrize(("scenario", "overrides", "verdict"), [
    # the reset race: main is left waiting in run_on_cpu when the invariant stops the run
    ("spapr-guest-reboot", {"stop_current_fix": False, "engine": "explore", "seed": 4}, "invariant"),
    # a run that did all it asks, ended while a thread still waited
    ("migration-pause-race", {}, "completed"),
])
def test_only_a_hang_has_a_lockup_signature(scenario: str, overrides: dict[str, object], verdict: str,
                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A thread blocked when a run of another verdict ends is no lockup: the summary says none."""
    path = tmp_path / "run.jsonl"
    runner.run(variant(load(scenario).settings, **overrides), path)
    s = summarise(read_log(path))
    assert s["verdict"] == verdict and s["lockup_signature"] is None
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"verdict: {verdict}" in out and "LOCKUP SIGNATURE" not in out
    if verdict == "invariant":
        assert "GUEST FAILURE: invariant" in out


def test_the_summary_alone_keeps_only_the_intervals_open_at_the_end(lockup_log: tuple[Path, object],
                                                                    booted_log: Path) -> None:
    """Without --perfetto or --plot the timeline keeps no interval but those still open (the signature's):
    the summary is the same."""
    for path in (lockup_log[0], booted_log):
        log = read_log(path)
        lean, full = build(log, keep=False), build(log)
        assert lean.intervals == [iv for iv in full.intervals if iv.open] and not lean.instants
        assert summarise(log, lean) == summarise(log, full)


def test_booted_log_has_no_signature_and_lists_rtas_answers(booted_log: Path) -> None:
    s = summarise(read_log(booted_log))
    assert s["verdict"] == "booted" and s["lockup_signature"] is None
    queries = [c for c in s["rtas"] if c["call"] == "query-cpu-stopped-state"]
    starts = [c for c in s["rtas"] if c["call"] == "start-cpu"]
    assert len(queries) == len(starts) == 31
    assert all(c["rets"] == [0, 0] for c in queries) and all(c["rets"] == [0] for c in starts)
    assert set(s["threads"]["CPU 5/KVM"]["exits"]) <= {"EINTR"}, "secondaries cede in the kernel: no hcall exits"
    nmi = [c for c in s["rtas"] if c["call"] == "ibm,nmi-register"]
    assert len(nmi) == 1 and nmi[0]["cpu"] == 0  # fwnmi_init, on the boot CPU
    assert s["threads"]["CPU 0/KVM"]["exits"]["H_RTAS"] == len(queries) + len(starts) + len(nmi)


def test_log_stays_small_however_long_the_watchdog(seed_settings: RunSettings, tmp_path: Path) -> None:
    sizes = []
    for watchdog in (2.0, 200.0):
        path = tmp_path / f"{watchdog}.jsonl"
        runner.run(variant(seed_settings, watchdog_s=watchdog, deadline_s=1000.0), path)
        sizes.append(path.stat().st_size)
    assert max(sizes) < 5_000_000
    assert sizes[1] < sizes[0] * 1.1


def test_truncated_and_corrupt_logs_are_read_and_reported(lockup_log: tuple[Path, object], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    lines = lockup_log[0].read_text().splitlines()
    damaged = lines[:300]
    damaged.insert(10, "this is not json")
    damaged.insert(20, '{"event": "x"}')
    damaged.append(lines[300][:25])  # a line cut in the middle by a kill
    path = tmp_path / "damaged.jsonl"
    path.write_text("\n".join(damaged))
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TRUNCATED: ends at line 303" in out
    assert "corrupt lines: 3 (line 11, 21, 303)" in out
    assert main(["analyze", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["complete"] is False and data["corrupt_lines"] == [11, 21, 303]


NOT_LOGS = [b"", b"hello\nworld\n", b"\x00\xff\xfe binary", b'{"event": "kvm_cpu_exec", "t_ns": 1}\n']


@pytest.mark.parametrize("content", NOT_LOGS)
def test_a_file_that_is_not_a_log_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               content: bytes) -> None:
    path = tmp_path / "not-a-log"
    path.write_bytes(content)
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert "vcpu_sched event log" in err and len(err.strip().splitlines()) == 1
    assert main(["analyze", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _check_nesting(trace: dict) -> int:
    slices: dict[int, list[tuple[int, int]]] = {}
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            assert e["dur"] >= 0 and e["ts"] >= 0
            start = round(e["ts"] * 1000)  # back to integer nanoseconds
            slices.setdefault(e["tid"], []).append((start, start + round(e["dur"] * 1000)))
    for spans in slices.values():
        stack: list[int] = []
        for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= start:
                stack.pop()
            assert not stack or end <= stack[-1], "a slice crosses its parent's end"
            stack.append(end)
    return sum(len(s) for s in slices.values())


def test_perfetto_trace_is_valid_json_with_nested_slices(lockup_log: tuple[Path, object], booted_log: Path,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for log in (lockup_log[0], booted_log):
        out = tmp_path / "trace.json"
        assert main(["analyze", str(log), "--perfetto", str(out)]) == 0
        trace = json.loads(out.read_text())
        assert _check_nesting(trace) > 50
        names = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
        assert {"main", "CPU 0/KVM", "CPU 31/KVM"} <= names
        kinds = {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"}
        assert {"BQL held", "KVM_RUN", "halt sleep"} <= kinds
        assert any(e["ph"] == "C" and e["name"] == "BQL waiters" for e in trace["traceEvents"])
    capsys.readouterr()
    held = [e for e in json.loads(out.read_text())["traceEvents"] if e["ph"] == "X" and e["name"].startswith("RTAS")]
    assert held, "RTAS calls are nested slices"
    lockup_trace = chrome_trace(build(read_log(lockup_log[0])))
    longest = max((e for e in lockup_trace["traceEvents"] if e["ph"] == "X" and e["name"] == "BQL held"),
                  key=lambda e: e["dur"])
    assert longest["dur"] == pytest.approx(20e6, rel=1e-3), "microseconds"


def test_plot_draws_the_hang(lockup_log: tuple[Path, object], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "hang.png"
    assert main(["analyze", str(lockup_log[0]), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_every_event_type_round_trips(lockup_log: tuple[Path, object], booted_log: Path, tmp_path: Path,
                                     seed_settings: RunSettings) -> None:
    tcg = tmp_path / "tcg.jsonl"
    runner.run(variant(seed_settings, accel="tcg"), tcg)
    names = set()
    for path in (lockup_log[0], booted_log, tcg):
        raw = path.read_text().splitlines()
        log = parse_lines(raw)
        events = list(log.events())
        assert not log.corrupt_lines and log.count == len(events) == len(raw)
        assert [json.dumps(e, sort_keys=True) for e in events] == raw
        names |= {e["event"] for e in events}
    assert len(names) >= 25


def test_a_killed_run_is_reported_as_truncated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "vcpu_sched", "run", "--fix", "quiesced", "--clock", "real",
                             "--quiet", "--log", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "smp: Bringing up" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert main(["analyze", str(log)]) == 0
    assert "TRUNCATED" in capsys.readouterr().out


EVENT_NAMES = ["qemu_mutex_lock", "qemu_mutex_locked", "qemu_mutex_unlock", "qemu_cond_wait", "qemu_cond_woken",
               "kvm_vcpu_ioctl_run", "kvm_run_exit", "rtas_call", "rtas_return", "kvm_cpu_exec", "qemu_cpu_kick",
               "ppc_maybe_interrupt", "vcpu_spin_fast_forward", "vcpu_spin_resumed", "trace_suppressed",
               "kvm_get_registers", "cpu_ppc_tb_reset", "qemu_wait_io_event_sleep", "spapr_cpu_set_entry_state",
               "watchdog_fired", "run_end"]
_event = st.fixed_dictionaries(
    {"event": st.sampled_from(EVENT_NAMES), "t_ns": st.integers(0, 10**10)},
    optional={"cpu": st.one_of(st.integers(0, 3), st.just("main"), st.none()),
              "thread": st.sampled_from(["main", "CPU 0/KVM", "CPU 1/KVM", "CPU 9/KVM"]),
              "owner": st.one_of(st.none(), st.just("CPU 1/KVM")), "hard": st.booleans(),
              "hard_before": st.booleans(), "count": st.integers(0, 10**6),
              "suppressed_event": st.sampled_from(["kvm_cpu_exec", "qemu_cpu_kick"]),
              "skipped_iterations": st.integers(0, 10**6), "ret": st.sampled_from(["EXCP_HLT", None]),
              "verdict": st.sampled_from(["lockup", "booted", None]),
              "lockup": st.one_of(st.none(), st.fixed_dictionaries({"stuck_cpu": st.integers(0, 3),
                                                                    "bql_holder": st.integers(0, 3)}))})


@settings(max_examples=200, deadline=None)
@given(events=st.lists(_event, max_size=60), smp=st.integers(1, 4))
def test_no_sequence_of_well_formed_events_crashes_the_analyser(events: list[dict], smp: int) -> None:
    header = {"event": "run_start", "t_ns": 0, "settings": {"smp": smp, "accel": "kvm", "loop_cost_ns": 1000}}
    lines = [json.dumps(e, sort_keys=True) for e in [header, *sorted(events, key=lambda e: e["t_ns"])]]
    log = parse_lines(lines)
    summarise(log)
    _check_nesting(chrome_trace(build(log)))


def test_a_log_written_on_between_the_two_passes_is_checked_past_what_the_first_pass_read(booted_log: Path,
                                                                                           tmp_path: Path) -> None:
    """The second pass does not check again the lines the first one did while the file is as it was; lines
    written since (a run still logging) are checked as the first pass would have, and a file changed
    otherwise is checked again from its first line."""
    path = tmp_path / "run.jsonl"
    path.write_bytes(booted_log.read_bytes())
    log = read_log(path)
    checked = list(log.events())
    assert len(checked) == log.count
    later = {"event": "qemu_cpu_kick", "t_ns": log.end_ns + 5, "cpu": 0, "by": "main"}
    with path.open("a") as out:
        out.write('not JSON\n{"event": "qemu_cpu_kick", "t_ns": 1, "cpu": 0, "by": 1}\n\n')  # corrupt: time runs back
        out.write(json.dumps(later) + "\n")
    assert list(log.events()) == [*checked, later]
    lines = booted_log.read_text().splitlines(keepends=True)
    bad = json.loads(lines[10])
    bad["cpu"] = 10**6  # no such vCPU: a corrupt line once it is checked
    path.write_text("".join([*lines[:10], json.dumps(bad) + "\n", *lines[11:]]))
    again = list(log.events())
    assert len(again) == len(checked) - 1 and again == list(read_log(path).events())
