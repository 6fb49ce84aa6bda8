#!/usr/bin/env python3
"""Set up `.venv` when it is missing or stale, then run the demo or the tests.

    python3 tools/dev.py demo   # the seed's guest without the fix (lockup), then with it (booted)
    python3 tools/dev.py test   # ruff, mypy, pytest (the default suite: not slow, not real; 2 workers)
    python3 tools/dev.py test-slow  # the slow tests (pytest -m slow, 2 workers): bigger searches, every row
    python3 tools/dev.py real-qemu [--with-5.2]  # set up (once, cached outside the repository) QEMU 7.2 and
                                                 # 11.1 (and 5.2) and a ppc64le guest kit, then print where
    python3 tools/dev.py test-real  # the tests against real QEMU (pytest -m real; they skip what is not set up)

Only the standard library: it must work on a machine with nothing but Python 3.11 and pip.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if sys.platform == "win32" else "bin")
STAMP = VENV / ".installed"


def ensure_venv() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and (BIN / "vcpu-sched").exists():
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    subprocess.run([str(BIN / "python"), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def run(*argv: str) -> int:
    print("$ " + " ".join(argv), flush=True)
    return subprocess.run(argv, cwd=ROOT).returncode


def demo() -> int:
    cli = str(BIN / "vcpu-sched")
    first = run(cli, "run", "spapr-rtas-stopped", "--expect", "lockup")
    print(flush=True)
    second = run(cli, "run", "spapr-rtas-stopped", "--fix", "quiesced", "--expect", "booted")
    return first or second


# The OS-threads engine's tests read wall time and per-thread CPU (top -H): they run alone, after the rest,
# which runs on two workers (pytest-xdist).
WALL_CLOCK_TESTS = "tests/test_threads_engine.py"


def test() -> int:
    pytest = [str(BIN / "python"), "-m", "pytest", "-q"]
    for step in ([str(BIN / "ruff"), "check", "vcpu_sched", "tests", "tools"],
                 [str(BIN / "mypy")],
                 [*pytest, "-n", "2", "--ignore", WALL_CLOCK_TESTS],
                 [*pytest, WALL_CLOCK_TESTS]):
        status = run(*step)
        if status:
            return status
    return 0


def test_slow() -> int:
    pytest = [str(BIN / "python"), "-m", "pytest", "-q", "-m", "slow"]
    return run(*pytest, "-n", "2", "--ignore", WALL_CLOCK_TESTS) or run(*pytest, WALL_CLOCK_TESTS)


def test_real() -> int:
    return run(str(BIN / "python"), "-m", "pytest", "-q", "-m", "real")


def real_qemu() -> int:
    sys.path.insert(0, str(ROOT / "tools"))
    import real_qemu as setup

    return setup.main(sys.argv[2:])


def main() -> int:
    commands = {"demo": demo, "test": test, "test-slow": test_slow, "test-real": test_real, "real-qemu": real_qemu}
    extra_ok = sys.argv[1:2] == ["real-qemu"]
    if len(sys.argv) < 2 or sys.argv[1] not in commands or (len(sys.argv) > 2 and not extra_ok):
        print(f"usage: {sys.argv[0]} {'|'.join(commands)}", file=sys.stderr)
        return 2
    ensure_venv()
    return commands[sys.argv[1]]()


if __name__ == "__main__":
    sys.exit(main())
