"""The event catalogue (trace_events.py): what is logged is declared, what analyze reads is declared, and
the README's schema table is the catalogue's."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import pytest

from tests.conftest import expectation_rows, variant
from vcpu_sched import runner
from vcpu_sched.config import RunSettings
from vcpu_sched.errors import ModelError
from vcpu_sched.events import EventLog
from vcpu_sched.scenario import apply, load
from vcpu_sched.trace_events import EVENTS, schema_table

ROOT = Path(__file__).resolve().parent.parent
PREFIXES = ("qemu_", "kvm_", "ppc_", "spapr_", "rtas_", "run_", "vcpu_", "watchdog_", "trace_", "pnv_", "cpu_",
            "tcg_", "process_", "guest_", "vm_", "monitor_", "console")


def test_an_undeclared_event_or_field_is_refused() -> None:
    log = EventLog(io.StringIO())
    log("console", 0, {"cpu": 0, "text": "fine"})
    with pytest.raises(ModelError, match="'kvm_cpu_exce' is not declared"):
        log("kvm_cpu_exce", 0, {"cpu": 0})
    with pytest.raises(ModelError, match=r"undeclared fields \['colour'\]"):
        log("console", 0, {"cpu": 0, "colour": "red"})


@pytest.mark.parametrize("name,index", expectation_rows())
def test_every_scenario_variant_logs_only_declared_events(name: str, index: int, tmp_path: Path) -> None:
    scenario = load(name)
    path = tmp_path / "run.jsonl"
    changes = {**scenario.expect[index].variant, "watchdog_s": 2.0}
    runner.run(apply(scenario.settings, changes, name), path)  # raises if not
    seen = {json.loads(line)["event"] for line in path.read_text().splitlines()}
    assert {"run_start", "run_verdict", "run_end"} <= seen


@pytest.mark.slow  # test_threads_engine.py's test_threads_log_is_analysable logs the same run in the default suite
def test_the_threads_engine_logs_only_declared_events(seed_settings: RunSettings, tmp_path: Path) -> None:
    runner.run(variant(seed_settings, engine="threads", watchdog_s=2.0, wall_deadline_s=20.0), tmp_path / "t.jsonl")


def test_analyze_reads_only_declared_events() -> None:
    fields = set().union(*(e.fields for e in EVENTS.values()))
    names = set()
    for path in (ROOT / "vcpu_sched" / "analyze").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(PREFIXES)
                    and node.value.isidentifier() and node.value not in fields):
                names.add(node.value)
    # Perfetto's metadata record; the package's name; the prefix of QEMU's KVM trace events (qemu_trace.py)
    not_events = {"process_name", "vcpu_sched", "kvm_"}
    assert names, "analyze names events"
    assert sorted(names - set(EVENTS) - not_events) == []


def test_the_readme_schema_table_is_the_catalogue() -> None:
    assert schema_table() in (ROOT / "docs" / "events.md").read_text()
