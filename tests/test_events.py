"""The structured log: its shape, its size, selection, and what an interrupted run leaves behind."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import read_events, variant
from vcpu_sched import runner
from vcpu_sched.config import RunSettings
from vcpu_sched.events import EventLog, TraceFilter


def test_seed_case_log_shape(seed_settings: RunSettings, tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    result = runner.run(seed_settings, log)
    raw = log.read_text().splitlines()
    events = [json.loads(line) for line in raw]
    assert events[0]["event"] == "run_start" and events[0]["settings"]["seed"] == seed_settings.seed
    assert events[-1]["event"] == "run_end" and events[-1]["verdict"] == result.verdict == "lockup"
    assert all(line == json.dumps(json.loads(line), sort_keys=True) for line in raw), "keys sorted"
    assert all("t_ns" in e for e in events)
    names = {e["event"] for e in events}
    for name in ("kvm_cpu_exec", "kvm_run_exit", "qemu_mutex_locked", "qemu_mutex_unlock", "ppc_maybe_interrupt",
                 "spapr_set_all_lpcrs", "kvm_get_registers", "kvm_put_registers", "watchdog_fired"):
        assert name in names, name
    gets = [e for e in events if e["event"] == "kvm_get_registers" and e["cpu"] == result.lockup.bql_holder]
    assert any(g["lpcr_before"] != g["lpcr"] and g["psscr_ec_before"] and not g["psscr_ec"] for g in gets)
    assert log.stat().st_size < 5_000_000


def test_spinning_vcpu_does_not_flood_without_fast_forward(seed_settings: RunSettings, tmp_path: Path) -> None:
    log = tmp_path / "spin.jsonl"
    result = runner.run(variant(seed_settings, smp=2, cores=2, watchdog_s=0.5, fast_forward=False), log)
    events = read_events(log)
    assert result.lockup is not None and result.lockup.holder_iterations > 490_000
    exec_lines = [e for e in events if e["event"] == "kvm_cpu_exec" and e["cpu"] == 1]
    summaries = [e for e in events if e["event"] == "trace_suppressed" and e["suppressed_event"] == "kvm_cpu_exec"]
    assert len(exec_lines) <= 256, "at most one burst per guest-second window (the run lasts < 1 s)"
    assert sum(s["count"] for s in summaries) + len(exec_lines) >= 490_000, "nothing is lost, only summarised"


def test_trace_patterns_select_and_exclude() -> None:
    only_kvm = TraceFilter(["kvm_*"])
    assert only_kvm("kvm_cpu_exec") and not only_kvm("rtas_call") and only_kvm("run_end")
    no_bql = TraceFilter(["-qemu_mutex_*"])
    assert no_bql("rtas_call") and not no_bql("qemu_mutex_locked") and no_bql("watchdog_fired")


def test_event_log_drops_nothing_before_end_and_everything_after() -> None:
    stream = io.StringIO()
    log = EventLog(stream, burst=2, window_ns=1000)
    for t in range(5):
        log("qemu_cpu_kick", t, {"cpu": 0})
    log.end(10, {"verdict": "booted"})
    log("vm_start", 11, {})
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["qemu_cpu_kick", "qemu_cpu_kick", "trace_suppressed", "run_end"]
    assert events[2]["count"] == 3


def _default_sigint() -> None:
    """A shell that starts jobs in the background makes them ignore SIGINT; a user's terminal does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


ENGINE_ARGS = {"trio": ["--fix", "quiesced", "--clock", "real"], "threads": ["--engine", "threads", "--watchdog", "30"]}


@pytest.mark.parametrize("engine", ENGINE_ARGS)
@pytest.mark.parametrize("sig,reason", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "killed")])
def test_interrupted_run_leaves_a_complete_log(tmp_path: Path, sig: signal.Signals, reason: str, engine: str) -> None:
    log = tmp_path / "cut.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "vcpu_sched", "run", *ENGINE_ARGS[engine],
                             "--quiet", "--log", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 30
        while "Booting Linux" not in (log.read_text() if log.exists() else ""):  # wait for the run to be midway
            assert proc.poll() is None and time.monotonic() < deadline, "the run never got going"
            time.sleep(0.01)
        proc.send_signal(sig)
        status = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert status == (130 if sig == signal.SIGINT else 143)
    events = read_events(log)
    assert events[0]["event"] == "run_start"
    assert events[-1]["event"] == "run_end" and reason in events[-1]["reason"]
    assert events[-1]["verdict"] is None


def test_same_seed_byte_identical_logs_other_seed_other_schedule(seed_settings: RunSettings, tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.jsonl" for i in range(3)]
    verdicts = [runner.run(variant(seed_settings, seed=seed), path).verdict
                for seed, path in zip((5, 5, 6), paths, strict=True)]
    assert verdicts == ["lockup"] * 3
    first, again, other = (p.read_bytes() for p in paths)
    assert first == again
    assert first != other
