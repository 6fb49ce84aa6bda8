"""The README and docs/ cannot go stale (issue 26 item 3).

- Every docs page is reachable from the README, and every relative link (and its #anchor) resolves.
- Every generated block (`<!-- generated:NAME ... -->` ... `<!-- end:NAME -->`, tools/docgen.py) is what its
  generator wrote (its digest), and the quick generators' blocks are what they would write now: the
  scenario tables (every verdict a run of the model, tools/doc_tables.py), the quoted reports, the sentences
  that sum up exploring.md's tables (read from them); the searches' counts and verdicts are re-run by the
  slow tests, the real matrix where a real QEMU is installed. Timings are the generator's last run, dated
  by the stamp's code version, and never re-timed here.
- Every `vcpu-sched` line of a fenced `sh` block is run and must exit as its comment says (`exit N`); a
  comment saying `slow` makes it a slow test, `needs a real QEMU` a real one, and `needs a Dask cluster`,
  `needs KVM` or `a server` skip it with that reason.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import docgen  # noqa: E402

PAGES = docgen.pages()
BIN = Path(sys.executable).parent


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


# ---- links

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


def links(page: Path) -> list[tuple[Path, str]]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    out = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        out.append(((page.parent / path).resolve() if path else page, anchor))
    return out


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    seen, todo = {docgen.README}, [docgen.README]
    while todo:
        for target, _ in links(todo.pop()):
            if target.suffix == ".md" and target not in seen and target.exists():
                seen.add(target)
                todo.append(target)
    assert sorted(rel(p) for p in set(PAGES) - seen) == []


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target, anchor in links(page):
        if not target.exists():
            broken.append(f"{rel(target)}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{rel(target)}#{anchor}: no such heading")
    assert broken == []


def test_the_readme_is_a_front_page() -> None:
    text = docgen.README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    tasks = text[text.index("## Tasks"):text.index("\n## ", text.index("## Tasks") + 1)]
    top = text[:text.index("```")]  # before the first block: what a reader sees first
    for task, page in (("See the hang and the fix", "docs/scenarios/spapr-rtas-stopped.md"),
                       ("Run a variant or your own QEMU command line", "docs/usage.md"),
                       ("Analyse a log or a real QEMU trace", "docs/analyze.md"),
                       ("Write a regression test", "docs/pytest-plugin.md"),
                       ("Drive it over QMP", "docs/qmp.md"),
                       ("Check a scenario on a real QEMU", "docs/real-qemu.md")):
        item = next((i for i in tasks.split("\n- ") if task in i), None)
        assert item is not None and f"]({page})" in item, task
        assert f"]({page})" in top, f"{task}: one click from the top"
    # the test command CI runs (.ci/run) is the README's, exactly
    assert "python3 tools/dev.py test " in text and "python3 tools/dev.py test" in (ROOT / ".ci" / "run").read_text()


# ---- generated blocks

def problems(page: Path, generators: Mapping[tuple[Path, str], Callable[[], str]] | None = None) -> list[str]:
    """What is wrong with a page's generated blocks: a body that is not what its generator wrote (a hand
    edit), a stamp without its generator, code version or date, or a quick block that differs from what
    its generator writes now."""
    out = []
    for block in docgen.blocks(page):
        missing = {"by", "at", "on", "sha256"} - set(block.fields)
        if missing:
            out.append(f"{block.name}: the stamp lacks {sorted(missing)}")
        elif not block.intact:
            out.append(f"{block.name}: edited by hand (its digest is not the body's); rerun {block.fields['by']}")
        generate = (generators or {}).get((page, block.name))
        if generate is not None and block.body != generate() + "\n":
            out.append(f"{block.name}: not what {block.fields.get('by')} writes now")
    return out


QUICK = {key: functools.cache(generate) for key, generate in docgen.quick_generators().items()}


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_generated_blocks_are_what_their_generators_wrote(page: Path) -> None:
    assert problems(page, QUICK) == []


def test_every_quick_block_is_in_its_page() -> None:
    names = {(block.page, block.name) for page in PAGES for block in docgen.blocks(page)}
    assert sorted(f"{rel(p)}:{n}" for p, n in set(QUICK) - names) == []


def _copy(page: Path, tmp_path: Path) -> Path:
    copy = tmp_path / page.name
    copy.write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
    return copy


def test_a_hand_edited_count_fails(tmp_path: Path) -> None:
    copy = _copy(docgen.DOCS / "exploring.md", tmp_path)
    assert problems(copy) == []
    text = copy.read_text(encoding="utf-8")
    copy.write_text(text.replace("| 2 | none | kvm | applied | 659 |", "| 2 | none | kvm | applied | 658 |", 1),
                    encoding="utf-8")
    assert copy.read_text(encoding="utf-8") != text
    assert [p.split(":")[0] for p in problems(copy)] == ["explore-exhaustive"]


def test_a_hand_edited_verdict_fails_even_with_its_digest_redone(tmp_path: Path) -> None:
    page = docgen.DOCS / "scenarios" / "spapr-system-reset.md"
    copy = _copy(page, tmp_path)
    name = "variants-spapr-system-reset"
    block = next(b for b in docgen.blocks(copy) if b.name == name)
    edited = block.body.replace("`lockup`", "`booted`", 1)
    assert edited != block.body
    text = copy.read_text(encoding="utf-8")
    start = text.index(f"<!-- generated:{name}")
    end = text.index(f"<!-- end:{name} -->") + len(f"<!-- end:{name} -->")
    copy.write_text(text[:start] + docgen.render(name, edited, "tools/docgen.py") + text[end:], encoding="utf-8")
    assert problems(copy) == []  # the digest alone passes: the generator is what catches it
    assert problems(copy, {(copy, name): QUICK[(page, name)]}) == [f"{name}: not what tools/docgen.py writes now"]


def test_a_hand_edited_verdict_of_a_described_table_fails(tmp_path: Path) -> None:
    """The scenario pages' tables whose words are tools/doc_tables.py's: each verdict is a run of the model."""
    page = docgen.DOCS / "scenarios" / "spapr-migrate-from-9.2.md"
    copy = _copy(page, tmp_path)
    block = next(b for b in docgen.blocks(copy) if b.name == "inference")
    edited = block.body.replace("`lockup`", "`completed`", 1)
    assert edited != block.body
    text = copy.read_text(encoding="utf-8")
    start = text.index("<!-- generated:inference")
    end = text.index("<!-- end:inference -->") + len("<!-- end:inference -->")
    copy.write_text(text[:start] + docgen.render("inference", edited, "tools/docgen.py") + text[end:], encoding="utf-8")
    assert problems(copy, {(copy, "inference"): QUICK[(page, "inference")]}) == \
        ["inference: not what tools/docgen.py writes now"]


def test_a_cell_whose_variants_disagree_is_refused() -> None:
    import doc_tables
    from doc_tables import V

    assert doc_tables.cell("spapr-rtas-stopped", [V() | V(cpu="POWER9")]) == "`lockup`"
    with pytest.raises(ValueError, match="several verdicts"):
        doc_tables.cell("spapr-rtas-stopped", [V() | V(fix="quiesced")])


def test_the_words_that_sum_up_a_table_follow_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """exploring.md's sentences are read from its tables: a table written again rewrites them."""
    copy = _copy(docgen.EXPLORING, tmp_path)
    monkeypatch.setattr(docgen, "EXPLORING", copy)
    before = docgen.delay_vs_preemption()
    assert "at smp 3, " in before
    block = next(b for b in docgen.blocks(copy) if b.name == "explore-delay")
    row = next(line for line in block.body.splitlines() if line.startswith("| 3 | none |"))
    cells = row.split(" | ")
    docgen.write_block(copy, "explore-delay", block.body.replace(row, " | ".join([*cells[:2], "999", *cells[3:]])),
                       "tools/explore_table.py:delay")
    after = docgen.delay_vs_preemption()
    assert after != before and "at smp 3, 999 schedules against" in after


