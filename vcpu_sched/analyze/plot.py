"""`--plot OUT.png`: the run as a picture (matplotlib, an optional extra: pip install 'vcpu_sched[plot]').

One row per thread (main loop on top, then each vCPU). Bars: BQL held (red), BQL wait (orange), halt
sleep and other condition waits (light grey), KVM_RUN (green). Black ticks mark when a CPU was started
(start-cpu / entry state); a dashed line marks the watchdog. The left panel zooms on the busy start of
the run, the right one shows all of it, so a 20 s lockup after 50 ms of boot is readable at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadInput
from .timeline import Timeline

COLOURS = {"BQL held": "#d62728", "BQL wait": "#ff7f0e", "cond wait": "#c7c7c7", "KVM_RUN": "#2ca02c"}
NS = 1e9
MAX_HEIGHT_IN = 40.0


def import_pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BadInput("--plot needs matplotlib: pip install 'vcpu_sched[plot]' (or: pip install matplotlib)") from None
    return plt


def _zoom_end(timeline: Timeline) -> float:
    """Where the activity stops changing: the last interval that starts, plus a margin."""
    starts = [iv.start_ns for iv in timeline.intervals]
    last = max(starts, default=timeline.end_ns)
    return min(timeline.end_ns, last * 1.15 + 1_000_000) / NS


def _bars(timeline: Timeline, rows: dict[str, int], right_s: float) -> dict[str, list[list[tuple[float, float]]]]:
    """Rectangles per kind for an axis `right_s` wide, intervals closer than a pixel merged: the picture has
    at most a few thousand bars per row and kind, however long the log."""
    pixel = right_s / 4000
    merged: dict[tuple[str, str], list[list[float]]] = {}
    for iv in timeline.intervals:  # sorted by thread, then start
        if iv.kind not in COLOURS:
            continue
        start, end = iv.start_ns / NS, max(iv.end_ns / NS, iv.start_ns / NS + pixel)
        if start > right_s:
            continue
        spans = merged.setdefault((iv.thread, iv.kind), [])
        if spans and start - spans[-1][1] <= pixel:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    out: dict[str, list[list[tuple[float, float]]]] = {}
    for (thread, kind), spans in merged.items():
        y0, y1 = rows[thread] - 0.4, rows[thread] + 0.4
        out.setdefault(kind, []).extend([(x0, y0), (x0, y1), (x1, y1), (x1, y0)] for x0, x1 in spans)
    return out


def plot(timeline: Timeline, out: str | Path, title: str) -> None:
    plt = import_pyplot()
    from matplotlib.collections import LineCollection, PolyCollection

    rows = {thread: i for i, thread in enumerate(timeline.threads)}
    height = min(max(3.0, 0.22 * len(rows) + 1.5), MAX_HEIGHT_IN)  # 2048 vCPUs: rows of a few pixels
    fig, axes = plt.subplots(1, 2, figsize=(15, height), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    starts = [[(t / NS, rows[thread] - 0.45), (t / NS, rows[thread] + 0.45)] for thread, t in timeline.online.items()]
    for ax, right in zip(axes, (_zoom_end(timeline), timeline.end_ns / NS), strict=True):
        for kind, verts in _bars(timeline, rows, right).items():
            ax.add_collection(PolyCollection(verts, facecolors=COLOURS[kind], linewidths=0))
        ax.add_collection(LineCollection(starts, colors="black", linewidths=1.2))
        for inst in timeline.instants:
            if inst.name == "watchdog fired":
                ax.axvline(inst.t_ns / NS, color="black", linestyle="--", linewidth=1)
        ax.set_xlim(0, right)
        ax.set_ylim(-0.5, len(rows) - 0.5)
        ax.set_xlabel("guest time (s)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_title("start of the run")
    axes[1].set_title("whole run")
    every = max(1, len(rows) // 160)  # at most about 160 labels
    axes[0].set_yticks(range(0, len(rows), every), list(rows)[::every], fontsize=7 if len(rows) > 24 else 9)
    axes[0].invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    labels = ["BQL held", "BQL wait", "halt sleep / cond wait", "KVM_RUN"]
    handles.append(plt.Line2D([0], [0], color="black"))
    labels.append("CPU started")
    handles.append(plt.Line2D([0], [0], color="black", linestyle="--"))
    labels.append("watchdog fired")
    fig.legend(handles, labels, loc="upper center", ncol=6, fontsize=8, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title, y=1.0 + 0.45 / height, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
