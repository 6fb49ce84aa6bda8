#!/usr/bin/env python3
"""Set up, once and outside the repository, what real pseries guests under TCG need, and print where it is.

    python3 tools/real_qemu.py [--with-5.2]     # or: python3 tools/dev.py real-qemu

Debian (bookworm) as root only: it installs host packages with apt-get when they are missing. The cache is
$VCPU_SCHED_REAL_DIR, else $XDG_CACHE_HOME/vcpu_sched/real, else ~/.cache/vcpu_sched/real:

    qemu-7.2/qemu-system-ppc64     symlink to the host's /usr/bin/qemu-system-ppc64 (bookworm's QEMU 7.2)
    qemu-11.1/root/                debootstrap'ed trixie with qemu-system-ppc from trixie-backports
    qemu-11.1/qemu-system-ppc64    sh wrapper: runs the root's QEMU through the root's own ld.so, no chroot
    qemu-5.2/...                   the same for bullseye's QEMU 5.2 (only with --with-5.2)
    kit/vmlinux                    Debian's ppc64el linux-image-6.12.*-powerpc64le (ELF vmlinux)
    kit/busybox                    static ppc64el busybox (busybox-static)
    kit/kexec/                     root tree: sbin/kexec (ppc64el kexec-tools), its libraries and its ld.so
    kit/manifest.json              package versions, kernel release, file names
    manifest.json                  {"qemu": {"7.2": PATH, "11.1": PATH, ...}, "versions": {...}, "kit": DIR}

A root's QEMU must not fall back to the host's built-in dirs (/usr/share/qemu, /usr/lib/x86_64-linux-gnu/qemu):
for a module the root lacks, QEMU 11.1 would load the host's 7.2 one and abort (`-device help`, module.c).
The wrapper passes the root's dirs (-L, QEMU_MODULE_DIR), and the built-in ones are moved into the root: by
a ROOT/usr/lib/x86_64-linux-gnu/qemu-bundle symlink to ROOT (QEMU 7.1+), or else (5.2) by running a copy of
the binary, ROOT/usr/local/bin/qemu-system-ppc64, whose built-in dir strings are emptied.

Each step writes a marker under .done/ only when it succeeded, so a killed setup resumes where it stopped;
when everything is there a run takes a second. Commands' output goes to logs/STEP.log; a failed step is
reported on one line (exit 1). Not root or no apt-get while something is missing: one line, exit 2.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HOST_QEMU = Path("/usr/bin/qemu-system-ppc64")
HOST_TOOLS = {"debootstrap": "debootstrap", "readelf": "binutils", "dpkg-deb": "dpkg", "chroot": "coreutils"}
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"
KIT_SUITE = "bookworm"
KERNEL_META = "linux-image-6.12-powerpc64le"
PPC_TRIPLET = "powerpc64le-linux-gnu"
# What a root's QEMU must not find on the host: its built-in data, firmware and module directories.
BUILTIN_DIRS = (b"/usr/share/qemu", b"/usr/share/seabios", b"/usr/lib/ipxe/qemu", b"/usr/lib/x86_64-linux-gnu/qemu")
CHROOT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass(frozen=True)
class Release:
    """A QEMU taken from a debootstrap'ed Debian root."""

    version: str  # "11.1": the cache directory is qemu-VERSION and the package's version must start with it
    suite: str  # the root's Debian suite
    sources: tuple[tuple[str, str], ...]  # (apt target release, extra sources.list suite or "") tried in order


TRIXIE = Release("11.1", "trixie", (("trixie-backports", "trixie-backports"), ("unstable", "sid")))
BULLSEYE = Release("5.2", "bullseye", (("bullseye", ""),))


class StepFailed(Exception):
    """A step of the setup failed: the message is the one line to print (exit 1)."""


class Unsupported(Exception):
    """Not root, or not Debian: the message is the one line to print (exit 2)."""


