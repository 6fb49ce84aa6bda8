"""The exhaustive search table of docs/races.md (tools/race_table.py --exhaustive): its shape, and its
cheapest rows searched again (slow). tests/test_docs.py checks that the block is stamped and intact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import docgen  # noqa: E402
import race_table  # noqa: E402


def _rows() -> list[list[str]]:
    block = next(b for b in docgen.blocks(race_table.PAGE) if b.name == "race-exhaustive")
    lines = [line for line in block.body.splitlines() if line.startswith("| ")][2:]  # the header and rule off
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_every_race_is_searched_from_bound_0_up_to_its_first_failure() -> None:
    rows = _rows()
    labels = [label for _, label, _ in race_table.EXHAUSTIVE_RACES]
    assert sorted({row[0] for row in rows}, key=labels.index) == labels
    for label in labels:
        mine = [row for row in rows if row[0] == label]
        assert [int(row[1]) for row in mine] == list(range(len(mine))), label
        # only the last bound may fail; the first failing schedule is one of those searched
        assert all(row[7] == "none" for row in mine[:-1]), label
        assert mine[-1][7] == "none" or 1 <= int(mine[-1][7]) <= int(mine[-1][4]), label
    # the timing race: no schedule fails, which is the point (docs/races.md)
    assert all(row[7] == "none" for row in rows if row[0] == race_table.TIMING_RACE[1])


@pytest.mark.slow
def test_the_hotplug_race_row_of_the_exhaustive_table_is_what_a_search_gives_now() -> None:
    """The cheapest race (its default schedule fails) searched again: every cell but the wall time is the page's."""
    fresh = [row[:-1] for row in race_table.exhaustive_rows(1, 900.0, race_table.RACES[3:4])]
    page = [row[:-1] for row in _rows() if row[0] == race_table.RACES[3][1]]
    assert fresh == page
