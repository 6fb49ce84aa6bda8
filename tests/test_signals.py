"""Signals end every command at once and leave nothing behind: no worker process, no thread, no lost log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vcpu_sched import matrix
from vcpu_sched.analyze.logread import read_log
from vcpu_sched.analyze.summary import summarise
from vcpu_sched.errors import WorkerLost
from vcpu_sched.matrix import Row, _run_row


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_workers(proc: subprocess.Popen[str], count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 30
    parent = psutil.Process(proc.pid)
    while len(children := parent.children(recursive=True)) < count:
        assert proc.poll() is None and time.monotonic() < deadline, "the matrix never started its workers"
        time.sleep(0.05)
    return children


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_matrix_ends_its_workers_within_3_s(sig: signal.Signals, status: int) -> None:
    with subprocess.Popen([sys.executable, "-m", "vcpu_sched", "matrix", "--engine", "threads", "--jobs", "2"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          preexec_fn=_default_sigint) as proc:
        try:
            workers = _wait_for_workers(proc, 2)
            sent = time.monotonic()
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=10)
            _, alive = psutil.wait_procs(workers, timeout=max(0.1, 3 - (time.monotonic() - sent)))
            assert alive == [], "no worker outlives the matrix"
            assert time.monotonic() - sent < 3
            assert proc.returncode == status, err
            assert "Traceback" not in err and len(err.strip().splitlines()[-1:]) == 1
        finally:
            proc.kill()


def test_an_interrupted_real_clock_log_counts_the_spin_it_was_in(tmp_path: Path) -> None:
    """The log of a killed run ends at the guest time reached, so analyze credits the spin up to there."""
    log = tmp_path / "cut.jsonl"
    with subprocess.Popen([sys.executable, "-m", "vcpu_sched", "run", "--clock", "real", "--watchdog", "30",
                           "--quiet", "--log", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            deadline = time.monotonic() + 30
            while "vcpu_spin_fast_forward" not in (log.read_text() if log.exists() else ""):
                assert proc.poll() is None and time.monotonic() < deadline, "the run never began to spin"
                time.sleep(0.01)
            spin_from = time.monotonic()
            while time.monotonic() - spin_from < 0.3:  # let it spin for a while, in real time
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 143
        finally:
            proc.kill()
    summary = summarise(read_log(log))
    assert summary["reason"] == "killed (SIGTERM)"
    assert summary["threads"]["CPU 1/KVM"]["loop_iterations"] > 250_000, "0.3 s of 1 us turns, at least"


def _dies_on_the_first_row(row: Row) -> dict[str, object]:
    if row.label == "(as in the file)":
        os._exit(9)  # as the OOM killer would end it
    return _run_row(row)


def test_a_matrix_worker_that_dies_is_reported_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matrix, "_run_row", _dies_on_the_first_row)  # workers are forked: they see it too
    started = time.monotonic()
    with pytest.raises(WorkerLost, match="a worker process died"):
        matrix.run_matrix(["spapr-rtas-stopped"], jobs=2)
    assert time.monotonic() - started < 20


def test_vcpu_sched_qemu_takes_sigint_even_when_started_with_it_ignored(tmp_path: Path) -> None:
    # A shell without job control starts background commands with SIGINT ignored, and Python keeps an
    # inherited SIG_IGN; QEMU installs its own handler (os-posix.c), so `vcpu-sched qemu` must too.
    from tests.conftest import wait_for

    sock = tmp_path / "q.sock"
    proc = subprocess.Popen([sys.executable, "-m", "vcpu_sched", "qemu", "--log", str(tmp_path / "run.jsonl"),
                             "-M", "pseries,accel=kvm", "-smp", "4", "-cpu", "host", "-S", "-nographic",
                             "-qmp", f"unix:{sock},server=on,wait=off"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None, 60)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    end = read_log(tmp_path / "run.jsonl").end
    assert end is not None and "interrupted (Ctrl-C)" in str(end)
