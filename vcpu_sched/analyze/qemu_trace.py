"""Reading QEMU's own trace logs (the `log` trace backend), streamed.

Three line formats (util/log.c and the generated trace code of the `log` backend):
- `TID@SECONDS.MICROSECONDS:event args`: QEMU up to 10.0 with `-msg timestamp=on` (TID is gettid()).
- `2025-07-21T18:43:28.089797Z event args`: since commit 012842c075 ("log: make '-msg timestamp=on' apply
  to all qemu_log usage"), with no thread id; `-d tid -D trace-%d.log` gives one file per thread, the TID in
  the file's name.
- `event args`: without `-msg timestamp=on`; only the order of the lines is known.
Other lines (error_report's warnings also go to the `-D` file) are counted and skipped; a line that looks
like none of these is corrupt (counted, with its number, never fatal).

Threads write through one FILE with their timestamps taken before the write, so a file's lines are only
nearly in time order: each file is put back in order through a bounded window (`REORDER_LINES`), and the
files are merged by time. Memory stays bounded by the window and by what the analysis keeps per thread.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Generator, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from ..errors import BadInput
from ..files import MAX_LINE, bounded_lines, cut, open_text_input
from .progress import counted, next_pass

REORDER_LINES = 4096
SNIFF_LINES = 64
SNIFF_BYTES = 1 << 16

# ASCII digits ([0-9], not \d: any Unicode digit), as many as a 64-bit TID or seconds count has.
_TID = re.compile(r"([0-9]{1,19})@([0-9]{1,12})\.([0-9]{1,9}):([A-Za-z_]\w*) ?(.*)")
_ISO = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?Z "
                  r"([A-Za-z_]\w*)(?: (.*))?")
_PLAIN = re.compile(r"([a-z][a-z0-9]*_[a-z0-9_]+)(?: (.*))?")
# A message of error_report/warn_report in the same file: "<stamp> qemu-system-ppc64: warning: ...".
_OTHER = re.compile(r"(?:\d+@\d+\.\d+:|\d{4}-\d\d-\d\dT[\d:.]+Z )?[\w./-]+: ")
_MUTEX = re.compile(r"(?:waiting on|taken|released) mutex (0x[0-9a-fA-F]+|\(nil\)) \((.*):(\d+)\)")
_CPU_INDEX = re.compile(r"cpu_index ([0-9]{1,9})")

FORMATS = ("tid", "iso", "plain")
MUTEX_EVENTS = ("qemu_mutex_lock", "qemu_mutex_locked", "qemu_mutex_unlock")


class TraceLine(NamedTuple):
    t_ns: int  # nanoseconds (epoch for timestamped formats; the line's order for `plain`)
    tid: int | None
    name: str
    args: str
    stamp: str  # the timestamp as the trace wrote it


class Mutex(NamedTuple):
    address: str
    site: str  # file:line of the caller


_mutex_cache: dict[str, Mutex | None] = {}


def mutex_of(line: TraceLine) -> Mutex | None:
    if line.name not in MUTEX_EVENTS:
        return None
    try:
        return _mutex_cache[line.args]  # a trace repeats few (mutex, site) pairs many times
    except KeyError:
        pass
    if len(_mutex_cache) > 65536:
        _mutex_cache.clear()
    m = _MUTEX.fullmatch(line.args)
    mutex = _mutex_cache[line.args] = Mutex(m.group(1), f"{m.group(2)}:{m.group(3)}") if m else None
    return mutex


def cpu_index_of(line: TraceLine) -> int | None:
    if not line.name.startswith("kvm_"):
        return None
    m = _CPU_INDEX.match(line.args)
    return int(m.group(1)) if m else None


class Parsed(NamedTuple):
    line: TraceLine | None
    problem: str | None  # why the line is corrupt; None with no line: not a trace line, skipped


def parse(text: str, fmt: str, order: int, file_tid: int | None) -> Parsed:
    text = text.rstrip("\r\n")
    if fmt == "tid":
        m = _TID.fullmatch(text)
        if m:
            tid, sec, usec, name, args = m.groups()
            frac = (usec + "000000000")[:9]
            return Parsed(TraceLine(int(sec) * 1_000_000_000 + int(frac), int(tid), name, args.rstrip(),
                                    f"{sec}.{usec}"), None)
    elif fmt == "iso":
        m = _ISO.fullmatch(text)
        if m:
            whole, frac, name, args = m.groups()
            seconds = _iso_seconds(whole)
            if seconds is None:
                return Parsed(None, f"{whole}: no such date or time")
            return Parsed(TraceLine(seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0")),
                                    file_tid, name, (args or "").rstrip(), f"{whole}.{frac or '0'}Z"), None)
    else:
        m = _PLAIN.fullmatch(text)
        if m:
            name, args = m.groups()
            return Parsed(TraceLine(order, file_tid, name, (args or "").rstrip(), f"line {order}"), None)
    if not text.strip() or _OTHER.match(text):
        return Parsed(None, None)
    return Parsed(None, f"not a {fmt!r} trace line")


_iso_cache: dict[str, int | None] = {}


def _iso_seconds(whole: str) -> int | None:
    """Seconds since the epoch, or None for a time that does not exist (February 30, year 0, hour 25)."""
    try:
        return _iso_cache[whole]
    except KeyError:
        pass
    if len(_iso_cache) > 4096:
        _iso_cache.clear()
    try:
        seconds: int | None = int(datetime.fromisoformat(whole + "+00:00").timestamp())
    except (ValueError, OverflowError):
        seconds = None
    _iso_cache[whole] = seconds
    return seconds


def sniff(lines: Iterable[str]) -> str | None:
    """The format most of the first lines are in, or None when they are not a QEMU trace."""
    votes = dict.fromkeys(FORMATS, 0)
    seen = 0
    for text in lines:
        if not text.strip():
            continue
        seen += 1
        for fmt in FORMATS:
            line = parse(text, fmt, 0, None).line
            # Any "word_word text" parses as a plain line: plain counts only with what analyze reads.
            if line is not None and (fmt != "plain" or mutex_of(line) is not None or line.name.startswith("kvm_")):
                votes[fmt] += 1
                break
        if seen >= SNIFF_LINES:
            break
    best = max(FORMATS, key=lambda f: votes[f])
    return best if votes[best] and votes[best] * 2 >= seen else None


def file_tid(path: str) -> int | None:
    """The thread id in a per-thread file's name (`-D trace-%d.log`), if any."""
    digits = re.findall(r"[0-9]+", Path(path).name)
    return int(digits[-1]) if digits and len(digits[-1]) <= 19 else None


