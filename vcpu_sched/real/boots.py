"""Saved boots: a guest booted up to its /init's `ready for the script`, migrated to a file, and restored for
every run that shares the QEMU binary, its command line and the kernel's.

Everything before that line depends on nothing else (`guest.BOOT_INIT`), so a restore skips SLOF and the
kernel's boot (about 15 s of a TCG row here) and is the same guest. It is an incoming migration, so a run
takes one only where the binary's stream carries what the run's mechanism reads (`plan.fresh_boot_reason`).
The boots live in the cache (`kit.cache_dir() / "boots"`), the least recently used removed beyond `KEEP`; a
lock file per boot makes parallel runs wait for the one that saves it instead of booting twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

KEEP = 32  # the matrix on QEMU 11.1 needs 20; each is about 100 MB (zero pages are not sent)
FORMAT = 1  # bump when what a saved boot holds changes
STATE = "state.bin"
CONSOLE = "console.txt"


@dataclass(frozen=True)
class SavedBoot:
    """The migration stream of a guest waiting for its script, and what its console said up to there."""

    state: Path
    console: list[str]


def key(binary: str, argv: list[str], files: list[Path]) -> str:
    """What a boot depends on: the binary (its file), its command line, and the files it loads."""
    def stamp(path: str | Path) -> list[object]:
        st = os.stat(path)
        return [os.path.realpath(path), st.st_size, st.st_mtime_ns]

    text = json.dumps([FORMAT, stamp(binary), argv, [stamp(f) for f in files]])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class Store:
    """The saved boots in `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find(self, name: str) -> SavedBoot | None:
        folder = self.root / name
        state, console = folder / STATE, folder / CONSOLE
        if not (state.is_file() and console.is_file()):
            return None
        os.utime(folder)  # recently used
        return SavedBoot(state, console.read_text().splitlines())

    def staging(self, name: str) -> Path:
        """Where a boot being saved writes its stream (moved in place by `keep`)."""
        folder = self.root / f"{name}.new"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder / STATE

    def keep(self, name: str, staged: Path, console: list[str]) -> SavedBoot:
        (staged.parent / CONSOLE).write_text("".join(f"{line}\n" for line in console))
        folder = self.root / name
        shutil.rmtree(folder, ignore_errors=True)
        staged.parent.rename(folder)
        self._prune()
        return SavedBoot(folder / STATE, console)

    def discard(self, name: str) -> None:
        shutil.rmtree(self.root / f"{name}.new", ignore_errors=True)

    def _prune(self) -> None:
        boots = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.endswith(".new")),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        for old in boots[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def locked(self, name: str) -> AsyncIterator[None]:
        """Hold `name`'s lock (polled, so a run's deadline still cuts the wait short)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{name}.lock", "w") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
