"""Progress of a long `analyze` on stderr (issue 25 item 9): on a terminal after a second, elsewhere only
after five seconds; stdout, the report, unchanged. Time is a fake clock here: no test waits."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import pytest

from vcpu_sched.analyze import progress
from vcpu_sched.analyze.qemu_summary import analyse
from vcpu_sched.analyze.qemu_trace import TraceFiles
from vcpu_sched.cli import main

TRACE = Path(__file__).parent / "data" / "qemu-7.2" / "healthy.trace"


class Clock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize("tty", [False, True])
def test_a_quick_analysis_prints_no_progress(tty: bool) -> None:
    out = io.StringIO()
    with progress.reporting([str(TRACE)], 2, stream=out, clock=Clock(0.0), tty=tty):
        analyse(TraceFiles([str(TRACE)]))
    assert out.getvalue() == ""


def test_a_slow_analysis_not_on_a_terminal_prints_plain_lines_after_five_seconds() -> None:
    out = io.StringIO()
    clock = Clock(5.0)  # every look at the clock finds five more seconds gone
    with progress.reporting([str(TRACE)], 2, stream=out, clock=clock, tty=False):
        analyse(TraceFiles([str(TRACE)]))
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith(f"analyze: {TRACE}: ") for line in lines)
    assert "\r" not in out.getvalue()
    # The first line comes once five seconds have gone (the clock reads 5 s at the start), then at most one
    # each five seconds; the shares only grow, and the last is the second pass's end.
    seconds = [int(line.rsplit(", ", 1)[1].removesuffix(" s")) for line in lines]
    assert seconds[0] >= 5 and all(b - a >= 5 for a, b in itertools.pairwise(seconds))
    shares = [int(line.split(": ")[2].split("%")[0]) for line in lines]
    assert shares == sorted(shares) and "100% (pass 2 of 2" in lines[-1]


def test_on_a_terminal_one_line_is_rewritten_then_erased() -> None:
    out = io.StringIO()
    with progress.reporting([str(TRACE)], 2, stream=out, clock=Clock(1.0), tty=True):
        analyse(TraceFiles([str(TRACE)]))
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") >= 2 and "pass 2 of 2" in text
    assert text.endswith("\r") and text.rsplit("\r", 2)[1].strip() == ""  # the last write blanks the line


def test_the_command_reports_on_stderr_and_leaves_stdout_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Both kinds of input, through `vcpu-sched analyze`: with no delay every pass is reported on stderr,
    and the report on stdout is the one a quick run prints."""
    log = tmp_path / "run.jsonl"
    assert main(["run", "--quiet", "--fix", "quiesced", "--log", str(log)]) == 0
    capsys.readouterr()
    for path in (log, TRACE):
        assert main(["analyze", str(path), "--json"]) == 0
        quiet = capsys.readouterr()
        assert quiet.err == ""
        monkeypatch.setattr(progress, "PIPE_DELAY_S", 0.0)
        monkeypatch.setattr(progress, "PIPE_EVERY_S", 0.0)
        assert main(["analyze", str(path), "--json"]) == 0
        shown = capsys.readouterr()
        monkeypatch.undo()
        assert json.loads(shown.out) == json.loads(quiet.out)
        assert f"analyze: {path}: 100% (pass 2 of 2" in shown.err.splitlines()[-1]
        assert any("pass 1 of 2" in line for line in shown.err.splitlines())
