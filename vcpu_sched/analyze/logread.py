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
import json.scanner
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from ..errors import BadInput, shown
from ..files import MAX_LINE, cut, open_input
from ..trace_events import undeclared
from ..verdicts import VERDICTS
from .lineblocks import LineBlocks
from .progress import next_pass

HEADER_SEARCH_LINES = 5
EXPLORE_VERDICTS = ("deadlock", "bound", "pruned")
_NON_NEGATIVE_INTS = ("held_ns", "waited_ns", "count", "iterations", "skipped_iterations", "rate_per_s", "window_ns",
                      "window_start_ns", "cpus_online", "steps")
_NON_NEGATIVE_NUMBERS = ("guest_time_s", "held_for_s")
# json.loads without its two regular expressions and calls: the decoder's scanner at the line's first
# character; json.loads itself for whatever that does not take (leading blanks, extra data, errors).
_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_JSON_BLANKS = " \t\n\r"  # json's WHITESPACE


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
    # What the lines' source is now (a file's size, modification time and inode), and what it was when open_log
    # began to check them: the same, and events() need not check them again.
    version: Callable[[], Any] | None = None
    checked: Any = None

    @property
    def corrupt_lines(self) -> list[int]:
        return [number for number, _ in self.corrupt]

    @property
    def truncated(self) -> bool:
        return self.end is None

    def events(self) -> Iterator[dict[str, Any]]:
        """Every valid event, in order, read again. The lines open_log checked are not checked again when their
        source is as it was then (its corrupt lines are skipped by their numbers); lines past them (a log still
        being written) are, as open_log would have; any other change, and every line is checked again."""
        if self.version is None or self.checked is None or self.version() != self.checked:
            for _, event, problem in _scan(self.lines(), None):
                if problem is None and event is not None:
                    yield event
            return
        skip = {number for number, _ in self.corrupt}
        last = self.last_line
        scan, loads = _scan_json, json.loads
        lines = iter(self.lines())
        for number, line in enumerate(lines, 1):
            if number > last:  # written since open_log read the file: checked
                for _, event, problem in _scan(chain((line,), lines), self.settings, number, self.end_ns):
                    if problem is None and event is not None:
                        yield event
                return
            if number in skip:
                continue
            if line[:1] == "{":
                try:
                    event = scan(line, 0)[0]  # open_log found it a JSON object, nothing after it but blanks
                except (StopIteration, ValueError, RecursionError):
                    event = loads(line)
            elif not line.strip():
                continue
            else:
                event = loads(line)
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


def _scan(lines: Iterable[str], settings: dict[str, Any] | None, start: int = 1,
          last_t: int = 0) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, event, why it is corrupt or None) for every non-blank line; `settings` None means the
    header is still to be found (and checked); `start`, `last_t`: the first line's number and the time of the
    last valid event before it, to go on where a scan stopped. A line most lines are like - a JSON object of a declared
    event and fields with plain values, in time order, after the header - takes a short way through; any
    other the checks of _check_line, which say what is wrong."""
    smp = int(_cpu_slots(settings)) if settings else 0
    cpus = max(smp, 1)
    plans: dict[tuple[str, ...], tuple[tuple[str, int], ...] | bool | None] = {}
    scan, loads = _scan_json, json.loads
    limit = MAX_LINE
    for number, line in enumerate(lines, start):
        if settings is not None and line[:1] == "{" and len(line) <= limit:
            try:
                event, end = scan(line, 0)
            except (StopIteration, ValueError, RecursionError):
                event = None
            else:
                if end != len(line) and line[end:].strip(_JSON_BLANKS):
                    event = None
            if type(event) is dict:
                name = event.get("event")
                t = event.get("t_ns")
                if type(name) is str and type(t) is int and last_t <= t < 1 << 63 and name != "run_start":
                    key = (name, *event)
                    plan = plans.get(key, False)
                    if plan is False:
                        if len(plans) > 4096:
                            plans.clear()
                        plan = plans[key] = _plan(name, event)
                    if plan is not None and _plain_values(event, plan, cpus):  # type: ignore[arg-type]
                        last_t = t
                        yield number, event, None
                        continue
        # Everything else, as the checks have always been made.
        if not line.strip():
            continue
        if cut(line, MAX_LINE):
            yield number, None, f"longer than {MAX_LINE} characters"
            continue
        try:
            event = loads(line)
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
                    smp = int(_cpu_slots(settings))
                    cpus = max(smp, 1)
        if problem is None and name != "run_start" and settings is None:
            problem = "an event before run_start"
        if problem is None:
            problem = _value_problem(event, int(smp))
        if problem is None:
            last_t = t
        yield number, event if problem is None else None, problem


_CPU, _COUNT, _NUMBER, _VERDICT, _THREAD = range(5)


def _plan(name: str, event: dict[str, Any]) -> tuple[tuple[str, int], ...] | None:
    """The value checks of _value_problem an event of this name with these fields needs, in its order; None
    when its name or a field is not declared (the long way says which)."""
    if undeclared(name, {k: None for k in event if k not in ("event", "t_ns")}) is not None:
        return None
    checks = [("cpu", _CPU)] if "cpu" in event else []
    checks += [(key, _COUNT) for key in _NON_NEGATIVE_INTS if key in event]
    checks += [(key, _NUMBER) for key in _NON_NEGATIVE_NUMBERS if key in event]
    if name in ("run_verdict", "run_end") and "verdict" in event:
        checks.append(("verdict", _VERDICT))
    if "thread" in event:
        checks.append(("thread", _THREAD))
    return tuple(checks)


def _plain_values(event: dict[str, Any], plan: tuple[tuple[str, int], ...], cpus: int) -> bool:
    """_value_problem(event, smp) is None, for an event whose fields `plan` was made for; cpus: max(smp, 1)."""
    for key, check in plan:
        value = event[key]
        kind = type(value)
        if check == _CPU:
            if value != "main" and not (kind is int and 0 <= value < cpus):
                return False
        elif check == _COUNT:
            if value is not None and not (kind is int and value >= 0):
                return False
        elif check == _NUMBER:
            if value is not None and not ((kind is int or kind is float) and value >= 0):
                return False
        elif check == _VERDICT:
            if value is not None and value not in VERDICTS and value not in EXPLORE_VERDICTS:
                return False
        elif kind is not str:
            return False
    return True


def open_log(path: str, lines: Callable[[], Iterable[str]], version: Callable[[], Any] | None = None) -> Log:
    """Check a log in one pass: its header, its corrupt lines, how it ends. `version`: what the lines' source
    is now (see Log)."""
    log = Log(path, {}, lines, version=version, checked=version() if version is not None else None)
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
        if event["t_ns"] > log.end_ns:
            log.end_ns = event["t_ns"]
    if settings is None:
        first = next((f"line {n}: {why}" for n, why in log.corrupt if n <= HEADER_SEARCH_LINES), "")
        raise BadInput(f"{path}: not a vcpu_sched event log (no valid run_start line at the top"
                       f"{'; ' + first if first else ''})")
    log.settings = settings
    return log


def parse_lines(lines: list[str], path: str = "<log>") -> Log:
    return open_log(path, lambda: lines, lambda: len(lines))


def read_log(path: str | Path) -> Log:
    name = str(path)
    try:
        with open_input(name, path) as probe:
            probe.read(1)
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}") from None

    def lines() -> Iterator[str]:
        next_pass()
        return chain.from_iterable(LineBlocks(name, path))

    def version() -> tuple[int, ...] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev

    return open_log(name, lines, version)
