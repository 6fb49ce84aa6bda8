"""The model at a QEMU release: each modelled commit in exactly the releases that contain it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vcpu_sched import runner
from vcpu_sched.scenario import apply, load
from vcpu_sched.versions import RELEASES, cpu_events_function, has, profile, release_key, release_of


@pytest.mark.parametrize(("version", "release"), [
    ("11.1.3", "11.1"), ("7.2.19", "7.2"), ("8.2.1", "7.2"), ("10.2.50", "11.0"), ("9.2.90", "10.0"),
    ("5.2.0", "5.2"), ("10.1.50", "10.2")])
def test_release_of_a_binary_version(version: str, release: str) -> None:
    assert release_of(version) == release


def test_a_version_older_than_every_release_is_refused() -> None:
    with pytest.raises(ValueError, match="older than every modelled release"):
        release_of("4.2.1")


def test_development_versions_ship_in_the_next_release() -> None:
    # the VERSION file at each commit (versions.py's table)
    assert release_key("9.2.50") == (10, 0)
    assert release_key("11.0.50") == (11, 1)
    assert release_key("5.0.91") == (5, 1)


def test_profiles_follow_the_commits() -> None:
    rows = {v: profile(v) for v in RELEASES}
    assert rows["7.2"]["fix"] == "none" and rows["7.2"]["timebase_reset"] == "reverted"
    assert rows["10.0"]["fix"] == "quiesced" and rows["10.0"]["timebase_reset"] == "applied"
    assert rows["11.0"]["fix"] == "quiesced+migration" and not rows["11.0"]["sysreset_fix"]
    assert rows["11.1"]["sysreset_fix"]
    assert not rows["5.2"]["force_rcu"] and rows["7.2"]["force_rcu"]
    assert [has(v, "fb802acdc8b") for v in RELEASES] == [False, False, False, True, True, True, True, True]
    assert cpu_events_function("10.1") == "qemu_wait_io_event"
    assert cpu_events_function("11.1") == "qemu_process_cpu_events"


def test_every_release_runs_the_seed_case() -> None:
    base = load("spapr-rtas-stopped").settings
    verdicts = {v: runner.run(apply(base, {**profile(v), "smp": 4, "cores": 4, "watchdog_s": 2.0}, "test")).verdict
                for v in RELEASES}
    # before the timebase commit no DEC is pending under KVM; from 10.0 the fix is in: no release hangs
    assert set(verdicts.values()) == {"booted"}, verdicts
    pre_fix = apply(base, {**profile("10.0"), "fix": "none", "smp": 4, "cores": 4, "watchdog_s": 2.0}, "test")
    assert runner.run(pre_fix).verdict == "lockup"


def test_qemu_version_option_sets_the_release_and_explicit_options_win() -> None:
    def settings(*argv: str) -> dict[str, object]:
        import json

        out = subprocess.run([sys.executable, "-m", "vcpu_sched", "run", "--smp", "2", "--json", "--quiet", *argv],
                             capture_output=True, text=True, check=False)
        return dict(json.loads(out.stdout)["settings"])

    assert settings("--qemu-version", "7.2")["fix"] == "none"
    got = settings("--qemu-version", "11.1")
    assert (got["fix"], got["sysreset_fix"], got["qemu_version"]) == ("quiesced+migration", True, "11.1")
    assert settings("--qemu-version", "11.1", "--fix", "none")["fix"] == "none"
    assert settings("--qemu-version", "11.1", "--set", "sysreset_fix=false")["sysreset_fix"] is False
