"""The block reader both analyze readers stream through: the same lines whatever the block size."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcpu_sched.analyze.lineblocks import LineBlocks
from vcpu_sched.files import MAX_LINE


def _read(path: Path, size: int, joined: bool = False) -> tuple[list[list[str]], bool]:
    """The lists read, each a list of lines (those of `joined` split again), and `unterminated`."""
    blocks = LineBlocks(str(path), path, size, joined)
    out = []
    for texts in blocks:
        if blocks.cut or not joined:  # joined, lines may be longer than MAX_LINE together
            assert blocks.cut == (len(texts[0]) > MAX_LINE)
        if joined:
            assert len(texts) <= 1 + blocks.cut
            texts = texts[:blocks.cut] + [line for text in texts[blocks.cut:] for line in text.split("\n")]
        out.append(texts)
    return out, blocks.unterminated


@pytest.mark.parametrize("joined", [False, True])
@pytest.mark.parametrize("size", [1, 2, 5, 64, 1 << 16])
@pytest.mark.parametrize("text", ["a\nbb\n\nccc\n", "a\nbb\nlast", "only", "\n\n", "é\r\nx\n"])
def test_the_lines_do_not_depend_on_the_block_size(tmp_path: Path, size: int, text: str, joined: bool) -> None:
    path = tmp_path / "f.txt"
    path.write_text(text, encoding="utf-8", newline="")
    blocks, unterminated = _read(path, size, joined)
    expected = text.replace("\r\n", "\n").split("\n")  # read with universal newlines, as open() does
    if expected[-1] == "":
        expected.pop()
    assert [line for block in blocks for line in block] == expected
    assert unterminated == (not text.endswith("\n"))
    if unterminated:
        assert blocks[-1] == [expected[-1]]


@pytest.mark.parametrize("joined", [False, True])
@pytest.mark.parametrize("size", [1000, 1 << 16])
@pytest.mark.parametrize("ending", ["\n", ""])
def test_a_line_longer_than_max_line_comes_cut_once_and_the_next_line_whole(tmp_path: Path, size: int,
                                                                            ending: str, joined: bool) -> None:
    path = tmp_path / "f.txt"
    path.write_text("first\n" + "x" * (MAX_LINE + 5000) + ending + ("next\n" if ending else ""), encoding="utf-8")
    blocks, unterminated = _read(path, size, joined)
    lines = [line for block in blocks for line in block]
    assert lines[0] == "first"
    assert lines[1] == "x" * (MAX_LINE + 1)
    assert lines[2:] == (["next"] if ending else [])
    assert not unterminated  # a cut line is not the unfinished last line
    assert all(len(line) <= MAX_LINE for block in blocks for line in block[1:])  # a cut line comes first


@pytest.mark.parametrize("joined", [False, True])
@pytest.mark.parametrize("size", [1000, 1 << 16])
def test_a_long_line_within_max_line_is_whole_and_not_cut(tmp_path: Path, size: int, joined: bool) -> None:
    # Joined, the long line and the short ones after it are more than MAX_LINE characters together.
    expected = ["y" * (MAX_LINE - 100), *(["z"] * 50000), "x" * (MAX_LINE + 1), "next"]
    path = tmp_path / "f.txt"
    path.write_text("y" * (MAX_LINE - 100) + "\n" + "z\n" * 50000 + "x" * (MAX_LINE + 5000) + "\nnext\n",
                    encoding="utf-8")
    blocks, unterminated = _read(path, size, joined)
    assert [line for block in blocks for line in block] == expected and not unterminated
