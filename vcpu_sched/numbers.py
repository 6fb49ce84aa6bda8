"""Numbers as a user types them on a command line: ASCII digits only.

Python's int() and float() also take any Unicode decimal digit (`int("٣") == 3`), underscores, spaces
around the number, and float() takes `inf` and `nan`; `str.isdigit` is true for `²`, which int() then
refuses with a ValueError. Every numeric option goes through these instead (argparse's `type=int` and
`type=float` are mapped onto them by `ascii_numbers`), so the same text means the same number everywhere.
"""

from __future__ import annotations

import argparse
import math
import re

MAX_DIGITS = 400  # far beyond any setting's range, far below Python's int-string limit (4300)
_INT = re.compile(rf"[-+]?[0-9]{{1,{MAX_DIGITS}}}")
_FLOAT = re.compile(rf"[-+]?(?:[0-9]{{1,{MAX_DIGITS}}}(?:\.[0-9]*)?|\.[0-9]{{1,{MAX_DIGITS}}})"
                    r"(?:[eE][-+]?[0-9]{1,4})?")
_DIGITS = re.compile(r"[0-9]+")


def ascii_int(text: str) -> int:
    if not _INT.fullmatch(text):
        raise ValueError(text)  # argparse: "invalid int value: '...'"
    return int(text)


def ascii_float(text: str) -> float:
    value = float(text) if _FLOAT.fullmatch(text) else math.nan
    if not math.isfinite(value):
        raise ValueError(text)  # argparse: "invalid float value: '...'"
    return value


def is_digits(text: str) -> bool:
    """`text` is ASCII digits 0-9 (what `str.isdigit` is not)."""
    return _DIGITS.fullmatch(text) is not None


def ascii_numbers(parser: argparse.ArgumentParser) -> None:
    """Options declared `type=int` or `type=float` read ASCII numbers (argparse looks its types up here)."""
    parser.register("type", int, ascii_int)
    parser.register("type", float, ascii_float)
