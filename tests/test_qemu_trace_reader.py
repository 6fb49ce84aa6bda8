"""The `tid` format's block reader (one findall a block, each event split once): the same lines, counts and
corrupt lines as parse() of one line at a time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcpu_sched.analyze.qemu_trace import Line, Stats, TraceFiles

HEAD = "".join(f"7@1.{n:06d}:qemu_mutex_locked taken mutex 0x1 (../../softmmu/cpus.c:1)\n" for n in range(64))
# A line: a stamp, an event, its arguments and an end, each most often well formed (a NUL would send the whole
# block down the line-at-a-time path)
STAMPS = ["1@2.5:", "23@2.000001:", "23@3.1234567891:", "1@2.5", "x@2.5:", "1@2:", ""]
NAMES = ["qemu_mutex_lock", "qemu_mutex_locked", "qemu_mutex_unlock", "kvm_cpu_exec", "kvm_run_exit", "_x", "é",
         "9abc", "qemu-system-ppc64:", ""]
ARGS = ["", " ", " waiting on mutex 0x1f (a.c:5)", " taken mutex 0x1f (a.c:5)", " released mutex (nil) (b/c.c:12)",
        " taken mutex 0x1f (a.c)", "taken mutex 0x2 (d.c:7)", " cpu_index 3, reason 2", " warning: x", "!"]
ENDS = ["", "", " ", "\t", "\r", "  \x0b", "\x85", "\u2028"]
LINES = st.tuples(*(st.sampled_from(choices) for choices in (STAMPS, NAMES, ARGS, ENDS))).map("".join)


def _line_by_line(files: TraceFiles, texts: list[str]) -> list[Line]:
    lines: list[Line] = []
    for number, text in enumerate(texts, 1):
        files._line(text + "\n", number, 0, lines)
    files.stats.lines += len(texts)
    return lines


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, max_size=40))
def test_a_block_reads_as_its_lines_one_at_a_time(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> None:
    path = tmp_path_factory.mktemp("reader") / "t.trace"
    path.write_text(HEAD + "".join(text + "\n" for text in texts), encoding="utf-8")
    files = TraceFiles([str(path)])
    assert files.format == "tid"
    files.stats = Stats()
    read = [tuple(line) for block in files._checked(0) for line in block]
    reference = TraceFiles([str(path)])
    reference.stats = Stats()
    as_read = path.read_text(encoding="utf-8")[:-1].split("\n")  # a \r is a line end too, as text mode reads it
    expected = [tuple(line) for line in _line_by_line(reference, as_read)]
    assert read == expected
    for name in ("lines", "events", "other", "corrupt", "corrupt_count"):
        assert getattr(files.stats, name) == getattr(reference.stats, name), name