class Setup:
    """The cache directory, its markers and logs, and the commands run for it."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.done_dir = cache / ".done"
        self.logs = cache / "logs"

    def done(self, step: str) -> bool:
        return (self.done_dir / step).exists()

    def mark(self, step: str, info: str = "") -> None:
        self.done_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.done_dir / step, info)

    def run(self, step: str, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            capture: bool = False) -> str:
        """Run argv, its output appended to logs/STEP.log; return its stdout if captured; StepFailed on failure.

        The command runs in its own process group, which an interruption (Ctrl-C, SIGTERM) ends as a whole.
        """
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{step}.log"
        with log.open("a") as stream:
            stream.write(f"$ {shlex.join(argv)}\n")
            stream.flush()
            try:
                proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stderr=stream, text=True,
                                        stdout=subprocess.PIPE if capture else stream, start_new_session=True)
            except OSError as error:
                raise StepFailed(f"step {step!r} failed: {argv[0]}: {error.strerror}") from error
            try:
                out, _ = proc.communicate()
            except BaseException:
                stop_group(proc)
                raise
            stream.write(out or "")
        if proc.returncode != 0:
            raise StepFailed(f"step {step!r} failed: `{shlex.join(argv)[:160]}` exited {proc.returncode} (see {log})")
        return out or ""


def stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM a command's process group (debootstrap then unmounts what it mounted), SIGKILL it after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cache_dir() -> Path:
    explicit = os.environ.get("VCPU_SCHED_REAL_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "vcpu_sched" / "real").resolve()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Remove a (partial) root, unmounting first what a killed debootstrap may have left mounted in it."""
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def parse_sources(text: str) -> list[tuple[str, list[str]]]:
    """(URI, suites) pairs of a deb822 .sources file or of one-line sources.list entries."""
    pairs: list[tuple[str, list[str]]] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith((" ", "#")):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("uris"):
            pairs.append((fields["uris"].split()[0], fields.get("suites", "").split()))
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line).split()
        if len(words) >= 3 and words[0] == "deb":
            pairs.append((words[1], [words[2]]))
    return pairs


def host_mirrors() -> tuple[str, str]:
    """The Debian mirror and the security mirror the host's apt sources use."""
    text = ""
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        if path.exists():
            text += "\n\n" + path.read_text()
    mirror, security = DEFAULT_MIRROR, DEFAULT_SECURITY
    for uri, suites in parse_sources(text):
        if any(suite.endswith("-security") or suite.endswith("/updates") for suite in suites):
            security = uri.rstrip("/")
        elif uri.rstrip("/").endswith("/debian"):
            mirror = uri.rstrip("/")
    return mirror, security


def suite_available(mirror: str, suite: str) -> bool:
    try:
        with urllib.request.urlopen(f"{mirror}/dists/{suite}/Release", timeout=30) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --- host -----------------------------------------------------------------------------------------------------


def missing_host_packages() -> list[str]:
    packages = [package for tool, package in HOST_TOOLS.items() if shutil.which(tool) is None]
    if not HOST_QEMU.exists():
        packages.append("qemu-system-ppc")
    if not KEYRING.exists():
        packages.append("debian-archive-keyring")
    return packages


