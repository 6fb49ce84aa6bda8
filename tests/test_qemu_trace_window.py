"""The reorder window of a trace file: a block of lines at a time, the same lines out as one line at a time."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from vcpu_sched.analyze import qemu_trace
from vcpu_sched.analyze.qemu_trace import Line, TraceFiles

WINDOW = 8  # REORDER_LINES for the test: small, so that lines come out late and beyond what it mends


def _one_at_a_time(times: list[int]) -> tuple[list[Line], int]:
    """The window as it was written first: a deque, a line in and one out at a time."""
    window: deque[Line] = deque()
    out: list[Line] = []
    emitted, late, last_t = -1, 0, -1
    for number, t in enumerate(times):
        line: Line = (t, None, "e", str(number), "", None)
        if t >= last_t:
            window.append(line)
            last_t = t
        else:
            i = len(window) - 2
            while i >= 0 and window[i][0] > t:
                i -= 1
            window.insert(i + 1, line)
        if len(window) > WINDOW:
            out.append(window.popleft())
    out += window
    result = []
    for line in out:  # never before the last one out
        if line[0] < emitted:
            late += 1
            result.append((emitted, *line[1:]))
        else:
            emitted = line[0]
            result.append(line)
    return result, late


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=80), st.lists(st.integers(1, 12), min_size=1, max_size=20),
       st.sampled_from(["random", "rising", "back"]), st.integers(0, 80))
def test_blocks_come_out_as_lines_one_at_a_time(times: list[int], sizes: list[int], shape: str, back: int) -> None:
    if shape != "random":  # mostly in order, as a trace is: a few lines a little early or late
        times = [i * 3 + t % 5 for i, t in enumerate(times)]
    if shape == "back":  # and the clock set back at one line, by more than the window mends
        times = [t + 200 * (i < back) for i, t in enumerate(times)]
    blocks: list[list[Line]] = []
    lines: list[Line] = [(t, None, "e", str(n), "", None) for n, t in enumerate(times)]
    while lines:
        size = sizes[len(blocks) % len(sizes)]
        blocks.append(lines[:size])
        lines = lines[size:]
    files = TraceFiles.__new__(TraceFiles)
    files.stats = qemu_trace.Stats()

    def checked(index: int) -> Iterator[list[Line]]:
        yield from blocks

    files._checked = checked  # type: ignore[method-assign]
    original = qemu_trace.REORDER_LINES
    qemu_trace.REORDER_LINES = WINDOW
    try:
        out = [line for batch in files._ordered(0) for line in batch]
    finally:
        qemu_trace.REORDER_LINES = original
    expected, late = _one_at_a_time(times)
    assert out == expected and files.stats.out_of_order == late