# ---- the sh examples

_EXIT = re.compile(r"\bexit (\d+)\b")
NEEDS = {"needs a Dask cluster": "needs a Dask scheduler at that address",
         "needs KVM": "needs a POWER host with KVM",
         "a server": "a server that runs until `quit`: tests/test_qmp.py and test_qmp_example.py drive it",
         "half an hour": "half an hour a binary: test_the_real_matrix_of_the_seed_scenario_is_the_pages reruns a part",
         "test_real_qemu.py runs it": "tests/test_real_qemu.py runs these rows on the real binary and checks their "
                                      "evidence (RTAS answers, console lines), not only the exit status"}


@dataclass
class Example:
    page: Path
    line: int
    commands: list[tuple[int, str, int | None]] = field(default_factory=list)  # line, command, exit status
    env: dict[str, str] = field(default_factory=dict)
    slow: bool = False
    real: bool = False
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{rel(self.page)}:{self.line}"


def examples(page: Path) -> list[Example]:
    out = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```sh":
            i += 1
            continue
        example = Example(page, i + 1)
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            number, text = i + 1, lines[i]
            while text.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text.rstrip()[:-1].rstrip() + " " + lines[i].strip()
            i += 1
            assignment = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(\S+)", text.strip())
            if assignment:
                example.env[assignment.group(1)] = os.path.expanduser(assignment.group(2))
                continue
            if not text.startswith("vcpu-sched"):
                continue
            hash_mark = re.search(r"\s#\s", text)
            command, comment = (text[:hash_mark.start()], text[hash_mark.end():]) if hash_mark else (text, "")
            status = _EXIT.search(comment)
            example.commands.append((number, command.strip(), int(status.group(1)) if status else None))
            example.slow |= bool(re.search(r"\bslow\b", comment))
            example.real |= "needs a real QEMU" in comment
            example.skip = next((why for key, why in NEEDS.items() if key in comment), example.skip)
        i += 1
        if example.commands:
            out.append(example)
    return out


EXAMPLES = [e for page in PAGES for e in examples(page)]


def test_every_example_says_how_it_exits() -> None:
    unsaid = [f"{e.id}: {command}" for e in EXAMPLES for _, command, status in e.commands if status is None]
    assert unsaid == []
    assert len(EXAMPLES) >= 20


def _in_process(argv: list[str], cwd: Path) -> tuple[int, str]:
    """`vcpu-sched ARGV` as `vcpu_sched.cli.main` runs it, in this process (a quick example costs its run, not
    a Python start-up): the exit status and what it wrote on stderr."""
    from vcpu_sched.cli import main

    err = io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as e:  # argparse's bad input
            status = e.code if isinstance(e.code, int) else 1
    return status, err.getvalue()


def run_example(example: Example, cwd: Path, timeout: float = 900, in_process: bool = False) -> list[str]:
    """Run each command of the block in order in `cwd` (with the repository's tests/ beside it, for the
    recorded traces), as a process or (`in_process`) through the CLI's main; returns the commands whose
    exit status is not what the text says."""
    if not (cwd / "tests").exists():
        (cwd / "tests").symlink_to(ROOT / "tests")
    env = {**os.environ, **example.env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    wrong = []
    for number, command, status in example.commands:
        argv = [re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), word) for word in shlex.split(command)]
        if in_process:
            code, err = _in_process(argv[1:], cwd)
        else:
            done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                                  check=False)
            code, err = done.returncode, done.stderr
        if code != status:
            wrong.append(f"{rel(example.page)}:{number}: `{command}` exited {code}, the text says "
                         f"{status}: {err.strip().splitlines()[-1:] or ''}")
    return wrong


def _param(example: Example) -> object:
    marks: list[pytest.MarkDecorator] = []
    if example.skip:
        marks.append(pytest.mark.skip(reason=example.skip))
    if example.real:
        marks.append(pytest.mark.real)
    elif example.slow:
        marks.append(pytest.mark.slow)
    return pytest.param(example, id=example.id, marks=marks)


@pytest.mark.parametrize("example", [_param(e) for e in EXAMPLES])
def test_example_exits_as_the_text_says(example: Example, tmp_path: Path) -> None:
    if example.real:
        from vcpu_sched.real.kit import installed_qemus

        if not installed_qemus():
            pytest.skip("no real QEMU set up (python3 tools/dev.py real-qemu)")
    # the quick ones through the CLI's main in this process; the slow and real ones as the user types them
    assert run_example(example, tmp_path, in_process=not (example.slow or example.real)) == []


def test_an_example_whose_exit_status_changed_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```sh\nvcpu-sched run --fix quiesced   # booted: exit 0\n"
                    "vcpu-sched run --fix quiesced   # the text got it wrong: exit 1\n```\n", encoding="utf-8")
    [example] = examples(page)
    assert [status for _, _, status in example.commands] == [0, 1]
    assert [w.split(": `")[0] for w in run_example(example, tmp_path)] == [f"{page}:3"]
    assert [w.split(": `")[0] for w in run_example(example, tmp_path, in_process=True)] == [f"{page}:3"]


