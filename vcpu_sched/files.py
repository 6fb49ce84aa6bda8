"""Input files that are regular files, and output files that are never half-written and never written over
an input (resolved: a scenario found by name, a symbolic or hard link to an input count as that input).

Every output but the event log (perfetto traces, plots, schedule files) is written to a temporary file in
the same directory and renamed over the target only once complete, so a failed or interrupted command
leaves an existing file as it was. The event log streams to its path instead, so that what a killed run
logged is kept; it is opened only after every input has been checked. A new output gets the mode the
umask gives a new file; one written over keeps its own.

Inputs are opened without blocking and must be regular files: a FIFO, a device or a directory given as
input is refused at once instead of waited on for ever. Lines are read with a bounded length, so that a
file that is one huge line is refused without being held whole.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, TextIO

from .errors import BadInput

MAX_LINE = 1 << 20  # characters: the longest line an input may have (a log's header is a few kB)

# What this command has read and what it will write, for check_output: a scenario found by name is an
# input the caller never sees as a path. Emptied when a command starts (cli.main).
_read: list[Path] = []
_written: list[tuple[str, Path]] = []


def begin_command() -> None:
    _read.clear()
    _written.clear()


def note_input(path: str | Path) -> None:
    """`path` is an input of this command: no output may be written over it."""
    _read.append(Path(path))


def _same(a: Path, b: str | Path) -> bool:
    """The same file: the same resolved name, or (hard links) the same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return what
    return "not a regular file"


def check_output(option: str, path: str | Path, inputs: tuple[str | Path, ...] = (), regular: bool = False) -> Path:
    """`path` can be written: its directory exists, it is not a directory, it is none of `inputs` nor of the
    inputs this command has read (note_input) nor another output of it; with `regular`, an existing
    `path` must be a regular file (a database appended to, never a FIFO that would block)."""
    if not str(path):
        raise BadInput(f"{option}: empty file name")
    try:
        target = _check_output(option, path, (*inputs, *_read), regular)
    except OSError as e:  # a directory on the way that cannot be searched, a name too long
        raise BadInput(f"{option} {path}: {e.strerror}") from None
    _written.append((option, target))
    return target


def _check_output(option: str, path: str | Path, inputs: tuple[str | Path, ...], regular: bool) -> Path:
    target = Path(path)
    if target.is_dir():
        raise BadInput(f"{option} {path}: is a directory")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise BadInput(f"{option} {path}: no such directory {parent}")
    if not os.access(parent, os.W_OK):
        raise BadInput(f"{option} {path}: directory {parent} is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        raise BadInput(f"{option} {path}: is not writable")
    if regular and target.exists() and not target.is_file():
        raise BadInput(f"{option} {path}: is {_kind(target.stat().st_mode)}, not a regular file")
    for source in inputs:
        if _same(target, source):
            raise BadInput(f"{option} {path}: is the input file {source}; choose another name")
    for other, written in _written:
        if _same(target, written):
            raise BadInput(f"{option} {path}: is also the {other} file; choose another name")
    return target


def _regular_opener(where: str) -> Callable[[str, int], int]:
    """An opener that opens without blocking (a FIFO would wait for a writer) and refuses anything but a
    regular file; the descriptor it returns blocks as usual."""

    def opener(name: str, flags: int) -> int:
        fd = os.open(name, flags | os.O_NONBLOCK)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise BadInput(f"{where}: is {_kind(mode)}, not a regular file")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    return opener


def open_input(where: str, path: str | Path) -> BinaryIO:
    """An input file for reading (bytes): a regular file, never waited on."""
    return open(path, "rb", opener=_regular_opener(where))


def open_text_input(where: str, path: str | Path) -> TextIO:
    """An input file for reading as UTF-8 text, damaged bytes replaced: a regular file, never waited on."""
    return open(path, encoding="utf-8", errors="replace", opener=_regular_opener(where))


def bounded_lines(stream: TextIO, limit: int = MAX_LINE) -> Iterator[str]:
    """The lines of `stream`, none held longer than `limit` characters: a longer one comes as its first
    `limit + 1` characters without its newline (see `cut`), the rest of it read and dropped."""
    while line := stream.readline(limit + 1):
        if cut(line, limit):
            rest = line
            while rest and not rest.endswith("\n"):
                rest = stream.readline(limit)
        yield line


def cut(line: str, limit: int = MAX_LINE) -> bool:
    """A line bounded_lines cut short."""
    return len(line) > limit and not line.endswith("\n")


def _mode_for(target: Path) -> int:
    """The mode `open(target, "w")` would leave: the file's own if it exists, else 0666 less the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mask = os.umask(0o022)  # the only way to read the umask; put back at once
        os.umask(mask)
        return 0o666 & ~mask


@contextlib.contextmanager
def _beside(option: str, path: str | Path) -> Iterator[str]:
    """A temporary file next to `path` (same suffix, so a library can tell the format), renamed over
    `path` if the block completes, removed otherwise."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=parent)
        os.close(fd)
        os.chmod(tmp, _mode_for(target))  # mkstemp's 0600 is for secrets: this is an ordinary output
    except OSError as e:
        raise BadInput(f"{option} {path}: {e.strerror}") from None
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as e:
        raise BadInput(f"{option} {path}: {e.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_output(option: str, path: str | Path) -> Iterator[TextIO]:
    """Write text to a temporary file next to `path`; it replaces `path` only if the block completes."""
    with _beside(option, path) as tmp, open(tmp, "w", encoding="utf-8", buffering=1) as out:
        yield out


def atomic_write(option: str, path: str | Path, write: Callable[[str], None]) -> None:
    """Let `write(temporary_path)` produce the file (a library that wants a path), then rename it."""
    with _beside(option, path) as tmp:
        write(tmp)


class Appendable(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class AppendLater:
    """A text file opened for appending at its first write: a command that fails before it has anything
    to write, or finds nothing, creates no file (`sweep --db`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def write(self, text: str) -> int:
        if self._file is None:  # opened without blocking: a FIFO put here since the check is refused
            self._file = open(self.path, "a", encoding="utf-8",  # noqa: SIM115 - closed by close()
                              opener=_regular_opener(str(self.path)))
        return self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
