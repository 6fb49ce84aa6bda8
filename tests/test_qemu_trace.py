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
NESTED = DATA / "nested-mutex-ptrace.trace"
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
    # Stopped by ptrace right after taking the BQL: not one line of its own since, and no mutex asked for.
    assert not [1 for tid, ns, _, _ in events if tid == holder and ns > took]
    assert lock["holder_state"] == "silent" and "taken mutex " + bql in lock["holder_last_event"]
    during = lock["holder_during_hold"]
    assert during["events"] == 0 and during["longest_wait"] is None
    assert during["silent_s"] == pytest.approx(lock["held_for_s"]) and lock["holder_waiting_for"] is None
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
    assert "LOCKUP: thread" in out and "holder SILENT" in out and "util/main-loop.c:318" in out


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
    assert p["longest_hold"]["holder"]["state"] is None  # without time, neither silence nor a spin is seen


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


def test_real_holder_blocked_on_a_second_mutex_is_blocked_on_it(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A real QEMU 7.2 trace (tools/record_qemu_trace.py nested): the main loop, holding the BQL, waits 5 s for
    the QMP monitor's mon_lock, which the monitor's I/O thread (stopped by ptrace in sendmsg) holds; it gets
    it and releases both. Its last event before the release is microseconds old: that is not spinning."""
    events = lines_of(NESTED)
    bql = next(args.split()[3] for _, _, _, args in events if "util/main-loop.c" in args)
    # The facts, read here from the lines: the longest wait for a mutex other than the BQL.
    asked: dict[int, tuple[int, str, str]] = {}
    waits = []
    for tid, ns, name, args in events:
        m = re.search(r"mutex (\S+) \((.*)\)", args)
        if m is None:
            continue
        mutex, site = m.groups()
        if name == "qemu_mutex_lock" and mutex != bql:
            asked[tid] = (ns, mutex, site)
        elif name == "qemu_mutex_locked" and tid in asked and asked[tid][1] == mutex:
            since, _, where = asked.pop(tid)
            waits.append((ns - since, tid, mutex, where, ns))
    waited, waiter, mutex, site, got = max(waits)
    owner = next(tid for tid, ns, name, args in reversed(events)
                 if ns <= got and name == "qemu_mutex_unlock" and mutex in args and tid != waiter)
    took_it = max(ns for tid, ns, name, args in events if tid == owner and name == "qemu_mutex_locked"
                  and mutex in args and ns < got)
    assert waited > 4e9 and site.endswith("monitor/monitor.c:217")

    lock = analyse(capsys, str(NESTED))["lockup"]
    assert lock["holder"] == waiter and lock["holder_role"] == "main" and not lock["ongoing"]
    assert lock["holder_silent_s"] < 0.001  # the old reading: a recent last event, "spinning"
    assert lock["holder_state"] == "blocked" and lock["holder_waiting_for"] is None  # got it before the end
    during = lock["holder_during_hold"]
    wait = during["longest_wait"]
    assert (wait["mutex"], wait["site"], wait["got_it"]) == (mutex, site, True)
    assert wait["waited_s"] == pytest.approx(waited / 1e9, abs=1e-6)
    assert during["blocked_s"] >= wait["waited_s"] and during["blocked_s"] > lock["held_for_s"] / 2
    assert during["blocked_s"] + during["silent_s"] + during["busy_s"] == pytest.approx(lock["held_for_s"])
    # The chain: who held that mutex meanwhile, and what it did - nothing the trace shows, for 5 s.
    held_by = wait["held_by"]
    assert (wait["held_by_tid"], wait["held_by_role"]) == (owner, "monitor")
    assert held_by["site"].endswith("monitor/monitor.c:217") and held_by["released"]
    assert held_by["since_s"] == pytest.approx((took_it - events[0][1]) / 1e9, abs=1e-6)
    assert held_by["state"] == "silent" and held_by["longest_silence_s"] > 4.0
    assert [w["role"] for w in lock["waiters"]] == ["vcpu 0"]
    assert main(["analyze", str(NESTED)]) == 0
    out = capsys.readouterr().out
    perfetto = tmp_path / "nested.json"
    assert main(["analyze", str(NESTED), "--perfetto", str(perfetto)]) == 0
    capsys.readouterr()
    slices = json.loads(perfetto.read_text())["traceEvents"]
    nested = [e for e in slices if e.get("cat") == "mutex wait"]
    held = next(e for e in slices if e.get("cat") == "BQL held" and e["dur"] > 4e6)
    assert [(e["name"], e["tid"]) for e in nested] == [(f"waiting for mutex {mutex} ({site})", held["tid"])]
    assert nested[0]["dur"] == pytest.approx(waited / 1e3, abs=1) and held["ts"] <= nested[0]["ts"]
    assert f"holder BLOCKED: {wait['waited_s']:.6f} s waiting for mutex {mutex} (asked at {site}" in out
    assert f"mutex {mutex} was held by thread {owner} (monitor)" in out and "SILENT" in out


BQL, OTHER = "0x55d0000005a0", "0x55d000000f80"


def _synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str], during: list[str], end: list[str],
               drop: str = "") -> dict:
    """Thread 11 (a vCPU) takes the BQL at 100 s; `during` is what it does next; the main loop (10) waits
    for the BQL from 100.5 s; thread 12 took OTHER at 99.9 s (cpus-common.c:329)."""
    lines = [
        f"10@99.000000:qemu_mutex_lock waiting on mutex {BQL} (../../util/main-loop.c:318)",
        f"10@99.000001:qemu_mutex_locked taken mutex {BQL} (../../util/main-loop.c:318)",
        f"10@99.000002:qemu_mutex_unlock released mutex {BQL} (../../util/main-loop.c:322)",
        f"12@99.900000:qemu_mutex_lock waiting on mutex {OTHER} (../../cpus-common.c:329)",
        f"12@99.900001:qemu_mutex_locked taken mutex {OTHER} (../../cpus-common.c:329)",
        f"11@100.000000:qemu_mutex_lock waiting on mutex {BQL} (../../accel/tcg/cpu-exec.c:700)",
        f"11@100.000001:qemu_mutex_locked taken mutex {BQL} (../../accel/tcg/cpu-exec.c:700)",
        f"10@100.500000:qemu_mutex_lock waiting on mutex {BQL} (../../util/main-loop.c:318)",
        *during, *end]
    lines = [text for text in lines if text != drop]
    lines.sort(key=lambda text: float(text.split("@")[1].split(":")[0]))
    trace = tmp_path / "t.trace"
    trace.write_text("\n".join(lines) + "\n")
    lock = analyse(capsys, str(trace))["lockup"]
    assert lock["holder"] == 11 and lock["holder_role"] == "vcpu 0"
    d = lock["holder_during_hold"]
    assert d["blocked_s"] + d["silent_s"] + d["busy_s"] == pytest.approx(lock["held_for_s"])
    return lock


@pytest.mark.parametrize("ends", [True, False])
def test_issue_25_holder_blocked_5_s_on_cpus_common_134(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        ends: bool) -> None:
    """Issue 25 item 8 as written: the vCPU holding the BQL waits 5 s for a mutex at cpus-common.c:134, gets
    it and releases both 14 us later (or the trace ends while it still waits): blocked on that mutex."""
    during = [f"11@100.000010:qemu_mutex_lock waiting on mutex {OTHER} (../../cpus-common.c:134)"]
    end = [f"12@105.000000:qemu_mutex_unlock released mutex {OTHER} (../../cpus-common.c:337)",
           f"11@105.000002:qemu_mutex_locked taken mutex {OTHER} (../../cpus-common.c:134)",
           f"11@105.000004:qemu_mutex_unlock released mutex {OTHER} (../../cpus-common.c:137)",
           f"11@105.000018:qemu_mutex_unlock released mutex {BQL} (../../softmmu/cpus.c:511)",
           f"10@105.000020:qemu_mutex_locked taken mutex {BQL} (../../util/main-loop.c:318)"] if ends else [
           "13@105.000000:qemu_mutex_lock waiting on mutex 0x55d000000aa0 (../../monitor/monitor.c:99)"]
    lock = _synthetic(tmp_path, capsys, during, end)
    assert lock["holder_state"] == "blocked" and lock["ongoing"] is not ends
    wait = lock["holder_during_hold"]["longest_wait"]
    assert (wait["mutex"], wait["site"], wait["got_it"]) == (OTHER, "../../cpus-common.c:134", ends)
    assert wait["waited_s"] == pytest.approx(4.999992 if ends else 4.99999, abs=1e-6)
    assert lock["holder_waiting_for"] == (None if ends else {"mutex": OTHER, "site": "../../cpus-common.c:134"})
    assert (wait["held_by_tid"], wait["held_by"]["site"]) == (12, "../../cpus-common.c:329")
    assert wait["held_by"]["released"] is ends and not wait["deadlock"]
    if ends:
        assert lock["holder_silent_s"] == pytest.approx(14e-6)
        assert wait["got_it_before_end_s"] == pytest.approx(16e-6)


def test_deadlock_chain_comes_back_to_the_holder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Thread 11 holds the BQL and waits for OTHER; 12 holds OTHER and waits for the BQL: an ABBA deadlock."""
    lock = _synthetic(tmp_path, capsys, [
        f"11@100.000010:qemu_mutex_lock waiting on mutex {OTHER} (../../cpus-common.c:134)",
        f"12@100.000020:qemu_mutex_lock waiting on mutex {BQL} (../../softmmu/cpus.c:423)"],
        ["13@103.000000:qemu_mutex_lock waiting on mutex 0x55d000000aa0 (../../monitor/monitor.c:99)"])
    wait = lock["holder_during_hold"]["longest_wait"]
    assert lock["holder_state"] == "blocked" and wait["held_by_tid"] == 12
    back = wait["held_by"]["longest_wait"]
    assert (back["mutex"], back["held_by_tid"], back["deadlock"]) == (BQL, 11, True)
    assert wait["held_by"]["state"] == "blocked"


@pytest.mark.parametrize("period_us, state", [(500, "spinning"), (200_000, "silent")])
def test_busy_and_silent_holders(tmp_path: Path, capsys: pytest.CaptureFixture[str], period_us: int,
                                 state: str) -> None:
    """A holder logging every 0.5 ms is busy (spinning); every 0.2 s it is mostly silent (the silence
    threshold is 1% of --threshold: 10 ms). The event count is the holder's lines after taking the BQL."""
    n = 3_000_000 // period_us
    during = [f"11@{100 + (i + 1) * period_us / 1e6:.6f}:kvm_cpu_exec " for i in range(n)]
    lock = _synthetic(tmp_path, capsys, during, [f"13@{100 + (n + 1) * period_us / 1e6:.6f}:kvm_cpu_exec "])
    d = lock["holder_during_hold"]
    assert lock["holder_state"] == state and d["events"] == n and d["longest_wait"] is None
    if state == "silent":
        assert d["longest_silence_s"] == pytest.approx(0.2, abs=1e-6)
        assert d["silent_s"] > lock["held_for_s"] / 2
    else:
        assert d["silent_s"] == 0 and d["busy_s"] == pytest.approx(lock["held_for_s"])


@pytest.mark.real
@pytest.mark.skipif(shutil.which("qemu-system-ppc64") is None,
                    reason="qemu-system-ppc64 is not installed (apt-get install qemu-system-ppc)")
@pytest.mark.skipif(sys.platform != "linux", reason="the recorder uses ptrace (Linux)")
def test_record_a_fresh_nested_trace_and_analyse_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tools/record_qemu_trace.py nested on the installed binary: the main loop waits 2 s for the monitor's
    mon_lock with the BQL held, and analyze says blocked, on that mutex, at that site."""
    out = tmp_path / "nested.trace"
    tool = Path(__file__).parent.parent / "tools" / "record_qemu_trace.py"
    done = subprocess.run([sys.executable, str(tool), "nested", str(out), "--stall", "2"], capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip(f"no ptrace rights here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    waited = re.search(r"main loop waits: \d+@[\d.]+:qemu_mutex_lock waiting on mutex (\S+) \((.*)\)", done.stderr)
    assert waited is not None, done.stderr
    # The longest hold, not the lockup: whether the vCPU asks for the BQL within a second depends on SLOF.
    hold = analyse(capsys, str(out))["longest_hold"]
    wait = hold["holder"]["longest_wait"]
    assert hold["role"] == "main" and hold["holder"]["state"] == "blocked"
    assert (wait["mutex"], wait["site"], wait["got_it"]) == (waited[1], waited[2], True)
    assert wait["waited_s"] > 1.9 and wait["held_by_role"] == "monitor"


def test_an_owner_that_took_the_mutex_before_the_trace_is_named_by_its_release(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cut trace: thread 12's `taken` of OTHER is before the first line, its `released` is in it."""
    lock = _synthetic(tmp_path, capsys, [
        f"11@100.000010:qemu_mutex_lock waiting on mutex {OTHER} (../../cpus-common.c:134)"], [
        f"14@99.950000:qemu_mutex_unlock released mutex {OTHER} (../../cpus-common.c:337)",  # another, earlier
        f"12@104.000000:qemu_mutex_unlock released mutex {OTHER} (../../cpus-common.c:337)",
        f"11@104.000002:qemu_mutex_locked taken mutex {OTHER} (../../cpus-common.c:134)",
        f"11@104.000004:qemu_mutex_unlock released mutex {OTHER} (../../cpus-common.c:137)",
        f"11@104.000018:qemu_mutex_unlock released mutex {BQL} (../../softmmu/cpus.c:511)"],
        drop=f"12@99.900001:qemu_mutex_locked taken mutex {OTHER} (../../cpus-common.c:329)")
    wait = lock["holder_during_hold"]["longest_wait"]
    assert lock["holder_state"] == "blocked" and wait["got_it"]
    assert (wait["held_by_tid"], wait["taken_before_trace"], wait["held_by"]) == (12, True, None)
    assert main(["analyze", str(tmp_path / "t.trace")]) == 0
    assert f"mutex {OTHER} was held by thread 12 (unknown), taken before the trace begins" in capsys.readouterr().out


def test_a_condition_wait_under_the_bql_is_blocked_on_that_condition(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """qemu_cond_wait shows as `released` then `taken` with no `waiting on` between (QEMU traces no condition
    event): with the BQL held across it, the holder was blocked on the condition, not silent."""
    lock = _synthetic(tmp_path, capsys, [
        f"11@100.000010:qemu_mutex_lock waiting on mutex {OTHER} (../../util/thread-pool.c:50)",
        f"11@100.000011:qemu_mutex_locked taken mutex {OTHER} (../../util/thread-pool.c:50)",
        f"11@100.000012:qemu_mutex_unlock released mutex {OTHER} (./include/qemu/thread.h:60)",
        f"12@101.000000:qemu_mutex_lock waiting on mutex {OTHER} (../../util/thread-pool.c:80)",
        f"12@101.000001:qemu_mutex_locked taken mutex {OTHER} (../../util/thread-pool.c:80)",
        f"12@101.000002:qemu_mutex_unlock released mutex {OTHER} (../../util/thread-pool.c:82)",
        f"11@103.000000:qemu_mutex_locked taken mutex {OTHER} (./include/qemu/thread.h:60)",
        f"11@103.000001:qemu_mutex_unlock released mutex {OTHER} (../../util/thread-pool.c:55)",
        f"11@103.000010:qemu_mutex_unlock released mutex {BQL} (../../softmmu/cpus.c:511)"], [])
    wait = lock["holder_during_hold"]["longest_wait"]
    assert lock["holder_state"] == "blocked" and wait["condition"] and wait["got_it"]
    assert (wait["mutex"], wait["site"]) == (OTHER, "./include/qemu/thread.h:60")
    assert wait["waited_s"] == pytest.approx(2.999988) and wait["held_by_tid"] is None
    assert main(["analyze", str(tmp_path / "t.trace")]) == 0
    assert "waiting on a condition variable (qemu_cond_wait: mutex" in capsys.readouterr().out


def test_the_bql_is_counted_over_every_mutex_event_when_the_quick_count_of_takes_points_elsewhere(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first pass counts only `taken` lines, the second every mutex event: where they disagree the second
    is made again with its own BQL, and the report is the one of that BQL."""
    taken_more = "".join(f"101@1.00000{i}:qemu_mutex_locked taken mutex 0xbbbb (../util/main-loop.c:318)\n"
                         for i in range(3))
    trace = tmp_path / "t.trace"
    trace.write_text("".join(f"100@1.00001{i}:qemu_mutex_lock waiting on mutex 0xaaaa (../util/main-loop.c:318)\n"
                             f"100@1.00002{i}:qemu_mutex_locked taken mutex 0xaaaa (../util/main-loop.c:318)\n"
                             f"100@1.00003{i}:qemu_mutex_unlock released mutex 0xaaaa (../util/main-loop.c:300)\n"
                             for i in range(2)) + taken_more)
    s = analyse(capsys, str(trace))
    assert s["bql"]["mutex"] == "0xaaaa" and "6 of its events" in s["bql"]["how"]
    assert {t["tid"]: t["bql_hold"]["count"] for t in s["threads"]} == {100: 2, 101: 0}
