"""`analyze` on QEMU trace logs: real QEMU 7.2 traces (tests/data/qemu-7.2), the other two line formats made
from them, the model's own `--log-format qemu-trace`, damaged input, and the real binary when installed."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vcpu_sched.cli import main

DATA = Path(__file__).parent / "data" / "qemu-7.2"
STALL = DATA / "stall-vcpu0-ptrace.trace"
HEALTHY = DATA / "healthy.trace"
LINE = re.compile(r"(\d+)@(\d+)\.(\d+):(\w+) ?(.*)")


def analyse(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["analyze", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def lines_of(path: Path) -> list[tuple[int, int, str, str]]:
    """(tid, ns, name, args) of every trace line, read here independently of the product's reader."""
    out = []
    for text in path.read_text().splitlines():
        m = LINE.fullmatch(text)
        if m:
            out.append((int(m[1]), int(m[2]) * 10**9 + int(m[3]) * 1000, m[4], m[5]))
    return out


def test_real_stall_is_found_with_its_holder_hold_time_and_waiters(capsys: pytest.CaptureFixture[str]) -> None:
    events = lines_of(STALL)
    bql = next(args.split()[3] for _, _, _, args in events if "util/main-loop.c" in args)
    last_bql = {tid: (name, ns) for tid, ns, name, args in events if bql in args and name != "qemu_mutex_lock"}
    holder, (_, took) = next((tid, v) for tid, v in last_bql.items() if v[0] == "qemu_mutex_locked")
    s = analyse(capsys, str(STALL))
    assert s["format"] == "qemu-trace" and s["bql"]["mutex"] == bql
    lock = s["lockup"]
    assert lock["holder"] == holder and lock["holder_role"] == "vcpu 0"
    assert lock["held_for_s"] == pytest.approx((max(ns for _, ns, _, _ in events) - took) / 1e9, abs=1e-6)
    assert lock["holder_state"] == "blocked" and "taken mutex " + bql in lock["holder_last_event"]
    waiters = {w["role"]: w for w in lock["waiters"]}
    assert waiters["main"]["site"].endswith("util/main-loop.c:318")
    assert waiters["rcu"]["site"].endswith("util/rcu.c:269")
    assert all(w["waited_s"] > 1.0 for w in lock["waiters"])
    roles = {t["role"] for t in s["threads"]}
    assert {"main", "rcu", "monitor", "vcpu 0"} <= roles


def test_real_healthy_trace_has_no_lockup(capsys: pytest.CaptureFixture[str]) -> None:
    s = analyse(capsys, str(HEALTHY))
    assert s["lockup"] is None and s["bql"]["mutex"] is not None and s["corrupt_count"] == 0
    assert s["longest_hold"]["held_s"] < 1.0
    # The threshold is what decides: below the longest hold that others waited on, the same trace has one.
    stall = analyse(capsys, str(STALL), "--threshold", "5")
    assert stall["lockup"] is None


def test_text_report_names_the_lockup(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(STALL)]) == 0
    out = capsys.readouterr().out
    assert "LOCKUP: thread" in out and "BLOCKED" in out and "util/main-loop.c:318" in out


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9 // 1000:06d}Z"


def test_per_thread_iso_files_and_plain_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """QEMU 10.1+ writes `ISO-TIME event args` and one file per thread (-d tid -D trace-%d.log): the same
    trace in that shape gives the same lockup; without timestamps the BQL is still found, no lockup told."""
    files: dict[int, list[str]] = {}
    for tid, ns, name, args in lines_of(STALL):
        files.setdefault(tid, []).append(f"{_iso(ns)} {name} {args}\n")
    for tid, lines in files.items():
        (tmp_path / f"trace-{tid}.log").write_text("".join(lines))
    original = analyse(capsys, str(STALL))
    split = analyse(capsys, *sorted(str(p) for p in tmp_path.glob("trace-*.log")))
    assert split["line_format"] == "iso"
    for key in ("holder", "holder_state", "held_for_s"):
        assert split["lockup"][key] == pytest.approx(original["lockup"][key])
    plain = tmp_path / "plain.log"
    plain.write_text("".join(f"{name} {args}\n" for _, _, name, args in lines_of(STALL)))
    p = analyse(capsys, str(plain))
    assert p["line_format"] == "plain" and not p["timestamps"] and p["lockup"] is None
    assert p["bql"]["mutex"] == original["bql"]["mutex"]


def test_lines_out_of_order_are_put_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = STALL.read_text().splitlines(keepends=True)
    rng = random.Random(1)
    for _ in range(len(lines)):  # swap neighbours, as threads racing for the log file do
        i = rng.randrange(len(lines) - 1)
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    shuffled = tmp_path / "shuffled.trace"
    shuffled.write_text("".join(lines))
    assert analyse(capsys, str(shuffled))["lockup"] == analyse(capsys, str(STALL))["lockup"]


