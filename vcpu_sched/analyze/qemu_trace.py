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
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import chain, islice
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

from ..errors import BadInput
from ..files import MAX_LINE, open_input, open_text_input
from .lineblocks import LineBlocks
from .progress import current, next_pass

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
# _TID over a block of whole lines, one match a line: a trace line's thread id, stamp (as one besides its two
# numbers) and the rest, its event and arguments (_EVENT splits them), or the whole of any other line as the
# last group. A trace repeats few rests many times, so each is split once (TraceFiles._events).
_TID_LINES = re.compile(r"^(?:([0-9]{1,19})@(([0-9]{1,12})\.([0-9]{1,9})):(.*)|(.*))$", re.M)
_EVENT = re.compile(r"([A-Za-z_]\w*) ?(.*)")
_NS_PER_DIGITS = [10 ** (9 - n) for n in range(10)]  # a fraction of n digits, in nanoseconds per unit
# Pass one's look at the mutex events: a `taken` mutex (qemu_mutex_locked) and its caller's file:line at the end
# of a line, found in blocks of bytes by one search each (qemu_summary checks what it suggests in pass two, line
# by line, counting every mutex event).
# One group, "MUTEX (FILE:LINE" (a string is quicker to make and count than a pair), split once counted.
_MUTEX_SCAN = re.compile(rb" taken mutex ((?:0x[0-9a-fA-F]+|\(nil\)) \([^\n]*:[0-9]+)\)[ \t\r]*$", re.M)
SCAN_BLOCK = 1 << 18
BATCH = 512  # lines handed on at a time
EVENTS_KEPT = 4096  # the different events (with their arguments) split and kept, at most: their memory is bounded
_time = itemgetter(0)  # a Line's time
_MUTEX_EVENTS = frozenset(("qemu_mutex_lock", "qemu_mutex_locked", "qemu_mutex_unlock"))

FORMATS = ("tid", "iso", "plain")
MUTEX_EVENTS = ("qemu_mutex_lock", "qemu_mutex_locked", "qemu_mutex_unlock")


class Mutex(NamedTuple):
    address: str
    site: str  # file:line of the caller


class TraceLine(NamedTuple):
    t_ns: int  # nanoseconds (epoch for timestamped formats; the line's order for `plain`)
    tid: int | None
    name: str
    args: str
    stamp: str  # the timestamp as the trace wrote it
    mutex: Mutex | None = None  # a qemu_mutex_* event's mutex and site, as the reader checked them


Line = tuple[int, int | None, str, str, str, Mutex | None]  # a TraceLine's fields, as the reader hands them on


_mutex_cache: dict[str, Mutex | None] = {}


def mutex_of(line: TraceLine) -> Mutex | None:
    if line.name not in MUTEX_EVENTS:
        return None
    if line.mutex is not None:
        return line.mutex
    try:
        return _mutex_cache[line.args]  # a trace repeats few (mutex, site) pairs many times
    except KeyError:
        return _mutex_of_args(line.args)


def _mutex_of_args(args: str) -> Mutex | None:
    if len(_mutex_cache) > 65536:
        _mutex_cache.clear()
    m = _MUTEX.fullmatch(args)
    mutex = _mutex_cache[args] = Mutex(m.group(1), f"{m.group(2)}:{m.group(3)}") if m else None
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


