"""The structured event log: one JSON object per line, keys sorted, written through structlog.

Every line has `event` (QEMU's trace-event name where one exists), `t_ns` (guest time) and the
event's own fields (`cpu` where a vCPU is concerned). The first line is `run_start` with the settings
and the seed; the last is `run_end` with the verdict (or the reason the run was cut short).

Selection works like QEMU's `-trace`: glob patterns, `-PATTERN` excludes; `run_*` and `watchdog_*`
lines are always kept. A vCPU that spins must not flood the file: each (event, cpu) pair may log
`burst` (256) lines per second of guest time; the rest are counted and summarised in one `trace_suppressed`
line (count and rate) when the window closes.
"""

from __future__ import annotations

import fnmatch
from typing import Any, TextIO

import structlog

from .errors import ModelError
from .trace_events import undeclared

ALWAYS = ("run_start", "run_verdict", "run_end", "watchdog_*")


class TraceFilter:
    """`--trace PATTERN` / `--trace -PATTERN` selection."""

    def __init__(self, patterns: list[str] | tuple[str, ...] = ()) -> None:
        self.include = [p for p in patterns if not p.startswith("-")]
        self.exclude = [p[1:] for p in patterns if p.startswith("-")]
        self._cache: dict[str, bool] = {}

    def __call__(self, event: str) -> bool:
        hit = self._cache.get(event)
        if hit is None:
            hit = self._decide(event)
            self._cache[event] = hit
        return hit

    def _decide(self, event: str) -> bool:
        if any(fnmatch.fnmatchcase(event, p) for p in ALWAYS):
            return True
        if any(fnmatch.fnmatchcase(event, p) for p in self.exclude):
            return False
        return not self.include or any(fnmatch.fnmatchcase(event, p) for p in self.include)


class EventLog:
    """A tracer for `Machine`: call it with (event, t_ns, fields)."""

    def __init__(self, stream: TextIO, patterns: list[str] | tuple[str, ...] = (), burst: int = 256,
                 window_ns: int = 1_000_000_000) -> None:
        self._stream = stream
        self._log = structlog.wrap_logger(
            structlog.WriteLogger(stream),
            processors=[structlog.processors.JSONRenderer(sort_keys=True)],
        )
        self._filter = TraceFilter(patterns)
        self._burst = burst
        self._window_ns = window_ns
        # (event, cpu) -> [window index, lines logged in it, lines suppressed in it]
        self._windows: dict[tuple[str, Any], list[int]] = {}
        self.lines = 0
        self.last_t_ns = 0
        self.closed = False
        self._declared: set[tuple[str, tuple[str, ...]]] = set()

    def _check(self, event: str, fields: dict[str, Any]) -> None:
        """Every event and field must be in the catalogue (trace_events.py)."""
        key = (event, tuple(fields))
        if key not in self._declared:
            problem = undeclared(event, fields)
            if problem is not None:
                raise ModelError(problem)
            self._declared.add(key)

    def __call__(self, event: str, t_ns: int, fields: dict[str, Any]) -> None:
        self._check(event, fields)
        self.last_t_ns = t_ns
        if self.closed or not self._filter(event):
            return
        key = (event, fields.get("cpu"))
        window = t_ns // self._window_ns
        state = self._windows.get(key)
        if state is None or state[0] != window:
            if state is not None and state[2]:
                self._summarise(key, state, t_ns)
            state = self._windows[key] = [window, 0, 0]
        if state[1] >= self._burst:
            state[2] += 1
            return
        state[1] += 1
        self.write(event, t_ns, fields)

    def write(self, event: str, t_ns: int, fields: dict[str, Any]) -> None:
        self._log.msg(event, t_ns=t_ns, **fields)
        self.lines += 1

    def _summarise(self, key: tuple[str, Any], state: list[int], now_ns: int) -> None:
        event, cpu = key
        start = state[0] * self._window_ns
        self.write("trace_suppressed", min(start + self._window_ns - 1, now_ns),
                   {"cpu": cpu, "suppressed_event": event, "count": state[2], "window_start_ns": start,
                    "window_ns": self._window_ns, "rate_per_s": state[2] * 1_000_000_000 // self._window_ns})
        state[2] = 0

    def end(self, t_ns: int, fields: dict[str, Any]) -> None:
        """Flush the pending summaries and write the last line; later events are dropped."""
        if self.closed:
            return
        self._check("run_end", fields)
        for key, state in self._windows.items():
            if state[2]:
                self._summarise(key, state, t_ns)
        self.write("run_end", t_ns, fields)
        self.closed = True
        self._stream.flush()
