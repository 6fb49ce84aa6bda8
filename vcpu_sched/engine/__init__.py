"""The engines that run a Machine, by name (`--engine NAME`). Each is a class over `core.EngineCore`;
adding one is a class and an entry here (docs/design.md: "Adding an engine")."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model.machine import Machine
    from .core import Engine

# name -> (module, class); imported on first use, so a command loads only the engine it runs
ENGINES: dict[str, tuple[str, str]] = {
    "trio": ("vcpu_sched.engine.trio_engine", "TrioEngine"),
    "threads": ("vcpu_sched.engine.threads_engine", "ThreadsEngine"),
    "explore": ("vcpu_sched.engine.explore_engine", "ExploreEngine"),
}


def make_engine(machine: Machine) -> Engine:
    """The engine `machine.settings.engine` names, ready to `run()`."""
    module, cls = ENGINES[machine.settings.engine]
    engine: Engine = getattr(importlib.import_module(module), cls)(machine)
    return engine
