"""`vcpu-sched analyze LOG [--json] [--perfetto OUT.json] [--plot OUT.png]`."""

from __future__ import annotations

import argparse
import json

from ..errors import BadInput
from .logread import read_log
from .perfetto import chrome_trace
from .summary import summarise, summary_text
from .timeline import build


def analyze_main(args: argparse.Namespace) -> int:
    log = read_log(args.log)
    timeline = build(log)
    summary = summarise(log, timeline)
    if args.perfetto:
        try:
            with open(args.perfetto, "w", encoding="utf-8") as out:
                json.dump(chrome_trace(timeline), out)
        except OSError as e:
            raise BadInput(f"--perfetto {args.perfetto}: {e.strerror}") from None
    if args.plot:
        from .plot import plot

        st = log.settings
        title = (f"{st.get('scenario')} smp={st.get('smp')} accel={st.get('accel')} cpu={st.get('cpu')} "
                 f"fix={st.get('fix')}: {summary['verdict'] or 'truncated'}")
        try:
            plot(timeline, args.plot, title)
        except OSError as e:
            raise BadInput(f"--plot {args.plot}: {e.strerror}") from None
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(summary_text(summary))
    return 0
