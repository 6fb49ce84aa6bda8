"""The guest kit that `python3 tools/dev.py real-qemu` sets up, and the initramfs a real run boots.

The kit lives outside the repository (`$VCPU_SCHED_REAL_DIR`, else `$XDG_CACHE_HOME/vcpu_sched/real`, else
`~/.cache/vcpu_sched/real`); its `manifest.json` names the QEMU binaries set up there and the kit folder
(Debian's ppc64le `vmlinux`, a static `busybox`, `kexec/` with kexec-tools and its libraries).

The initramfs is two newc cpio archives one after the other, which the kernel unpacks in turn: a base
(busybox, kexec, and for a crash the kernel itself, to load as the kdump kernel), cached by content, and
a small one with `/init` and the kdump kernel's initramfs, the same for every run (the run's own script
comes on the console).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput

SETUP_HINT = "run `python3 tools/dev.py real-qemu` from a checkout of vcpu_sched to set it up"


def cache_dir() -> Path:
    """Where the real-QEMU set-up is kept."""
    if os.environ.get("VCPU_SCHED_REAL_DIR"):
        return Path(os.environ["VCPU_SCHED_REAL_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vcpu_sched" / "real"


@dataclass(frozen=True)
class Kit:
    """The guest kit's files."""

    root: Path
    vmlinux: Path
    busybox: Path
    kexec_root: Path
    kernel_release: str


def find_kit() -> Kit:
    """The kit named by the cache's manifest; bad input (with the way to set it up) when it is missing."""
    manifest = cache_dir() / "kit" / "manifest.json"
    try:
        data = json.loads(manifest.read_text())
        root = manifest.parent
        kit = Kit(root, root / data["vmlinux"], root / data["busybox"], root / data["kexec_root"],
                  str(data.get("kernel_release", "?")))
    except (OSError, ValueError, KeyError, TypeError):
        raise BadInput(f"no guest kit at {manifest.parent}: {SETUP_HINT}") from None
    for path in (kit.vmlinux, kit.busybox):
        if not path.is_file():
            raise BadInput(f"the guest kit lacks {path}: {SETUP_HINT}")
    return kit


def installed_qemus() -> dict[str, str]:
    """Release -> path of each QEMU the set-up installed (empty when there is none)."""
    try:
        data = json.loads((cache_dir() / "manifest.json").read_text())
        return {str(k): str(v) for k, v in data.get("qemu", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


class Cpio:
    """A newc ("070701") cpio archive in memory: what the kernel's initramfs unpacker reads."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        blob = header + name.encode() + b"\0"
        blob += b"\0" * (-len(blob) % 4) + data
        self._parts.append(blob + b"\0" * (-len(blob) % 4))

    def directory(self, name: str) -> None:
        name = name.strip("/")
        if name and name not in self._dirs:
            parent = os.path.dirname(name)
            if parent:
                self.directory(parent)
            self._dirs.add(name)
            self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        self.directory(os.path.dirname(name))
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self.directory(os.path.dirname(name))
        self._entry(name, 0o120777, target.encode())

    def tree(self, source: Path, under: str = "") -> None:
        """Every file, link and folder below `source`, at `under` in the archive."""
        for path in sorted(source.rglob("*")):
            name = f"{under}/{path.relative_to(source)}"
            if path.is_symlink():
                self.symlink(name, os.readlink(path))
            elif path.is_dir():
                self.directory(name)
            else:
                self.file(name, path.read_bytes(), path.stat().st_mode & 0o777)

    def build(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = b"".join(self._parts)
        return data + b"\0" * (-len(data) % 512)


def busybox_root(kit: Kit, archive: Cpio) -> None:
    """busybox at /bin/busybox and the folders /init mounts on."""
    archive.file("bin/busybox", kit.busybox.read_bytes(), 0o755)
    for name in ("bin/sh", "sbin/poweroff"):
        archive.symlink(name, "/bin/busybox")
    for name in ("proc", "sys", "dev", "tmp"):
        archive.directory(name)


def base_initramfs(kit: Kit, with_kernel: bool, work: Path) -> Path:
    """The cached base archive: busybox, kexec-tools, and (for a crash) the kernel to load as kdump kernel."""
    key = hashlib.sha256(f"{kit.vmlinux.stat().st_mtime_ns}:{kit.busybox.stat().st_mtime_ns}:"
                         f"{with_kernel}:3".encode()).hexdigest()[:16]
    path = work / f"base-{key}.cpio"
    if path.exists():
        return path
    archive = Cpio()
    busybox_root(kit, archive)
    if kit.kexec_root.is_dir():
        archive.tree(kit.kexec_root)
    if with_kernel:
        archive.file("vmlinux", kit.vmlinux.read_bytes())
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(archive.build())
    tmp.replace(path)
    return path


def boot_initramfs(kit: Kit, init: str, kdump_init: str | None, work: Path) -> Path:
    """The cached initramfs every run with (or without) a kdump kernel boots: the base, then /init (and
    /kdump.cpio, the kdump kernel's own). A run's own work comes later, on the console."""
    base = base_initramfs(kit, kdump_init is not None, work)
    key = hashlib.sha256(f"{base.name}\0{init}\0{kdump_init}".encode()).hexdigest()[:16]
    path = work / f"boot-{key}.cpio"
    if path.exists():
        return path
    own = Cpio()
    own.file("init", init.encode(), 0o755)
    if kdump_init is not None:
        kdump = Cpio()
        busybox_root(kit, kdump)
        kdump.file("init", kdump_init.encode(), 0o755)
        own.file("kdump.cpio", kdump.build())
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as out:
        out.write(base.read_bytes())
        out.write(own.build())
    tmp.replace(path)
    return path


def check_client() -> None:
    """qemu.qmp, the QEMU project's QMP client: the `real` extra."""
    try:
        import qemu.qmp  # noqa: F401
    except ImportError:
        raise BadInput("real QEMU runs need qemu.qmp: pip install 'vcpu_sched[real]'") from None


def check_binary(path: str, option: str = "--qemu-binary") -> str:
    """`--qemu-binary`: an executable file, or a name on PATH."""
    import shutil

    found = shutil.which(path)
    if found is None:
        raise BadInput(f"{option} {path}: no such executable ({SETUP_HINT}, or install qemu-system-ppc)")
    return found
