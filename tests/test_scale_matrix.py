"""`vcpu-sched matrix` runs rows that come to the same settings once, and still reports every row as its own,
in the order of the scenario files (issue 28 goal 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcpu_sched.matrix import rows_for, run_matrix
from vcpu_sched.scenario import ENV_DIRS, load

SCENARIO = """
description = "two vCPUs that SIGP each other, one variant twice"
qemu = "qemu-system-s390x -machine s390-ccw-virtio,accel=kvm -smp 2 -cpu host -m 2048 -nographic"

[settings]
machine = "s390-ccw-virtio"
smp = 2
accel = "kvm"
cpu = "z16"
workload = "sigp-cross"
sigp_lock = false
loops = 3
watchdog_s = 2.0

[[expect]]
variant = {}
verdict = "lockup"
reason = "the file's own settings"

[[expect]]
variant = { sigp_lock = true }
verdict = "completed"
reason = "another run"

[[expect]]
variant = { smp = 2 }
verdict = "completed"
reason = "the first row's settings again, expected wrongly"
"""


def test_rows_with_the_same_settings_share_a_run_and_keep_their_own_fields(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "twins.toml").write_text(SCENARIO, encoding="utf-8")
    monkeypatch.setenv(ENV_DIRS, str(tmp_path))
    rows = rows_for(load("twins"))
    assert rows[0].settings == rows[2].settings != rows[1].settings
    results = run_matrix(["twins"], jobs=2)
    assert [r["label"] for r in results] == ["(as in the file)", "sigp_lock=true", "smp=2"]
    first, other, twin = results
    assert (first["actual"], other["actual"]) == ("lockup", "completed")
    # One run: even its wall time is the same (two runs never measure the same float).
    for key in ("actual", "guest_time_s", "effects", "cause", "spun", "wall_time_s"):
        assert twin[key] == first[key]
    assert first["match"] and other["match"] and not twin["match"]
    assert (twin["expected"], twin["reason"], twin["variant"]) == ("completed", rows[2].reason, {"smp": 2})
