#!/usr/bin/env python3
"""Set up `.venv` when it is missing or stale, then run the demo or the tests.

    python3 tools/dev.py demo   # the seed's guest without the fix (lockup), then with it (booted)
    python3 tools/dev.py test   # ruff, mypy, pytest

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


def test() -> int:
    for step in ([str(BIN / "ruff"), "check", "vcpu_sched", "tests", "tools"],
                 [str(BIN / "mypy")],
                 [str(BIN / "python"), "-m", "pytest", "-q"]):
        status = run(*step)
        if status:
            return status
    return 0


def main() -> int:
    commands = {"demo": demo, "test": test}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print(f"usage: {sys.argv[0]} {'|'.join(commands)}", file=sys.stderr)
        return 2
    ensure_venv()
    return commands[sys.argv[1]]()


if __name__ == "__main__":
    sys.exit(main())
