"""`vcpu-sched analyze LOG [--json] [--perfetto OUT.json] [--plot OUT.png]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import BadInput
from ..files import atomic_output, atomic_write, check_output
from .logread import read_log
from .perfetto import chrome_trace
from .summary import summarise, summary_text
from .timeline import build

PLOT_FORMATS = (".png", ".svg", ".pdf")


def analyze_main(args: argparse.Namespace) -> int:
    # Outputs are checked before the log is read: a bad name costs nothing, and never the log itself.
    if args.perfetto:
        check_output("--perfetto", args.perfetto, inputs=(args.log,))
    if args.plot:
        check_output("--plot", args.plot, inputs=(args.log,))
        if Path(args.plot).suffix.lower() not in PLOT_FORMATS:
            raise BadInput(f"--plot {args.plot}: name the picture's format with its suffix "
                           f"({', '.join(PLOT_FORMATS)})")
    log = read_log(args.log)
    timeline = build(log)
    summary = summarise(log, timeline)
    if args.perfetto:
        with atomic_output("--perfetto", args.perfetto) as out:
            json.dump(chrome_trace(timeline), out)
    if args.plot:
        from .plot import plot

        st = log.settings
        title = (f"{st.get('scenario')} smp={st.get('smp')} accel={st.get('accel')} cpu={st.get('cpu')} "
                 f"fix={st.get('fix')}: {summary['verdict'] or 'truncated'}")
        atomic_write("--plot", args.plot, lambda path: plot(timeline, path, title))
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(summary_text(summary))
    return 0
