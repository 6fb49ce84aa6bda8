"""Output files that are never half-written and never written over an input.

Every output but the event log (perfetto traces, plots, schedule files) is written to a temporary file in
the same directory and renamed over the target only once complete, so a failed or interrupted command
leaves an existing file as it was. The event log streams to its path instead, so that what a killed run
logged is kept; it is opened only after every input has been checked.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TextIO

from .errors import BadInput


def check_output(option: str, path: str | Path, inputs: tuple[str | Path, ...] = ()) -> Path:
    """`path` can be written: its directory exists, it is not a directory, and it is none of `inputs`."""
    if not str(path):
        raise BadInput(f"{option}: empty file name")
    try:
        return _check_output(option, path, inputs)
    except OSError as e:  # a directory on the way that cannot be searched, a name too long
        raise BadInput(f"{option} {path}: {e.strerror}") from None


def _check_output(option: str, path: str | Path, inputs: tuple[str | Path, ...]) -> Path:
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
    for source in inputs:
        with contextlib.suppress(OSError):
            if target.exists() and os.path.samefile(target, source):
                raise BadInput(f"{option} {path}: is the input file; choose another name")
    return target


@contextlib.contextmanager
def _beside(option: str, path: str | Path) -> Iterator[str]:
    """A temporary file next to `path` (same suffix, so a library can tell the format), renamed over
    `path` if the block completes, removed otherwise."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=parent)
        os.close(fd)
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
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        return self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
