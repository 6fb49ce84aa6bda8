"""A text input's lines, read a block at a time: what the event log's reader and the QEMU trace's reader
both stream through. Reading 64 K characters and splitting at newlines costs a fraction of a readline() a
line; no line is held longer than MAX_LINE characters, so a file that is one huge line is never held whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..files import MAX_LINE, open_text_input
from .progress import current

READ_BLOCK = 1 << 16  # characters; at most MAX_LINE, so only a block's first line can be longer than MAX_LINE


class LineBlocks:
    """The lines of a file (UTF-8, damaged bytes replaced), a list of them for each block read, without their
    newlines; with `joined`, the block's lines come as one string, joined by newlines, after a cut line if any.
    A line longer than MAX_LINE comes as its first MAX_LINE + 1 characters, first in its list with `cut` set, the
    rest of it read and dropped (as files.bounded_lines cuts one). A last line with no newline comes alone in
    the last list, with `unterminated` set."""

    def __init__(self, where: str, path: str | Path, size: int = READ_BLOCK, joined: bool = False) -> None:
        self.where, self.path, self.size, self.joined = where, path, size, joined
        self.unterminated = self.cut = False

    def __iter__(self) -> Iterator[list[str]]:
        progress = current()
        size, joined = self.size, self.joined
        carry = ""  # the start of a line the previous block did not finish
        skipping = False  # in a line longer than MAX_LINE: read on to its end, keeping nothing
        self.unterminated = False
        with open_text_input(self.where, self.path) as stream:
            while block := stream.read(size):
                if progress is not None:
                    progress.advance(len(block))
                lines: list[str] = []
                self.cut = False
                if carry or skipping:  # the block's first line began in an earlier block
                    newline = block.find("\n")
                    if newline < 0:
                        if not skipping:
                            carry += block
                            if len(carry) > MAX_LINE:
                                self.cut = True
                                yield [carry[:MAX_LINE + 1]]
                                carry, skipping = "", True
                        continue
                    if skipping or len(carry) + newline > MAX_LINE:  # its end: dropped, or the line cut
                        if not skipping:
                            self.cut = True
                            lines.append((carry + block[:newline])[:MAX_LINE + 1])
                        block = block[newline + 1:]
                        skipping = False
                    else:
                        block = carry + block
                    carry = ""
                end = block.rfind("\n") + 1
                carry = block[end:]
                if end:
                    if joined:
                        lines.append(block[:end - 1])
                    else:
                        lines += block[:end - 1].split("\n")
                if lines:
                    yield lines
        if carry and not skipping:
            self.unterminated, self.cut = True, False
            yield [carry]
