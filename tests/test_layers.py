"""The package's layers are one-way: no module imports, directly or around a circle, a module that imports it.

Imports that run count (at module level or inside a function); ones under `if TYPE_CHECKING:` never run and are
only for annotations, so they do not. docs/design.md says which package may import which.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vcpu_sched import config
from vcpu_sched.engine import ENGINES

PACKAGE = Path(__file__).resolve().parent.parent / "vcpu_sched"


def _module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = path.with_suffix("").relative_to(root.parent).parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported(name: str, path: Path, tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """The package's modules `name` imports when it runs, with each parent package a submodule import loads."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    module = ".".join([*base, child.module] if child.module else base)
                else:
                    module = child.module or ""
                for alias in child.names:
                    found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module)
            visit(child)

    visit(tree)
    closed = {".".join(target.split(".")[:i]) for target in found for i in range(1, target.count(".") + 2)}
    return {m for m in closed if m in modules and m != name and not name.startswith(m + ".")}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _module_names(root)
    return {name: _imported(name, path, ast.parse(path.read_text()), modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_a_new_cycle_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..b import B\n"
    (package / "low" / "a.py").write_text(type_only)
    (package / "b.py").write_text("from .low import a\n")
    assert cycles(import_graph(package)) == []  # a type-only import is no cycle
    (package / "low" / "a.py").write_text("def f():\n    from ..b import B\n    return B\n")
    assert cycles(import_graph(package)) == [["pkg.b", "pkg.low.a"]]


@pytest.mark.parametrize(("lower", "upper"), [("vcpu_sched.model", "vcpu_sched.engine"),
                                               ("vcpu_sched.config", "vcpu_sched.engine"),
                                               ("vcpu_sched.qemu_command", "vcpu_sched.cli")])
def test_nothing_imports_a_layer_above_it(lower: str, upper: str) -> None:
    graph = import_graph()
    offenders = {m: sorted(d for d in deps if d == upper or d.startswith(upper + "."))
                 for m, deps in graph.items() if m == lower or m.startswith(lower + ".")}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_the_engine_names_settings_check_are_the_registry() -> None:
    assert tuple(ENGINES) == config.ENGINES