def test_the_comment_decides_where_an_example_runs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```sh\nQ=~/qemu\nvcpu-sched real --qemu-binary $Q   # exit 1 (needs a real QEMU)\n```\n\n"
                    "```sh\nvcpu-sched explore --smp 3 \\\n    --strategy exhaustive   # exit 1 (slow)\n```\n\n"
                    "```sh\nvcpu-sched sweep --cluster tcp://h:1   # exit 0 (needs a Dask cluster)\n```\n",
                    encoding="utf-8")
    real, slow, cluster = examples(page)
    assert real.real and not real.slow and real.env == {"Q": os.path.expanduser("~/qemu")}
    assert slow.slow and slow.commands == [(7, "vcpu-sched explore --smp 3 --strategy exhaustive", 1)]
    assert cluster.skip == NEEDS["needs a Dask cluster"]


# ---- the generators that take minutes: counts and verdicts re-run (timings are not compared)

def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _untimed(table: str, timing: str = "wall s") -> list[list[str]]:
    rows = [_cells(r) for r in table.splitlines() if r.startswith("|") and not r.startswith("| ---")]
    header, body = rows[0], rows[1:]
    drop = {i for i, name in enumerate(header) if name == timing}
    return [[re.sub(r", \d+ s$", "", c) for i, c in enumerate(row) if i not in drop] for row in body]


