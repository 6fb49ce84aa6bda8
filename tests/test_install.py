"""Installed with pip, outside the repository: the command, its scenarios, the matrix and the pytest plugin.

The package is built as a wheel and installed with pip into a fresh venv whose dependencies come from the
test environment (a path entry, so no index is needed); everything then runs from another directory.
Building the wheel and the venv takes ~10 s: slow (pytest -m slow, tools/dev.py test-slow)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("install")
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    site = next(env_dir.glob("lib/python*/site-packages"))
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # trio, pytest, ... (not us)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*pip, *map(str, wheels.glob("*.whl"))], check=True, capture_output=True, timeout=300)
    return env_dir / "bin"


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VCPU_SCHED_SCENARIOS")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_command_finds_its_scenarios_from_any_directory(installed: Path, tmp_path: Path) -> None:
    done = _run([str(installed / "vcpu-sched"), "run", "--expect", "lockup", "--quiet"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "LOCKUP" in done.stdout
    where = _run([str(installed / "python"), "-c", "import vcpu_sched.scenario as s; print(s.SCENARIO_DIR)"],
                 tmp_path)
    assert "site-packages" in where.stdout, "the scenarios come from the installed package"


def test_the_matrix_runs_installed(installed: Path, tmp_path: Path) -> None:
    done = _run([str(installed / "vcpu-sched"), "matrix", "spapr-rtas-stopped", "s390x-sigp-cross",
                 "tcg-rcu-device-add", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"mismatches": 0' in done.stdout


def test_every_subpackage_is_installed(installed: Path, tmp_path: Path) -> None:
    packages = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vcpu_sched").rglob("__init__.py"))
    assert "vcpu_sched.model.s390x" in packages
    done = _run([str(installed / "python"), "-c", "; ".join(f"import {p}" for p in packages)], tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_user_project_runs_the_plugin(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntrio_mode = true\n")
    (tmp_path / "test_hang.py").write_text(textwrap.dedent('''
        from vcpu_sched.testing import assert_boots, assert_locks_up, run_scenario

        async def test_fix_boots(autojump_clock):
            assert_boots(await run_scenario("spapr-rtas-stopped", fix="quiesced"), within=3.0)

        async def test_hang(autojump_clock):
            assert_locks_up(await run_scenario("spapr-rtas-stopped", watchdog_s=5.0), stuck=0, holder=1)
    '''))
    done = _run([str(installed / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_a_users_own_scenario_directory(installed: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "my-boot.toml").write_text((ROOT / "scenarios" / "spapr-rtas-stopped.toml").read_text())
    done = _run([str(installed / "vcpu-sched"), "run", "my-boot", "--scenarios", str(mine), "--quiet",
                 "--fix", "quiesced", "--expect", "booted"], tmp_path)
    assert done.returncode == 0, done.stderr
