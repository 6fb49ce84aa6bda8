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
    newlines. A line longer than MAX_LINE comes as its first MAX_LINE + 1 characters, alone or first in its
    list, the rest of it read and dropped (as files.bounded_lines cuts one). A last line with no newline comes
    alone in the last list, with `unterminated` set."""

    def __init__(self, where: str, path: str | Path, size: int = READ_BLOCK) -> None:
        self.where, self.path, self.size = where, path, size
        self.unterminated = False

    def __iter__(self) -> Iterator[list[str]]:
        progress = current()
        size = self.size
        carry = ""  # the start of a line the previous block did not finish
        skipping = False  # in a line longer than MAX_LINE: read on to its end, keeping nothing
        self.unterminated = False
        with open_text_input(self.where, self.path) as stream:
            while block := stream.read(size):
                if progress is not None:
                    progress.advance(len(block))
                lines: list[str] = []
                if carry or skipping:  # the block's first line began in an earlier block
                    newline = block.find("\n")
                    if newline < 0:
                        if not skipping:
                            carry += block
                            if len(carry) > MAX_LINE:
                                yield [carry[:MAX_LINE + 1]]
                                carry, skipping = "", True
                        continue
                    head, block = carry + block[:newline], block[newline + 1:]
                    carry = ""
                    if skipping:
                        skipping = False
                    else:
                        lines.append(head[:MAX_LINE + 1])
                end = block.rfind("\n") + 1
                carry = block[end:]
                if end:
                    lines += block[:end - 1].split("\n")
                if lines:
                    yield lines
        if carry and not skipping:
            self.unterminated = True
            yield [carry]