@pytest.mark.slow
@pytest.mark.parametrize("table", ["exhaustive", "delay", "searches", "unpruned"])
def test_the_quick_rows_of_the_exploration_tables_are_what_a_search_gives_now(table: str) -> None:
    import explore_table

    block = next(b for b in docgen.blocks(explore_table.PAGE) if b.name == f"explore-{table}")
    page_rows = _untimed(block.body)
    quick = explore_table.QUICK_ROWS[table]
    fresh = []
    for row in explore_table.TABLES[table].rows():
        if row[0] not in quick:
            break
        fresh.append(row)
    header = explore_table.TABLES[table].markdown(fresh)
    assert _untimed(header) == [r for r in page_rows if r[0] in quick]


@pytest.mark.slow
def test_the_first_schedule_rows_of_quick_scenarios_are_what_the_strategies_give_now() -> None:
    """exploring.md's first-schedule table: the rows of the scenarios whose failing rows run in seconds."""
    import explore_table

    names = ["s390x-sigp-cross", "spapr-cpu-offline-online", "spapr-fwnmi-kdump", "spapr-system-reset"]
    block = next(b for b in docgen.blocks(explore_table.PAGE) if b.name == "explore-first-schedule")
    page_rows = [r for r in _untimed(block.body) if r[0] in names]
    assert len(page_rows) == len(names)
    assert [list(r) for r in explore_table.first_schedule_rows(names=names)] == page_rows