def install_host_packages(setup: Setup, packages: list[str]) -> None:
    print(f"real-qemu: apt-get install {' '.join(packages)}", flush=True)
    argv = ["apt-get", "-o", "DPkg::Lock::Timeout=900", "install", "-y", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        setup.run("host-packages", argv, env=env)
    except StepFailed:
        # A fresh machine has no package lists (or stale ones): update and try once more.
        setup.run("host-packages", ["apt-get", "-o", "DPkg::Lock::Timeout=900", "update"], env=env)
        setup.run("host-packages", argv, env=env)


def setup_qemu72(setup: Setup) -> Path:
    directory = setup.cache / "qemu-7.2"
    link = directory / "qemu-system-ppc64"
    if not (link.is_symlink() and os.readlink(link) == str(HOST_QEMU)):
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "qemu-system-ppc64.tmp"
        remove_tree(tmp)
        tmp.symlink_to(HOST_QEMU)
        tmp.replace(link)
    return link


# --- QEMU from a Debian root ------------------------------------------------------------------------------------


def debootstrap(setup: Setup, release: Release, mirror: str) -> Path:
    root = setup.cache / f"qemu-{release.version}" / "root"
    step = f"qemu-{release.version}-debootstrap"
    if setup.done(step) and root.is_dir():
        return root
    for later in ("install", "wrapper"):  # they were done in the root about to be replaced
        (setup.done_dir / f"qemu-{release.version}-{later}").unlink(missing_ok=True)
    partial = root.with_name("root.partial")
    remove_tree(partial)
    remove_tree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    print(f"real-qemu: debootstrap --variant=minbase {release.suite} {root} {mirror} (a minute or two)", flush=True)
    setup.run(step, ["debootstrap", "--variant=minbase", release.suite, str(partial), mirror])
    partial.rename(root)
    setup.mark(step)
    return root


def chroot(setup: Setup, step: str, root: Path, *argv: str, capture: bool = False) -> str:
    return setup.run(step, ["chroot", str(root), *argv], env=CHROOT_ENV, capture=capture)


def candidate(setup: Setup, step: str, root: Path, target: str) -> str:
    out = chroot(setup, step, root, "apt-cache", "-o", f"APT::Default-Release={target}", "policy", "qemu-system-ppc",
                 capture=True)
    match = re.search(r"Candidate:\s*(\S+)", out)
    return match.group(1) if match and match.group(1) != "(none)" else ""


def upstream(version: str) -> str:
    return version.split(":", 1)[-1]


def install_qemu(setup: Setup, release: Release, root: Path, mirror: str) -> str:
    """Install qemu-system-ppc of the wanted version in the root; return 'VERSION from TARGET'."""
    step = f"qemu-{release.version}-install"
    marker = setup.done_dir / step
    if marker.exists() and (root / "usr/bin/qemu-system-ppc64").exists():
        return marker.read_text()
    policy_rc = root / "usr/sbin/policy-rc.d"
    policy_rc.write_text("#!/bin/sh\nexit 101\n")
    policy_rc.chmod(0o755)
    extra = root / "etc/apt/sources.list.d/vcpu_sched.list"
    found: list[str] = []
    for target, suite in release.sources:
        if suite:
            extra.write_text(f"deb {mirror} {suite} main\n")
        print(f"real-qemu: apt-get update in {root} ({target})", flush=True)
        chroot(setup, step, root, "apt-get", "update")
        version = candidate(setup, step, root, target)
        found.append(f"{target}: {version or 'none'}")
        if re.match(re.escape(release.version) + r"[.+~]", upstream(version)):
            break
    else:
        raise StepFailed(f"step {step!r} failed: no qemu-system-ppc {release.version}.x ({'; '.join(found)})")
    print(f"real-qemu: apt-get install -t {target} qemu-system-ppc={version} in {root}", flush=True)
    chroot(setup, step, root, "apt-get", "install", "-y", "--no-install-recommends", "-t", target,
           f"qemu-system-ppc={version}")
    chroot(setup, step, root, "apt-get", "clean")
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()
    info = f"{version} from {target}" + (f" (tried {'; '.join(found[:-1])})" if len(found) > 1 else "")
    setup.mark(step, info)
    return info


def blank_builtin_dirs(data: bytes) -> tuple[bytes, list[str]]:
    """Make each NUL-delimited string that is a built-in data, firmware or module dir empty: its first byte only.

    Only the first byte: the linker merges string tails, so "qemu" may well be the tail of
    "/usr/lib/x86_64-linux-gnu/qemu" (overwriting the whole string empties QMP's "qemu" key of query-version).
    """
    patched: list[str] = []
    out = bytearray(data)
    for match in re.finditer(rb"\0(/usr/(?:share|lib)/[\x21-\x7e]{4,200})(?=\0)", data):
        text = match.group(1)
        if all(part.rstrip(b"/") in BUILTIN_DIRS for part in text.split(b":")):
            out[match.start(1)] = 0
            patched.append(text.decode())
    return bytes(out), patched


def isolate_from_host(step: str, root: Path) -> tuple[Path, str]:
    """Keep the root's QEMU off the host's data and module dirs: return the binary to run and what was done.

    QEMU 7.1+ takes every built-in dir under EXEC_DIR/qemu-bundle when that exists (util/cutils.c,
    get_relocated_path), EXEC_DIR being the directory of /proc/self/exe: run through ld.so, the root's
    x86_64-linux-gnu directory, where a qemu-bundle symlink to the root goes. Older ones (5.2) run from a copy,
    ROOT/usr/local/bin/qemu-system-ppc64, whose built-in dir strings are empty.
    """
    original = root / "usr/bin/qemu-system-ppc64"
    data = original.read_bytes()
    if b"qemu-bundle" in data:
        loader_dir = (root / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").resolve().parent
        bundle = loader_dir / "qemu-bundle"
        remove_tree(bundle)
        bundle.symlink_to(os.path.relpath(root.resolve(), loader_dir))
        return original, f"{bundle} -> {os.readlink(bundle)}"
    data, patched = blank_builtin_dirs(data)
    if not any(text.endswith("/qemu") and "x86_64" in text for text in patched):
        raise StepFailed(f"step {step!r} failed: no built-in module directory in {original}")
    binary = root / "usr/local/bin/qemu-system-ppc64"
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(binary.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(binary)
    return binary, f"{binary}: emptied {', '.join(patched)}"


def check_qemu(step: str, wrapper: Path, root: Path) -> None:
    """The wrapper runs, has pseries, loads modules without the host's and finds its data in the root only."""
    checks = {"-machine help": "pseries", "-device help": "spapr-vty", "-L help": str(root)}
    for args, wanted in checks.items():
        try:
            proc = subprocess.run([str(wrapper), *args.split()], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as error:
            raise StepFailed(f"step {step!r} failed: {wrapper} {args}: {error}") from error
        if proc.returncode != 0 or wanted not in proc.stdout or "module" in proc.stderr:
            problem = (proc.stderr.strip().splitlines() or [f"no {wanted!r} in its output"])[-1]
            raise StepFailed(f"step {step!r} failed: {wrapper} {args} (exit {proc.returncode}): {problem}")
        if args == "-L help":
            outside = [line for line in proc.stdout.split() if not line.startswith(str(root))]
            if outside:
                raise StepFailed(f"step {step!r} failed: {wrapper} still searches {', '.join(outside)}")


def write_wrapper(setup: Setup, release: Release, root: Path) -> Path:
    directory = setup.cache / f"qemu-{release.version}"
    wrapper = directory / "qemu-system-ppc64"
    step = f"qemu-{release.version}-wrapper"
    if setup.done(step) and wrapper.exists():
        return wrapper
    binary, isolation = isolate_from_host(step, root)
    loader = root / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    libs = ":".join(str(path) for path in (root / "lib/x86_64-linux-gnu", root / "usr/lib/x86_64-linux-gnu")
                    if path.is_dir())
    data_dirs = [path for path in (root / "usr/share/qemu", root / "usr/share/seabios") if path.is_dir()]
    if not any((path / "slof.bin").exists() for path in data_dirs):
        raise StepFailed(f"step {step!r} failed: no slof.bin in {root}/usr/share/qemu")
    modules = root / "usr/lib/x86_64-linux-gnu/qemu"
    lines = ["#!/bin/sh", f"# QEMU {release.version} of {root}, run without chroot by the root's own dynamic loader."]
    if modules.is_dir():
        lines += [f"QEMU_MODULE_DIR={shlex.quote(str(modules))}", "export QEMU_MODULE_DIR"]
    command = [str(loader), "--library-path", libs, str(binary)]
    for path in data_dirs:
        command += ["-L", str(path)]
    lines.append("exec " + shlex.join(command) + ' "$@"')
    tmp = wrapper.with_name(wrapper.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o755)
    tmp.replace(wrapper)
    check_qemu(step, wrapper, root)
    setup.mark(step, isolation)
    return wrapper


def setup_release(setup: Setup, release: Release, mirror: str) -> Path:
    root = debootstrap(setup, release, mirror)
    install_qemu(setup, release, root, mirror)
    return write_wrapper(setup, release, root)


# --- the ppc64el guest kit ------------------------------------------------------------------------------------


class PpcApt:
    """apt-get and apt-cache for ppc64el with private lists, cache and status: the host's apt state is untouched."""

    def __init__(self, setup: Setup, mirror: str, security: str) -> None:
        self.setup = setup
        self.base = setup.cache / "apt-ppc64el"
        self.mirror = mirror
        self.security = security

    def options(self) -> list[str]:
        base = self.base
        return ["-o", "APT::Architecture=ppc64el", "-o", "APT::Architectures=ppc64el",
                "-o", f"Dir::State::Lists={base / 'lists'}", "-o", f"Dir::State::status={base / 'status'}",
                "-o", f"Dir::State::extended_states={base / 'extended_states'}",
                "-o", f"Dir::Cache={base / 'cache'}", "-o", f"Dir::Etc::SourceList={base / 'sources.list'}",
                "-o", f"Dir::Etc::SourceParts={base / 'sources.list.d'}",
                "-o", f"Dir::Etc::Preferences={base / 'preferences'}",
                "-o", f"Dir::Etc::PreferencesParts={base / 'preferences.d'}", "-o", "APT::Sandbox::User=root"]

    def update(self) -> None:
        if self.setup.done("kit-lists"):
            return
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "status").touch()
        signed = f"[arch=ppc64el signed-by={KEYRING}]"
        (self.base / "sources.list").write_text(
            f"deb {signed} {self.mirror} {KIT_SUITE} main\n"
            f"deb {signed} {self.mirror} {KIT_SUITE}-updates main\n"
            f"deb {signed} {self.security} {KIT_SUITE}-security main\n")
        print(f"real-qemu: apt-get update for ppc64el in {self.base}", flush=True)
        self.setup.run("kit-lists", ["apt-get", *self.options(), "update"])
        self.setup.mark("kit-lists")

    def show(self, package: str) -> dict[str, str]:
        """The candidate's control fields."""
        out = self.setup.run("kit-resolve", ["apt-cache", *self.options(), "show", "--no-all-versions", package],
                              capture=True)
        fields: dict[str, str] = {}
        for line in out.split("\n\n")[0].splitlines():
            if ":" in line and not line.startswith(" "):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        return fields

    def download(self, packages: dict[str, str], into: Path) -> None:
        into.mkdir(parents=True, exist_ok=True)
        argv = ["apt-get", *self.options(), "download", *(f"{name}={version}" for name, version in packages.items())]
        self.setup.run("kit-download", argv, cwd=into)


def depends(fields: dict[str, str]) -> list[str]:
    """Package names of Depends and Pre-Depends (first of each alternative)."""
    text = ", ".join(value for key, value in fields.items() if key in ("Depends", "Pre-Depends"))
    return [re.split(r"[\s(:]", item.split("|")[0].strip())[0] for item in text.split(",") if item.strip()]


def resolve_packages(apt: PpcApt) -> tuple[str, dict[str, str]]:
    """The kernel package and every package to download (name -> candidate version)."""
    meta = apt.show(KERNEL_META)
    kernels = [name for name in depends(meta) if re.fullmatch(r"linux-image-6\.12\.\S+-powerpc64le", name)]
    if not kernels:
        raise StepFailed(f"step 'kit-resolve' failed: {KERNEL_META} {meta.get('Version')} names no kernel image")
    wanted = [kernels[0], "busybox-static", "kexec-tools"]
    packages: dict[str, str] = {}
    while wanted:
        name = wanted.pop()
        if name in packages:
            continue
        fields = apt.show(name)
        packages[name] = fields["Version"]
        # kexec's libraries: the library packages it depends on, recursively (its NEEDED entries pick files).
        if name == "kexec-tools" or name.startswith("lib"):
            wanted += [dep for dep in depends(fields) if dep.startswith("lib")]
    return kernels[0], packages


def fetch_debs(setup: Setup, apt: PpcApt) -> tuple[str, Path]:
    debs = apt.base / "debs"
    marker = setup.done_dir / "kit-debs"
    if marker.exists() and debs.is_dir():
        return marker.read_text(), debs
    apt.update()
    kernel, packages = resolve_packages(apt)
    remove_tree(debs)
    partial = debs.with_name("debs.partial")
    remove_tree(partial)
    print(f"real-qemu: apt-get download (ppc64el) {' '.join(sorted(packages))}", flush=True)
    apt.download(packages, partial)
    partial.rename(debs)
    setup.mark("kit-debs", kernel)
    return kernel, debs


def extract_debs(setup: Setup, debs: Path, scratch: Path) -> dict[str, tuple[str, Path]]:
    """dpkg -x each .deb into scratch/NAME: name -> (version, tree)."""
    trees: dict[str, tuple[str, Path]] = {}
    for deb in sorted(debs.glob("*.deb")):
        name, version = setup.run("kit-extract", ["dpkg-deb", "-f", str(deb), "Package", "Version"],
                                   capture=True).splitlines()
        name, version = name.split(":", 1)[1].strip(), version.split(":", 1)[1].strip()
        tree = scratch / name
        tree.mkdir(parents=True)
        setup.run("kit-extract", ["dpkg", "-x", str(deb), str(tree)])
        trees[name] = (version, tree)
    return trees


def in_tree(tree: Path, path: str) -> Path | None:
    """Resolve an absolute path inside an extracted package, its symlinks taken relative to the tree."""
    current = tree / path.lstrip("/")
    for _ in range(40):
        if not current.is_symlink():
            return current if current.is_file() else None
        target = os.readlink(current)
        current = tree / target.lstrip("/") if target.startswith("/") else current.parent / target
    return None


def elf_needed(setup: Setup, path: Path) -> list[str]:
    out = setup.run("kit-kexec", ["readelf", "-d", str(path)], capture=True)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", out)


def elf_interpreter(setup: Setup, path: Path) -> str:
    out = setup.run("kit-kexec", ["readelf", "-l", str(path)], capture=True)
    match = re.search(r"Requesting program interpreter: ([^]]+)\]", out)
    return match.group(1) if match else ""


def find_library(trees: dict[str, tuple[str, Path]], soname: str) -> tuple[str, Path] | None:
    dirs = [f"/lib/{PPC_TRIPLET}", f"/usr/lib/{PPC_TRIPLET}", "/lib64", "/usr/lib64", "/lib", "/usr/lib"]
    for name, (_, tree) in trees.items():
        for directory in dirs:
            found = in_tree(tree, f"{directory}/{soname}")
            if found is not None:
                return name, found
    return None


def build_kexec_root(setup: Setup, trees: dict[str, tuple[str, Path]], out: Path) -> set[str]:
    """sbin/kexec, its libraries (recursively) and its interpreter at the path PT_INTERP names; return packages."""
    kexec = in_tree(trees["kexec-tools"][1], "/sbin/kexec")
    if kexec is None:
        raise StepFailed("step 'kit-kexec' failed: no /sbin/kexec in kexec-tools")
    (out / "sbin").mkdir(parents=True)
    shutil.copy2(kexec, out / "sbin/kexec")
    used = {"kexec-tools"}
    interpreter = elf_interpreter(setup, kexec)
    if interpreter:
        found = find_library(trees, Path(interpreter).name)
        if found is None:
            raise StepFailed(f"step 'kit-kexec' failed: interpreter {interpreter} is in no downloaded package")
        used.add(found[0])
        (out / interpreter.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(found[1], out / interpreter.lstrip("/"))
    libdir = out / "lib" / PPC_TRIPLET
    libdir.mkdir(parents=True, exist_ok=True)
    todo, seen = elf_needed(setup, kexec), set[str]()
    while todo:
        soname = todo.pop()
        if soname in seen:
            continue
        seen.add(soname)
        found = find_library(trees, soname)
        if found is None:
            raise StepFailed(f"step 'kit-kexec' failed: kexec needs {soname}, in no downloaded package")
        used.add(found[0])
        shutil.copy2(found[1], libdir / soname)
        todo += elf_needed(setup, found[1])
    return used


def check_ppc64_elf(setup: Setup, path: Path, what: str) -> None:
    out = setup.run("kit-check", ["readelf", "-h", str(path)], capture=True)
    if "PowerPC64" not in out:
        raise StepFailed(f"step 'kit-check' failed: {what} {path} is not a ppc64 ELF")


def setup_kit(setup: Setup, mirror: str, security: str) -> Path:
    kit = setup.cache / "kit"
    if setup.done("kit") and (kit / "manifest.json").exists():
        return kit
    apt = PpcApt(setup, mirror, security)
    kernel, debs = fetch_debs(setup, apt)
    scratch = setup.cache / "kit.scratch"
    partial = setup.cache / "kit.partial"
    for path in (scratch, partial):
        remove_tree(path)
    print(f"real-qemu: assembling {kit}", flush=True)
    trees = extract_debs(setup, debs, scratch)
    partial.mkdir()
    vmlinuxes = sorted((trees[kernel][1] / "boot").glob("vmlinux-*"))
    if not vmlinuxes:
        raise StepFailed(f"step 'kit-kernel' failed: no /boot/vmlinux-* in {kernel}")
    shutil.copy2(vmlinuxes[0], partial / "vmlinux")
    check_ppc64_elf(setup, partial / "vmlinux", "vmlinux")
    busybox = in_tree(trees["busybox-static"][1], "/bin/busybox")
    if busybox is None:
        raise StepFailed("step 'kit-busybox' failed: no /bin/busybox in busybox-static")
    shutil.copy2(busybox, partial / "busybox")
    check_ppc64_elf(setup, partial / "busybox", "busybox")
    if elf_interpreter(setup, partial / "busybox"):
        raise StepFailed("step 'kit-busybox' failed: busybox-static's busybox is not static")
    used = build_kexec_root(setup, trees, partial / "kexec") | {kernel, "busybox-static"}
    manifest = {"packages": {name: trees[name][0] for name in sorted(used)},
                "kernel_release": vmlinuxes[0].name.removeprefix("vmlinux-"),
                "vmlinux": "vmlinux", "busybox": "busybox", "kexec_root": "kexec"}
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    remove_tree(kit)
    partial.rename(kit)
    remove_tree(scratch)
    remove_tree(debs)  # the kit has what it needs; the lists stay for a rebuild
    setup.mark("kit")
    return kit


# --- main -----------------------------------------------------------------------------------------------------


def qemu_version(path: Path) -> str:
    try:
        proc = subprocess.run([str(path), "-version"], capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        raise StepFailed(f"step 'versions' failed: {path} -version: {error}") from error
    return proc.stdout.splitlines()[0].strip() if proc.stdout else ""


def release_ready(cache: Path, release: Release) -> bool:
    directory = cache / f"qemu-{release.version}"
    needed = [cache / ".done" / f"qemu-{release.version}-wrapper", directory / "qemu-system-ppc64",
              directory / "root/usr/bin/qemu-system-ppc64"]
    return all(path.exists() for path in needed)


def everything_present(cache: Path, releases: list[Release]) -> bool:
    return (not missing_host_packages() and (cache / "qemu-7.2/qemu-system-ppc64").exists()
            and all(release_ready(cache, release) for release in releases)
            and (cache / ".done/kit").exists() and (cache / "kit/manifest.json").exists())


def require_root() -> None:
    if os.geteuid() != 0:
        raise Unsupported("the setup installs packages and runs debootstrap and chroot: run it as root")
    if shutil.which("apt-get") is None:
        raise Unsupported("the setup needs a Debian machine with apt-get (not found)")


def setup_all(setup: Setup, releases: list[Release]) -> None:
    missing = missing_host_packages()
    if missing:
        install_host_packages(setup, missing)
    mirror, security = host_mirrors()
    setup_qemu72(setup)
    for release in releases:
        if release is BULLSEYE and not release_ready(setup.cache, release) and not suite_available(mirror, "bullseye"):
            print(f"real-qemu: note: {mirror} no longer serves bullseye: QEMU 5.2 skipped", flush=True)
            continue
        setup_release(setup, release, mirror)
    setup_kit(setup, mirror, security)


def present_qemus(cache: Path) -> dict[str, Path]:
    """Every QEMU the cache holds (5.2 too when an earlier run set it up)."""
    qemus = {"7.2": cache / "qemu-7.2/qemu-system-ppc64"}
    for release in (TRIXIE, BULLSEYE):
        if release_ready(cache, release):
            qemus[release.version] = cache / f"qemu-{release.version}/qemu-system-ppc64"
    return qemus


def report(setup: Setup) -> None:
    cache = setup.cache
    qemus = present_qemus(cache)
    versions = {key: qemu_version(path) for key, path in qemus.items()}
    kit = cache / "kit"
    manifest = {"qemu": {key: str(path) for key, path in qemus.items()}, "versions": versions, "kit": str(kit)}
    text = json.dumps(manifest, indent=2) + "\n"
    if not (cache / "manifest.json").exists() or (cache / "manifest.json").read_text() != text:
        write_atomic(cache / "manifest.json", text)
    kit_manifest = json.loads((kit / "manifest.json").read_text())
    for key, path in qemus.items():
        print(f"QEMU {key:<5} {versions[key]}: {path}")
    print(f"kit        kernel {kit_manifest['kernel_release']}: {kit}")
    print(f"manifest   {cache / 'manifest.json'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--with-5.2", dest="with_52", action="store_true", help="also QEMU 5.2 (bullseye)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)
    path = os.environ.get("PATH", "").split(os.pathsep)  # debootstrap and chroot are in sbin
    os.environ["PATH"] = os.pathsep.join(path + [d for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
                                                 if d not in path])
    releases = [TRIXIE, BULLSEYE] if args.with_52 else [TRIXIE]
    cache = cache_dir()
    setup = Setup(cache)
    try:
        if not everything_present(cache, releases):
            require_root()
            cache.mkdir(parents=True, exist_ok=True)
            start = time.monotonic()
            with (cache / ".lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                setup_all(setup, releases)
            print(f"real-qemu: set up in {time.monotonic() - start:.0f} s", flush=True)
        report(setup)
    except StepFailed as error:
        print(f"real-qemu: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("real-qemu: interrupted: run it again to resume", file=sys.stderr)
        return 130
    except Unsupported as error:
        print(f"real-qemu: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"real-qemu: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
