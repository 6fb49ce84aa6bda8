"""The lockup report's CPU table at scale: runs of identical rows grouped as top would, every row in --json
(issue 28 goal 1)."""

from __future__ import annotations

import json

import pytest

from vcpu_sched.cli import main
from vcpu_sched.report import GROUP_ABOVE, cpu_table
from vcpu_sched.result import CpuRow


def _row(cpu: int, where: str | None = None, halted: bool = True) -> CpuRow:
    return CpuRow(cpu=cpu, thread=f"CPU {cpu}/KVM", where=where or f"waits halt_cond[{cpu}]", halted=halted,
                  quiesced=False, hard=False, lpcr="0x56f41f", lpcr_decoded="LD", psscr_ec=False,
                  pending=["DECR"], would_take="DECR", loop_iterations=cpu)


def test_small_table_keeps_one_row_per_cpu() -> None:
    rows = [_row(i) for i in range(GROUP_ABOVE)]
    lines = cpu_table(rows)
    assert len(lines) == 1 + GROUP_ABOVE
    assert lines[3].startswith("2    waits halt_cond[2]  ")
    assert not any("CPUs)" in line for line in lines)


def test_big_table_groups_consecutive_identical_rows() -> None:
    rows = [_row(0, "waits BQL", halted=False), _row(1, "holds BQL")]
    rows += [_row(i) for i in range(2, 50)] + [_row(50, halted=False)] + [_row(i) for i in range(51, 200)]
    lines = cpu_table(rows)
    assert [line.split()[0] for line in lines] == ["CPU", "0", "1", "2-49", "50", "51-199"]
    assert lines[3].startswith("2-49   waits halt_cond[i]   1  ") and lines[3].endswith("LD (48 CPUs)")
    assert lines[4].startswith("50     waits halt_cond[50]  0  ") and not lines[4].endswith("CPUs)")
    assert lines[5].endswith("(149 CPUs)")
    assert lines[0].startswith("CPU    where ")  # the column widened for "51-199"


def test_rows_that_differ_or_skip_a_cpu_are_not_grouped() -> None:
    rows = [_row(i) for i in range(GROUP_ABOVE + 2)]
    rows[10].pending = []
    del rows[20]  # a gap: 19 and 21 are not a range
    labels = [line.split()[0] for line in cpu_table(rows)[1:]]
    assert labels == ["0-9", "10", "11-19", f"21-{GROUP_ABOVE + 1}"]


def test_json_keeps_every_row_the_text_groups_them(capsys: pytest.CaptureFixture[str]) -> None:
    smp = GROUP_ABOVE + 16
    assert main(["run", "--smp", str(smp), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [row["cpu"] for row in data["lockup"]["cpus"]] == list(range(smp))
    assert data["lockup"]["cpus"][5]["where"] == "waits halt_cond[5]"
    main(["run", "--smp", str(smp), "--quiet"])
    text = capsys.readouterr().out
    assert "(2 CPUs)" not in text and f"({smp - 2} CPUs)" in text
    assert len([line for line in text.splitlines() if line[:1].isdigit()]) == 3
