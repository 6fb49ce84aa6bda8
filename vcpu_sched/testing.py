"""pytest plugin for timed regression tests of vCPU scheduling hangs (registered as `pytest11`).

In a pytest-trio test that uses the `autojump_clock` fixture (so guest seconds cost milliseconds):

    async def test_fix_boots(autojump_clock):
        result = await run_scenario("spapr-rtas-stopped", fix="quiesced")
        assert_boots(result, within=5.0)

- `run_scenario(name_or_scenario, **overrides)` runs in the test's own Trio run and virtual clock and
  returns the `RunResult`.
- `assert_boots` / `assert_locks_up` fail with the whole watchdog report and the command that replays
  exactly that run (`vcpu-sched run ... --seed N`).
- `@pytest.mark.seeds(0, 1, 2)` runs a test once per seed; the test receives it as the `seed` fixture.
- `@pytest.mark.seed_db("vcpu-sched-seeds.jsonl", limit=3)` runs a test once per entry of a seed
  database written by `vcpu-sched sweep` (the `seed_entry` fixture); `await replay(seed_entry)` runs that
  entry's settings and seed again.
- A wall-clock guard: every run stops itself (verdict `deadline`) after `vcpu_sched_wall_limit` wall
  seconds (ini option, default 60), so a broken model cannot hang the test session.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from .engine.trio_engine import TrioEngine
from .errors import BadInput
from .model.machine import Machine
from .report import result_text
from .result import RunResult
from .scenario import Scenario, apply, load

_wall_limit_s = 60.0


async def run_scenario(name_or_scenario: str | Scenario = "spapr-rtas-stopped", **overrides: Any) -> RunResult:
    """Run a scenario (with RunSettings overrides) to its verdict on the test's virtual clock."""
    if not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        raise pytest.UsageError("run_scenario needs Trio's virtual clock: add the autojump_clock fixture to the test")
    scenario = load(name_or_scenario) if isinstance(name_or_scenario, str) else name_or_scenario
    overrides.setdefault("wall_deadline_s", min(scenario.settings.wall_deadline_s, _wall_limit_s))
    settings = apply(scenario.settings, overrides, "run_scenario")
    result = await TrioEngine(Machine(settings)).run_async()
    result.scenario_settings = scenario.settings
    return result


async def replay(entry: dict[str, Any]) -> RunResult:
    """Run a seed-database entry again: its scenario, with its settings and seed."""
    settings = {k: v for k, v in entry.get("settings", {}).items() if k != "scenario"}
    settings["seed"] = entry["seed"]
    return await run_scenario(entry["scenario"], **settings)


def _fail(expected: str, result: RunResult) -> None:
    pytest.fail(f"expected {expected}\n{result_text(result, result.scenario_settings)}", pytrace=False)


def assert_boots(result: RunResult, within: float | None = None) -> None:
    """The guest brought up every CPU, within `within` guest seconds if given."""
    if result.verdict != "booted":
        _fail(f"the guest to boot{f' within {within:g} s' if within else ''}, got {result.verdict}", result)
    if within is not None and result.guest_time_s > within:
        _fail(f"the guest to boot within {within:g} s, it took {result.guest_time_s:.6f} s", result)


def assert_locks_up(result: RunResult, holder: int | None = None, stuck: int | None = 0,
                    chain: Iterable[str] = ()) -> None:
    """The watchdog fired: `stuck` (a CPU index, default the boot CPU) waited while `holder` held the BQL,
    and every text in `chain` appears in the causal chain."""
    lockup = result.lockup
    if result.verdict != "lockup" or lockup is None:
        _fail(f"a lockup, got {result.verdict}", result)
        return
    if stuck is not None and lockup.stuck_cpu != stuck:
        _fail(f"CPU {stuck} to be stuck, it was {lockup.stuck_thread}", result)
    if holder is not None and lockup.bql_holder != holder:
        _fail(f"CPU {holder} to hold the BQL, it was {lockup.bql_holder_thread}", result)
    missing = [link for link in chain if link not in lockup.cause]
    if missing:
        _fail(f"the causal chain to mention {missing}", result)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("vcpu_sched_wall_limit", "wall seconds any vcpu_sched run may take in a test", default="60")


def pytest_configure(config: pytest.Config) -> None:
    global _wall_limit_s
    _wall_limit_s = float(config.getini("vcpu_sched_wall_limit"))
    config.addinivalue_line("markers", "seeds(*seeds): run the test once per seed (the `seed` fixture)")
    config.addinivalue_line("markers", "seed_db(path, limit=None): run the test once per entry of a seed "
                                       "database (the `seed_entry` fixture)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("seeds")
    if marker is not None and "seed" in metafunc.fixturenames:
        metafunc.parametrize("seed", list(marker.args), ids=[f"seed={s}" for s in marker.args])
    db = metafunc.definition.get_closest_marker("seed_db")
    if db is not None and "seed_entry" in metafunc.fixturenames:
        from .sweep import read_db

        path = Path(db.args[0])
        if not path.is_absolute():
            path = Path(metafunc.config.rootpath) / path
        if not path.exists():
            raise pytest.UsageError(f"seed_db: {path} does not exist (write it with vcpu-sched sweep --db)")
        try:
            entries = read_db(path)[:db.kwargs.get("limit")]
        except BadInput as e:  # a FIFO, a directory: not a database
            raise pytest.UsageError(f"seed_db: {e}") from None
        metafunc.parametrize("seed_entry", entries, ids=[f"{e['scenario']}:seed={e['seed']}" for e in entries])


@pytest.fixture
def seed() -> int:
    """The run's seed: 0, or each of @pytest.mark.seeds(...) in turn."""
    return 0