class Stats:
    """What reading the files found besides the events: counts and the corrupt lines."""

    def __init__(self) -> None:
        self.lines = 0
        self.events = 0
        self.other = 0
        self.out_of_order = 0
        self.corrupt: list[tuple[str, int, str]] = []  # path, line number, why (the first 100)
        self.corrupt_count = 0

    def bad(self, path: str, number: int, why: str) -> None:
        self.corrupt_count += 1
        if len(self.corrupt) < 100:
            self.corrupt.append((path, number, why))


class TraceFiles:
    """One or more trace files of one QEMU run, read again on each `events()` call."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        formats = []
        for path in paths:
            try:
                with open_text_input(path, path) as stream:
                    fmt = sniff(stream.read(SNIFF_BYTES).splitlines())  # bounded: a file may have no newline
            except OSError as e:
                raise BadInput(f"{path}: cannot read: {e.strerror}") from None
            if fmt is None:
                raise BadInput(f"{path}: neither a vcpu_sched event log nor a QEMU trace log (no line of its "
                               f"first {SNIFF_LINES} is in a format of QEMU's log trace backend)")
            formats.append(fmt)
        if len(set(formats)) > 1:
            raise BadInput(f"{', '.join(paths)}: the files are in different trace formats "
                           f"({', '.join(sorted(set(formats)))})")
        self.format = formats[0]
        self.tids = [file_tid(p) if self.format != "tid" else None for p in paths]
        if self.format != "tid" and len(paths) > 1:
            if None in self.tids or len(set(self.tids)) < len(paths):
                raise BadInput("several trace files without thread ids in the lines need one thread id in each "
                               "file's name (QEMU: -d tid -D trace-%d.log)")
            if self.format == "plain":
                raise BadInput("trace lines without timestamps (no -msg timestamp=on) cannot be merged across "
                               "files: analyse one file at a time")
        self.stats = Stats()

    @property
    def timestamps(self) -> bool:
        return self.format != "plain"

    @property
    def thread_ids(self) -> bool:
        return self.format == "tid" or any(t is not None for t in self.tids)

    def events(self) -> Iterator[TraceLine]:
        """Every trace line of every file, in time order; the statistics are counted afresh."""
        self.stats = Stats()
        next_pass()
        streams = [self._ordered(i) for i in range(len(self.paths))]
        yield from heapq.merge(*streams, key=lambda line: line.t_ns) if len(streams) > 1 else streams[0]

    def _ordered(self, index: int) -> Iterator[TraceLine]:
        path, tid, stats = self.paths[index], self.tids[index], self.stats
        window: list[tuple[int, int, TraceLine]] = []
        emitted = -1
        with open_text_input(path, path) as stream:
            for number, text in enumerate(counted(bounded_lines(stream)), 1):
                stats.lines += 1
                if cut(text, MAX_LINE):
                    stats.bad(path, number, f"longer than {MAX_LINE} characters")
                    continue
                if "\x00" in text or "\ufffd" in text:
                    stats.bad(path, number, "binary data")
                    continue
                parsed = parse(text, self.format, number, tid)
                if parsed.line is None:
                    if parsed.problem is None:
                        stats.other += bool(text.strip())
                    elif text.endswith("\n"):
                        stats.bad(path, number, parsed.problem)
                    else:
                        stats.bad(path, number, "truncated last line")
                    continue
                if parsed.line.name in MUTEX_EVENTS and mutex_of(parsed.line) is None:
                    stats.bad(path, number, f"{parsed.line.name}: arguments are not 'MUTEX (FILE:LINE)'")
                    continue
                stats.events += 1
                heapq.heappush(window, (parsed.line.t_ns, number, parsed.line))
                if len(window) > REORDER_LINES:
                    emitted = yield from _emit(heapq.heappop(window)[2], emitted, stats)
        while window:
            emitted = yield from _emit(heapq.heappop(window)[2], emitted, stats)


def _emit(line: TraceLine, emitted: int, stats: Stats) -> Generator[TraceLine, None, int]:
    """Yield a line, never earlier than the last one (a line later than the window could mend)."""
    if line.t_ns < emitted:
        stats.out_of_order += 1
        line = line._replace(t_ns=emitted)
    yield line
    return line.t_ns
