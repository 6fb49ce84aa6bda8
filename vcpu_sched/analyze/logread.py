"""Reading an event log: streamed, tolerant of a truncated tail and of damaged lines, strict about what a
log is and about impossible values.

A file is a log when a `run_start` line with valid settings is found among its first lines. A line is
corrupt - counted, with its number and the reason, and skipped - when it is not a JSON object with
`event` and an integer `t_ns`, when its event or a field is not in the catalogue (trace_events.py), when a
value is impossible (a negative duration, a CPU index beyond smp or maxcpus, a verdict that does not exist), or when
its time runs backwards. A log without `run_end` as its last event is truncated: a killed run.

The events are never all held in memory: `Log.events()` reads the file again each time it is called, so
a 50 MB log costs the memory of what the analysis keeps, not of the log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput, shown
from ..files import MAX_LINE, bounded_lines, cut, open_input, open_text_input
from ..trace_events import undeclared
from ..verdicts import VERDICTS
from .progress import counted, next_pass

HEADER_SEARCH_LINES = 5
EXPLORE_VERDICTS = ("deadlock", "bound", "pruned")
_NON_NEGATIVE_INTS = ("held_ns", "waited_ns", "count", "iterations", "skipped_iterations", "rate_per_s", "window_ns",
                      "window_start_ns", "cpus_online", "steps")
_NON_NEGATIVE_NUMBERS = ("guest_time_s", "held_for_s")


@dataclass
class Log:
    path: str
    settings: dict[str, Any]
    lines: Callable[[], Iterable[str]]  # the raw lines, from the start, each time it is called
    corrupt: list[tuple[int, str]] = field(default_factory=list)  # line number, why
    last_line: int = 0
    count: int = 0  # valid events
    end: dict[str, Any] | None = None  # the run_end event, when it is the last one
    last_event: str = ""
    end_ns: int = 0

    @property
    def corrupt_lines(self) -> list[int]:
        return [number for number, _ in self.corrupt]

    @property
    def truncated(self) -> bool:
        return self.end is None

    def events(self) -> Iterator[dict[str, Any]]:
        """Every valid event, in order (read and checked again)."""
        for _, event, problem in _scan(self.lines(), None):
            if problem is None and event is not None:
                yield event


def _settings_problem(settings: Any) -> str | None:
    from ..scenario import check_settings

    if not isinstance(settings, dict):
        return "settings: not a table"
    try:
        check_settings("settings", {k: v for k, v in settings.items() if k != "scenario"})
    except BadInput as e:
        return str(e)
    return None


def _cpu_slots(settings: dict[str, Any]) -> int:
    """How many vCPUs the run can have: smp, or maxcpus when CPUs may be hotplugged."""
    return max((v for v in (settings.get("smp"), settings.get("maxcpus"))
                if isinstance(v, int) and not isinstance(v, bool)), default=0)


def _value_problem(event: dict[str, Any], smp: int) -> str | None:
    cpu = event.get("cpu")
    if "cpu" in event and cpu != "main" and not (isinstance(cpu, int) and not isinstance(cpu, bool)
                                                  and 0 <= cpu < max(smp, 1)):
        return f"cpu {shown(cpu)} is neither 'main' nor a vCPU index below {smp} (smp, or maxcpus)"
    for key in _NON_NEGATIVE_INTS:
        value = event.get(key)
        if key in event and value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                                        and value >= 0):
            return f"{key} {shown(value)} is not a count or a duration"
    for key in _NON_NEGATIVE_NUMBERS:
        value = event.get(key)
        if key in event and value is not None and not (isinstance(value, int | float) and not isinstance(value, bool)
                                                        and value >= 0):
            return f"{key} {shown(value)} is not a non-negative number"
    if event["event"] in ("run_verdict", "run_end") and "verdict" in event:
        verdict = event["verdict"]
        if verdict is not None and verdict not in VERDICTS and verdict not in EXPLORE_VERDICTS:
            return f"verdict {shown(verdict)} is not a verdict"
    if "thread" in event and not isinstance(event["thread"], str):
        return f"thread {shown(event['thread'])} is not a thread name"
    return None


def _scan(lines: Iterable[str], settings: dict[str, Any] | None) -> Iterator[tuple[int, dict[str, Any] | None,
                                                                                   str | None]]:
    """(line number, event, why it is corrupt or None) for every non-blank line; `settings` None means the
    header is still to be found (and checked)."""
    smp = _cpu_slots(settings) if settings else 0
    last_t = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if cut(line, MAX_LINE):
            yield number, None, f"longer than {MAX_LINE} characters"
            continue
        try:
            event = json.loads(line)
        except ValueError:  # numbers beyond Python's int-string limit too
            yield number, None, "not JSON"
            continue
        except RecursionError:
            yield number, None, "not JSON (arrays or objects nested too deep)"
            continue
        if not (isinstance(event, dict) and isinstance(event.get("event"), str)
                and isinstance(event.get("t_ns"), int) and not isinstance(event.get("t_ns"), bool)):
            yield number, None, "not an event (event name and integer t_ns)"
            continue
        t = event["t_ns"]
        name = event["event"]
        fields = {k: v for k, v in event.items() if k not in ("event", "t_ns")}
        problem = undeclared(name, fields)
        if problem is None and not 0 <= t < 1 << 63:
            problem = f"t_ns {t} is not a guest time"
        if problem is None and t < last_t:
            problem = f"time runs backwards: t_ns {t} after {last_t}"
        if problem is None and name == "run_start":
            if settings is not None:
                problem = "a second run_start"
            elif number > HEADER_SEARCH_LINES:
                problem = "run_start is not at the top"
            else:
                problem = _settings_problem(event.get("settings"))
                if problem is None:
                    settings = event["settings"]
                    smp = _cpu_slots(settings)
        if problem is None and name != "run_start" and settings is None:
            problem = "an event before run_start"
        if problem is None:
            problem = _value_problem(event, int(smp))
        if problem is None:
            last_t = t
        yield number, event if problem is None else None, problem


def open_log(path: str, lines: Callable[[], Iterable[str]]) -> Log:
    """Check a log in one pass: its header, its corrupt lines, how it ends."""
    log = Log(path, {}, lines)
    settings: dict[str, Any] | None = None
    for number, event, problem in _scan(lines(), None):
        log.last_line = number
        if problem is not None:
            log.corrupt.append((number, problem))
            continue
        assert event is not None
        if event["event"] == "run_start":
            settings = event["settings"]
        log.count += 1
        log.last_event = event["event"]
        log.end = event if event["event"] == "run_end" else None
        log.end_ns = max(log.end_ns, event["t_ns"])
    if settings is None:
        first = next((f"line {n}: {why}" for n, why in log.corrupt if n <= HEADER_SEARCH_LINES), "")
        raise BadInput(f"{path}: not a vcpu_sched event log (no valid run_start line at the top"
                       f"{'; ' + first if first else ''})")
    log.settings = settings
    return log


def parse_lines(lines: list[str], path: str = "<log>") -> Log:
    return open_log(path, lambda: lines)


def read_log(path: str | Path) -> Log:
    name = str(path)
    try:
        with open_input(name, path) as probe:
            probe.read(1)
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}") from None

    def lines() -> Iterator[str]:
        next_pass()
        with open_text_input(name, path) as stream:
            yield from counted(bounded_lines(stream))

    return open_log(name, lines)
