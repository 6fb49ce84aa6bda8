"""`vcpu-sched analyze LOG... [--format F] [--json] [--perfetto OUT.json] [--plot OUT.png]`.

LOG is a vcpu_sched event log (JSON lines, `run --log`) or a QEMU trace log: one file, or one file per
thread (`-d tid -D trace-%d.log`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..files import atomic_output, atomic_write, check_output, note_input, open_input
from .progress import reporting

PLOT_FORMATS = (".png", ".svg", ".pdf")


def _format_of(path: str) -> str:
    """`vcpu-sched` when the first non-blank character is `{` (a JSON line), else `qemu-trace`."""
    try:
        with open_input(path, path) as stream:
            head = stream.read(4096)
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}") from None
    return "vcpu-sched" if head.lstrip()[:1] == b"{" else "qemu-trace"


def analyze_main(args: argparse.Namespace) -> int:
    # Outputs are checked before the log is read: a bad name costs nothing, and never the log itself.
    for path in args.logs:
        note_input(path)
    if args.perfetto:
        check_output("--perfetto", args.perfetto, inputs=tuple(args.logs))
    if args.plot:
        check_output("--plot", args.plot, inputs=tuple(args.logs))
        if Path(args.plot).suffix.lower() not in PLOT_FORMATS:
            raise BadInput(f"--plot {args.plot}: name the picture's format with its suffix "
                           f"({', '.join(PLOT_FORMATS)})")
        from .plot import import_pyplot

        import_pyplot()  # no matplotlib: say so before the analysis, not after it
    if not (math.isfinite(args.threshold) and args.threshold > 0):
        raise BadInput(f"--threshold {args.threshold}: must be a positive number of seconds")
    fmt = args.format if args.format != "auto" else _format_of(args.logs[0])
    if fmt == "qemu-trace":
        return _qemu_trace(args)
    if len(args.logs) > 1:
        raise BadInput("several files are analysed together only as QEMU trace logs (one per thread); "
                       "give one vcpu_sched event log")
    from .logread import read_log
    from .perfetto import chrome_trace
    from .summary import summarise, summary_text
    from .timeline import build

    with reporting(args.logs, passes=2):  # open_log's check, then build's
        log = read_log(args.logs[0])
        timeline = build(log, keep=bool(args.perfetto or args.plot))
        summary = summarise(log, timeline)
    if args.perfetto:
        with atomic_output("--perfetto", args.perfetto) as out:
            json.dump(chrome_trace(timeline), out)
    if args.plot:
        st = log.settings
        _plot(args.plot, timeline, f"{st.get('scenario')} smp={st.get('smp')} accel={st.get('accel')} "
                                   f"cpu={st.get('cpu')} fix={st.get('fix')}: {summary['verdict'] or 'truncated'}")
    print(json.dumps(summary, sort_keys=True) if args.json else summary_text(summary))
    return 0


def _plot(path: str, timeline: Any, title: str) -> None:
    from .plot import plot

    atomic_write("--plot", path, lambda out: plot(timeline, out, title))


def _qemu_trace(args: argparse.Namespace) -> int:
    from .qemu_summary import analyse, summary_text
    from .qemu_trace import TraceFiles

    files = TraceFiles(list(args.logs))
    with reporting(list(args.logs), passes=2):  # survey, then the holds
        summary = analyse(files, args.threshold, timeline=bool(args.perfetto or args.plot))
    if summary["events"] == 0:
        raise BadInput(f"{', '.join(args.logs)}: no trace line could be read "
                       f"({summary['corrupt_count']} corrupt, {summary['other_lines']} other lines)")
    timeline = summary.pop("_timeline", None)
    if args.perfetto:
        from .perfetto import chrome_trace

        with atomic_output("--perfetto", args.perfetto) as out:
            json.dump(chrome_trace(timeline, "qemu-system-ppc64 (QEMU trace)", "trace timestamps, from the first line"),
                      out)
    if args.plot:
        lock = summary["lockup"]
        verdict = f"BQL held by {lock['holder']} ({lock['holder_state']})" if lock else "no lockup"
        _plot(args.plot, timeline, f"QEMU trace {Path(args.logs[0]).name}: {verdict}")
    print(json.dumps(summary, sort_keys=True) if args.json else summary_text(summary))
    return 0
