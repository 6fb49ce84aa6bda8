"""Reading an event log: tolerant of a truncated tail and of corrupt lines, strict about what a log is.

A file is a log when a `run_start` line with settings is found among its first lines. Lines that are
not JSON objects with `event` and an integer `t_ns` are counted as corrupt (by line number) and
skipped. A log without `run_end` as its last event is truncated: a killed run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput

HEADER_SEARCH_LINES = 5


@dataclass
class Log:
    path: str
    settings: dict[str, Any]
    events: list[dict[str, Any]]
    corrupt_lines: list[int] = field(default_factory=list)
    last_line: int = 0

    @property
    def end(self) -> dict[str, Any] | None:
        return self.events[-1] if self.events and self.events[-1]["event"] == "run_end" else None

    @property
    def truncated(self) -> bool:
        return self.end is None

    @property
    def end_ns(self) -> int:
        return max((e["t_ns"] for e in self.events), default=0)


def parse_lines(lines: list[str], path: str = "<log>") -> Log:
    events: list[dict[str, Any]] = []
    corrupt: list[int] = []
    settings: dict[str, Any] | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            corrupt.append(number)
            continue
        if not (isinstance(event, dict) and isinstance(event.get("event"), str)
                and isinstance(event.get("t_ns"), int) and not isinstance(event.get("t_ns"), bool)):
            corrupt.append(number)
            continue
        if event["event"] == "run_start" and settings is None:
            if not isinstance(event.get("settings"), dict) or number > HEADER_SEARCH_LINES:
                corrupt.append(number)
                continue
            settings = event["settings"]
        events.append(event)
    if settings is None:
        raise BadInput(f"{path}: not a vcpu_sched event log (no run_start line at the top)")
    return Log(path, settings, events, corrupt, len(lines))


def read_log(path: str | Path) -> Log:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}") from None
    text = data.decode("utf-8", errors="replace")
    return parse_lines(text.splitlines(), str(path))
