"""Signals end every command at once and leave nothing behind: no worker process, no thread, no lost log."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest


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