def test_the_model_written_as_a_qemu_trace_is_a_spinning_holder(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "seed.trace"
    assert main(["run", "--quiet", "--watchdog", "3", "--log", str(trace), "--log-format", "qemu-trace"]) == 1
    capsys.readouterr()
    s = analyse(capsys, str(trace))
    lock = s["lockup"]
    assert lock["holder_role"] == "vcpu 1" and lock["holder_state"] == "spinning"
    assert lock["holder_last_event"] == "kvm_cpu_exec" and lock["held_for_s"] > 2.9
    assert [w["role"] for w in lock["waiters"]] == ["main"]
    fixed = tmp_path / "fixed.trace"
    assert main(["run", "--quiet", "--fix", "quiesced", "--log", str(fixed), "--log-format", "qemu-trace"]) == 0
    capsys.readouterr()
    assert analyse(capsys, str(fixed))["lockup"] is None


def test_perfetto_and_plot_of_a_real_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    assert main(["analyze", str(STALL), "--perfetto", str(out)]) == 0
    trace = json.loads(out.read_text())
    names = {e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "thread_name"}
    assert any(n.endswith("vcpu 0") for n in names) and any(n.endswith("main") for n in names)
    held = [e for e in trace["traceEvents"] if e.get("name") == "BQL held" and e["args"].get("still_open_at_end")]
    assert len(held) == 1 and held[0]["dur"] > 1e6
    pytest.importorskip("matplotlib")
    assert main(["analyze", str(STALL), "--plot", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 0


@pytest.mark.parametrize("content, error", [
    (b"hello world\nthis is not a trace\n", "neither a vcpu_sched event log nor a QEMU trace log"),
    (bytes(range(256)) * 20, "neither a vcpu_sched event log nor a QEMU trace log"),
    (b"", "neither a vcpu_sched event log nor a QEMU trace log"),
])
def test_not_a_trace_is_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               content: bytes, error: str) -> None:
    bad = tmp_path / "bad.trace"
    bad.write_bytes(content)
    assert main(["analyze", str(bad)]) == 2
    err = capsys.readouterr().err
    assert error in err and len(err.strip().splitlines()) == 1


def test_damaged_and_mutex_free_traces_are_still_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = STALL.read_text()
    cut = tmp_path / "cut.trace"
    cut.write_text(text[:-20] + "\n" + "\x00\x01garbage\n" + text[:-30].splitlines()[-1][:15])
    s = analyse(capsys, str(cut))
    assert s["corrupt_count"] == 3 and {c["why"] for c in s["corrupt"]} == {
        "binary data", "truncated last line", "qemu_mutex_unlock: arguments are not 'MUTEX (FILE:LINE)'"}
    assert s["bql"]["mutex"] is not None
    no_mutex = tmp_path / "kvm.trace"
    no_mutex.write_text("1@1.000001:kvm_cpu_exec \n1@1.000002:kvm_run_exit cpu_index 0, reason 19\n")
    s = analyse(capsys, str(no_mutex))
    assert s["bql"]["mutex"] is None and s["lockup"] is None
    assert main(["analyze", str(no_mutex)]) == 0
    assert "no BQL found" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("qemu-system-ppc64") is None,
                    reason="qemu-system-ppc64 is not installed (apt-get install qemu-system-ppc)")
def test_real_qemu_trace_now(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh trace of the installed binary: the BQL is the mutex the main loop takes, four vCPUs, no lockup."""
    log = tmp_path / "t.log"
    proc = subprocess.Popen(["qemu-system-ppc64", "-M", "pseries", "-smp", "4", "-m", "1G", "-nographic",
                             "-msg", "timestamp=on", "-trace", "qemu_mutex_*", "-D", str(log), "-monitor", "none",
                             "-serial", "null"], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the main loop and a vCPU have both logged
            text = log.read_text() if log.exists() else ""
            if "util/main-loop.c" in text and "accel/tcg" in text:
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    s = analyse(capsys, str(log))
    bql = next(line.split("mutex ")[1].split()[0] for line in log.read_text().splitlines()
               if "util/main-loop.c" in line)
    assert s["bql"]["mutex"] == bql and s["lockup"] is None
    assert {"main", "vcpu 0"} <= {t["role"] for t in s["threads"]}


def test_cli_help_mentions_qemu_traces() -> None:
    out = subprocess.run([sys.executable, "-m", "vcpu_sched", "analyze", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "qemu-trace" in out


def test_a_holder_waiting_for_another_mutex_is_blocked_on_it(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """An ABBA-shaped stall written by hand in QEMU 7.2's format: thread 11 takes the BQL, then waits for a
    mutex that thread 12 holds; the main loop waits for the BQL."""
    bql, other = "0x55d0000005a0", "0x55d000000f80"
    lines = [
        f"10@100.000000:qemu_mutex_lock waiting on mutex {bql} (../../util/main-loop.c:318)",
        f"10@100.000001:qemu_mutex_locked taken mutex {bql} (../../util/main-loop.c:318)",
        f"10@100.000002:qemu_mutex_unlock released mutex {bql} (../../util/main-loop.c:322)",
        f"12@100.000010:qemu_mutex_lock waiting on mutex {other} (../../cpus-common.c:134)",
        f"12@100.000011:qemu_mutex_locked taken mutex {other} (../../cpus-common.c:134)",
        f"11@100.000020:qemu_mutex_lock waiting on mutex {bql} (../../accel/tcg/cpu-exec.c:700)",
        f"11@100.000021:qemu_mutex_locked taken mutex {bql} (../../accel/tcg/cpu-exec.c:700)",
        f"11@100.000030:qemu_mutex_lock waiting on mutex {other} (../../cpus-common.c:134)",
        f"10@100.010000:qemu_mutex_lock waiting on mutex {bql} (../../util/main-loop.c:318)",
        "13@103.000000:qemu_mutex_lock waiting on mutex 0x55d000000aa0 (../../monitor/monitor.c:99)",
    ]
    trace = tmp_path / "abba.trace"
    trace.write_text("\n".join(lines) + "\n")
    lock = analyse(capsys, str(trace))["lockup"]
    assert lock["holder"] == 11 and lock["holder_state"] == "blocked"
    assert lock["holder_waiting_for"] == {"mutex": other, "site": "../../cpus-common.c:134"}
    assert lock["held_for_s"] == pytest.approx(2.999979)
    assert [(w["tid"], w["role"]) for w in lock["waiters"]] == [(10, "main")]
