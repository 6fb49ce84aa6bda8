"""The block reader both analyze readers stream through: the same lines whatever the block size."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcpu_sched.analyze.lineblocks import LineBlocks
from vcpu_sched.files import MAX_LINE


def _read(path: Path, size: int) -> tuple[list[list[str]], bool]:
    blocks = LineBlocks(str(path), path, size)
    return list(blocks), blocks.unterminated


@pytest.mark.parametrize("size", [1, 2, 5, 64, 1 << 16])
@pytest.mark.parametrize("text", ["a\nbb\n\nccc\n", "a\nbb\nlast", "only", "\n\n", "é\r\nx\n"])
def test_the_lines_do_not_depend_on_the_block_size(tmp_path: Path, size: int, text: str) -> None:
    path = tmp_path / "f.txt"
    path.write_text(text, encoding="utf-8", newline="")
    blocks, unterminated = _read(path, size)
    expected = text.replace("\r\n", "\n").split("\n")  # read with universal newlines, as open() does
    if expected[-1] == "":
        expected.pop()
    assert [line for block in blocks for line in block] == expected
    assert unterminated == (not text.endswith("\n"))
    if unterminated:
        assert blocks[-1] == [expected[-1]]


@pytest.mark.parametrize("size", [1000, 1 << 16])
@pytest.mark.parametrize("ending", ["\n", ""])
def test_a_line_longer_than_max_line_comes_cut_once_and_the_next_line_whole(tmp_path: Path, size: int,
                                                                            ending: str) -> None:
    path = tmp_path / "f.txt"
    path.write_text("first\n" + "x" * (MAX_LINE + 5000) + ending + ("next\n" if ending else ""), encoding="utf-8")
    blocks, unterminated = _read(path, size)
    lines = [line for block in blocks for line in block]
    assert lines[0] == "first"
    assert lines[1] == "x" * (MAX_LINE + 1)
    assert lines[2:] == (["next"] if ending else [])
    assert not unterminated  # a cut line is not the unfinished last line
    assert all(len(line) <= MAX_LINE for block in blocks for line in block[1:])  # a cut line comes first