def _take(line: Line, batch: list[Line], emitted: int, late: int) -> tuple[int, int]:
    """A line out of the window, never before the last one out: a line later than that comes out at its time."""
    if line[0] < emitted:
        batch.append((emitted, *line[1:]))
        return emitted, late + 1
    batch.append(line)
    return line[0], late


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
        self._tid_numbers: dict[str, int] = {}
        self._events: dict[str, tuple[str, str, Mutex | None]] = {}  # a line's rest -> its name, args and mutex
        self._seconds: dict[str, int] = {}

    @property
    def timestamps(self) -> bool:
        return self.format != "plain"

    @property
    def thread_ids(self) -> bool:
        return self.format == "tid" or any(t is not None for t in self.tids)

    def events(self) -> Iterator[TraceLine]:
        """Every trace line of every file, in time order; the statistics are counted afresh."""
        return map(TraceLine._make, chain.from_iterable(self.batches()))

    def batches(self) -> Iterator[list[Line]]:
        """The same lines as `events()`, handed on a list at a time; for speed, a line may be a plain tuple of
        TraceLine's fields (read them by index)."""
        self.stats = Stats()
        next_pass()
        streams = [self._ordered(i) for i in range(len(self.paths))]
        if len(streams) == 1:
            yield from streams[0]
            return
        merged = heapq.merge(*(chain.from_iterable(s) for s in streams), key=itemgetter(0))
        while batch := list(islice(merged, BATCH)):
            yield batch

    def mutex_sites(self) -> Counter[tuple[str, str]]:
        """Pass one: how many times each mutex is taken at each site (`taken mutex` lines). A search over
        blocks of the files' bytes, not a parse of each line: a close count that pass two checks."""
        next_pass()
        progress = current()
        found: Counter[bytes] = Counter()
        for path in self.paths:
            with open_input(path, path) as stream:
                tail = b""
                while block := stream.read(SCAN_BLOCK):
                    block = tail + block
                    end = block.rfind(b"\n") + 1
                    tail = block[end:] if len(block) - end <= MAX_LINE else b""  # a line too long is corrupt
                    found.update(_MUTEX_SCAN.findall(block, 0, end))
                    if progress is not None:
                        progress.advance(len(block) - len(tail))
                found.update(_MUTEX_SCAN.findall(tail))
        out: Counter[tuple[str, str]] = Counter()
        for taken, n in found.items():
            address, site = taken.split(b" (", 1)
            out[address.decode("utf-8", "replace"), site.decode("utf-8", "replace")] += n
        return out

    def _ordered(self, index: int) -> Iterator[list[Line]]:
        """One file's lines, in time order through a window of REORDER_LINES lines: a line comes out once
        REORDER_LINES later ones are in (sorted by time, then by line number), never before the last one out."""
        stats = self.stats
        window: list[Line] = []  # sorted by time, then by line number
        batch: list[Line] = []
        emitted = -1
        out_of_order = 0
        first = _time
        try:
            for lines in self._checked(index):
                times = list(map(first, lines))
                out = len(window) + len(lines) - REORDER_LINES  # how many lines come out for these
                if 0 < out <= len(window) and (earliest := min(times)) >= window[out - 1][0] and \
                        window[0][0] >= emitted:
                    # No line of the block goes before those that come out, nor later than the window can mend:
                    # what inserting and taking out one at a time would do, for the whole block at once.
                    batch += window[:out]
                    emitted = window[out - 1][0]
                    in_order = times[0] >= window[-1][0] and times == sorted(times)
                    del window[:out]
                    kept = len(window)
                    window += lines
                    if not in_order:  # sorted from the first line later than the block's earliest, stably: a
                        # line after those of its time already in
                        start = bisect_right(window, earliest, 0, kept, key=first)
                        window[start:] = sorted(window[start:], key=first)
                else:
                    emitted, late = self._one_by_one(window, lines, batch, emitted)
                    out_of_order += late
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
            emitted, late = self._one_by_one(window, [], batch, emitted, flush=True)
            out_of_order += late
            if batch:
                yield batch
        finally:
            stats.out_of_order += out_of_order

    @staticmethod
    def _one_by_one(window: list[Line], lines: list[Line], batch: list[Line], emitted: int,
                    flush: bool = False) -> tuple[int, int]:
        """_ordered's window, a line at a time: each line in after the last one not later than it, the first
        out once the window is full (all of them with `flush`). Returns the last time out and how many lines
        were later than the window could mend (they come out at that time)."""
        late = 0
        for line in lines:
            t = line[0]
            if not window or t >= window[-1][0]:
                window.append(line)
            else:  # after the last line of the window not later than it: heapq's (t_ns, number) order
                window.insert(bisect_right(window, t, key=_time), line)
            if len(window) > REORDER_LINES:
                emitted, late = _take(window.pop(0), batch, emitted, late)
        if flush:
            for line in window:
                emitted, late = _take(line, batch, emitted, late)
            window.clear()
        return emitted, late

    def _checked(self, index: int) -> Iterator[list[Line]]:
        """One file's trace lines, a block of the file at a time; every line counted, the others skipped and
        the damaged ones noted. In the `tid` format a block's lines are matched by one findall."""
        path, stats = self.paths[index], self.stats
        number = 0
        findall = _TID_LINES.findall if self.format == "tid" else None
        blocks = LineBlocks(path, path, joined=findall is not None)
        try:
            for texts in blocks:
                lines: list[Line] = []
                if blocks.cut:  # its first line is longer than MAX_LINE
                    number += 1
                    stats.bad(path, number, f"longer than {MAX_LINE} characters")
                    texts = texts[1:]
                    if not texts:
                        continue
                if blocks.unterminated:  # the file's last line, with no newline
                    number += 1
                    self._line(texts[0], number, index, lines)
                elif findall is not None:
                    text = texts[0]  # the block's lines, joined
                    if "\x00" not in text and "\ufffd" not in text:
                        number = self._tid_block(findall(text), number, index, lines)
                    else:
                        for one in text.split("\n"):
                            number += 1
                            self._line(one + "\n", number, index, lines)
                else:
                    for text in texts:
                        number += 1
                        self._line(text + "\n", number, index, lines)
                if lines:
                    yield lines
        finally:
            stats.lines += number

    def _tid_block(self, found: list[tuple[str, ...]], number: int, index: int, lines: list[Line]) -> int:
        """The lines of a block in the `tid` format (_TID_LINES' groups), with no binary data: parse() of each,
        without its calls."""
        stats = self.stats
        add = lines.append
        scale = _NS_PER_DIGITS
        events = self._events
        tids = self._tid_numbers
        seconds = self._seconds
        before = len(lines)
        first = number + 1
        for number, (tid_text, stamp, sec, frac, rest, other) in enumerate(found, first):
            event = events.get(rest)
            if event is None:
                event = self._event(rest) if tid_text else None
                if event is None:  # not a trace line, or not an event's: what parse() makes of it
                    added = len(lines)
                    self._line(f"{tid_text}@{stamp}:{rest}\n" if tid_text else other + "\n", number, index, lines)
                    before += len(lines) - added  # counted by _line
                    continue
            name, args, mutex = event
            tid = tids.get(tid_text)
            if tid is None:
                tid = tids[tid_text] = int(tid_text)
            base = seconds.get(sec)
            if base is None:
                if len(seconds) > 4096:
                    seconds.clear()
                base = seconds[sec] = int(sec) * 1_000_000_000
            add((base + int(frac) * scale[len(frac)], tid, name, args, stamp, mutex))  # a TraceLine's fields
        stats.events += len(lines) - before
        return number

    def _event(self, rest: str) -> tuple[str, str, Mutex | None] | None:
        """A `tid` line's event name, arguments and mutex from what follows its stamp, kept for the next line
        with the same; None when it is not an event, or a mutex event without a mutex and site."""
        m = _EVENT.fullmatch(rest)
        if m is None:
            return None
        name, args = m.groups()
        args = args.rstrip()
        mutex = None
        if name in _MUTEX_EVENTS:
            mutex = _mutex_of_args(args)  # once per different rest: the split is kept in _events
            if mutex is None:
                return None
        if len(self._events) > EVENTS_KEPT:
            self._events.clear()
        event = self._events[rest] = (name, args, mutex)
        return event

    def _line(self, text: str, number: int, index: int, lines: list[Line]) -> None:
        """One line as read (with its newline, unless it is the file's unfinished last line)."""
        path, stats = self.paths[index], self.stats
        if "\x00" in text or "\ufffd" in text:
            stats.bad(path, number, "binary data")
            return
        parsed = parse(text, self.format, number, self.tids[index])
        line = parsed.line
        if line is None:
            if parsed.problem is None:
                stats.other += bool(text.strip())
            elif text.endswith("\n"):
                stats.bad(path, number, parsed.problem)
            else:
                stats.bad(path, number, "truncated last line")
            return
        if line.name in MUTEX_EVENTS:
            mutex = mutex_of(line)
            if mutex is None:
                stats.bad(path, number, f"{line.name}: arguments are not 'MUTEX (FILE:LINE)'")
                return
            line = line._replace(mutex=mutex)
        stats.events += 1
        lines.append(line)