def test_the_matrix_table_counts_the_rows_the_scenario_files_give() -> None:
    from vcpu_sched.matrix import rows_for
    from vcpu_sched.scenario import load, scenario_names

    block = next(b for b in docgen.blocks(docgen.DOCS / "usage.md") if b.name == "matrix-engines")
    rows = sum(len(rows_for(load(name))) for name in scenario_names())
    assert {r[0]: int(r[1]) for r in _untimed(block.body)} == {"trio": rows, "explore": rows, "threads": rows}


@pytest.mark.slow
def test_the_matrix_rows_and_mismatches_are_the_pages() -> None:
    block = next(b for b in docgen.blocks(docgen.DOCS / "usage.md") if b.name == "matrix-engines")
    trio_row = next(r for r in _untimed(block.body) if r[0] == "trio")
    assert _untimed(docgen.matrix_engines(("trio",))) == [trio_row]


ONE_SWEPT_ROW = {"fwnmi-odds": lambda: docgen.fwnmi_odds((2,)), "sigp-odds": lambda: docgen.sigp_odds(((8, 1),)),
                 "race-odds": lambda: docgen.race_odds(docgen.RACE_SWEEPS[2:3])}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ONE_SWEPT_ROW))
def test_a_row_of_each_seed_sweep_is_what_a_sweep_gives_now(name: str) -> None:
    """One row of each sweep table (a few hundred seeds), swept again: the counts are exact for a seed."""
    page = next(p for p, n in docgen.SWEEPS if n == name)
    block = next(b for b in docgen.blocks(page) if b.name == name)
    fresh = _untimed(ONE_SWEPT_ROW[name]())
    assert fresh and fresh[0] in _untimed(block.body)


@pytest.mark.slow
def test_the_hotplug_race_rows_of_the_strategy_table_are_what_a_search_gives_now() -> None:
    """The race table's cheapest race (its default schedule fails) searched again: its rows are the page's."""
    import race_table

    block = next(b for b in docgen.blocks(race_table.PAGE) if b.name == "race-strategies")
    fresh = [" | ".join(row) for row in race_table.rows(50, 30, 2, race_table.RACES[3:4])]
    assert fresh and all(f"| {row} |" in block.body for row in fresh), fresh


def test_every_sweep_table_has_a_row_swept_again_by_the_slow_tests() -> None:
    assert {name for _, name in docgen.SWEEPS} == set(ONE_SWEPT_ROW)


@pytest.mark.real
def test_the_real_matrix_of_the_seed_scenario_is_the_pages(tmp_path: Path) -> None:
    """The seed scenario's rows of the real-QEMU table, run again on each QEMU installed here."""
    import json

    from vcpu_sched.real.kit import installed_qemus

    qemus = installed_qemus()
    if not qemus:
        pytest.skip("no real QEMU set up (python3 tools/dev.py real-qemu)")
    block = next(b for b in docgen.blocks(docgen.DOCS / "real-qemu.md") if b.name == "real-matrix")
    page = {(r[0], r[1], r[2]): r[3:5] for r in _untimed(block.body, "-") if r[0] == "`spapr-rtas-stopped`"}
    argv = [str(BIN / "vcpu-sched"), "matrix", "--against", "real", "spapr-rtas-stopped", "--json"]
    for binary in qemus.values():
        argv += ["--qemu-binary", binary]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False, cwd=tmp_path)
    rows = [r for r in json.loads(out.stdout)["rows"] if r["run"] and not r["harness_error"]]
    fresh = {(f"`{r['scenario']}`", r["label"], r["version"]): [f"`{r['model']['verdict']}`", f"`{r['verdict']}`"]
             for r in rows}
    assert {k: v for k, v in fresh.items() if k in page} == page and page
