#!/usr/bin/env python3
"""Record real QEMU trace logs for tests/data (Linux, root or ptrace rights, qemu-system-ppc64 installed).

    tools/record_qemu_trace.py healthy OUT.log [--seconds 3]
    tools/record_qemu_trace.py stall OUT.log [--stall 3]
    tools/record_qemu_trace.py nested OUT.log [--stall 5]

All three boot a pseries guest with no kernel (SLOF idles) under TCG with `-msg timestamp=on -trace
'qemu_mutex_*' -trace 'kvm_*'` and a QMP socket (`nested` also an HMP socket). `stall` makes a real BQL stall:
it stops one vCPU thread - that thread only - with PTRACE_SEIZE + PTRACE_INTERRUPT at a moment its trace shows
it holding the BQL (it retries, detaching, until one lands there), keeps it stopped for --stall seconds while
a QMP client sends `query-status` and the out-of-band `migrate-pause` every 0.25 s (the monitor's I/O thread
handles them, with mutex events, so the trace goes on; the main loop answers none of the in-band ones), then
kills QEMU (whose main loop cannot quit without the BQL). QEMU flushes its log after every line (util/log.c),
so the file is complete at the moment of the stop. The output is then cut to the lines the tests need.

`nested` makes a BQL holder wait for a second mutex: it traces the syscalls of the QMP monitor's I/O thread
(PTRACE_SYSCALL) and keeps it stopped at the entry of the sendmsg() that writes the answer to an out-of-band
`migrate-pause` (qio_channel_socket_writev, io/channel-socket.c:594 in 7.2). There the thread holds its
monitor's `mon_lock` (monitor_puts, monitor/monitor.c:217 in 7.2) and the chardev's `chr_write_lock`
(chardev/char.c:118), and not the log file's lock (QEMU's log write ends, fflush and unlock, before the
chardev write). Then `system_powerdown` on the HMP socket makes the main loop emit the POWERDOWN event with
the BQL held: qemu_system_powerdown -> qapi_event_send_powerdown -> monitor_qapi_event_emit ->
qmp_send_response -> monitor_puts, which waits for that `mon_lock` (7.2: softmmu/runstate.c:638,
monitor/monitor.c:340, monitor/qmp.c:118). The vCPU running SLOF then waits for the BQL. After --stall seconds
the I/O thread is let go: the main loop gets `mon_lock`, releases it and the BQL, and the run goes on for 0.1
s before QEMU is killed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PTRACE_SYSCALL = 24
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_GET_SYSCALL_INFO = 0x420E
PTRACE_O_TRACESYSGOOD = 1
SYSCALL_INFO_ENTRY = 1
SYS_SENDMSG = {"x86_64": 46, "aarch64": 211, "ppc64le": 341, "s390x": 370}
WALL = 0x40000000
LINE = re.compile(r"(\d+)@([\d.]+):(qemu_mutex_locked|qemu_mutex_unlock) \S+ mutex (0x[0-9a-f]+)")

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(request: int, tid: int, data: int = 0) -> None:
    if libc.ptrace(request, tid, None, ctypes.c_void_p(data)) != 0:
        raise OSError(ctypes.get_errno(), f"ptrace({request:#x}, {tid})")


class SyscallInfo(ctypes.Structure):
    """struct ptrace_syscall_info (linux/ptrace.h), as far as the entry's number."""

    _fields_ = [("op", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3), ("arch", ctypes.c_uint32),
                ("ip", ctypes.c_uint64), ("sp", ctypes.c_uint64), ("nr", ctypes.c_uint64),
                ("args", ctypes.c_uint64 * 6), ("ret_data", ctypes.c_uint32)]


def syscall_entered(tid: int) -> int | None:
    """At a syscall stop: the number of the syscall being entered, None at an exit."""
    info = SyscallInfo()
    if libc.ptrace(PTRACE_GET_SYSCALL_INFO, tid, ctypes.c_void_p(ctypes.sizeof(info)), ctypes.byref(info)) <= 0:
        raise OSError(ctypes.get_errno(), f"PTRACE_GET_SYSCALL_INFO {tid}")
    return int(info.nr) if info.op == SYSCALL_INFO_ENTRY else None


def start(log: Path, smp: int, qmp: Path, hmp: Path | None = None) -> subprocess.Popen[bytes]:
    qemu = shutil.which("qemu-system-ppc64")
    if qemu is None:
        sys.exit("qemu-system-ppc64 is not installed (apt-get install qemu-system-ppc)")
    monitor = f"unix:{hmp},server=on,wait=off" if hmp else "none"
    return subprocess.Popen([qemu, "-M", "pseries", "-smp", str(smp), "-m", "1G", "-nographic",
                             "-msg", "timestamp=on", "-trace", "qemu_mutex_*", "-trace", "kvm_*", "-D", str(log),
                             "-monitor", monitor, "-name", "pseries,debug-threads=on",
                             "-chardev", f"socket,id=qmp,path={qmp},server=on,wait=off",
                             "-mon", "chardev=qmp,mode=control", "-serial", "null"], stdin=subprocess.DEVNULL)


def threads_named(pid: int, prefix: str) -> dict[int, str]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        if name.startswith(prefix):
            out[int(task.name)] = name
    return out


def vcpu_threads(pid: int) -> dict[int, str]:
    return threads_named(pid, "CPU ")


def bql_of(log: Path) -> str:
    """The mutex the main loop takes (util/main-loop.c)."""
    for text in log.read_text(errors="replace").splitlines():
        if "util/main-loop.c" in text and "mutex" in text:
            return text.split("mutex ")[1].split()[0]
    raise SystemExit("no BQL in the trace yet")


def holds(log: Path, tid: int, bql: str) -> float | None:
    """When the thread's last BQL event is `taken`: that event's time."""
    last, when = None, 0.0
    for text in log.read_text(errors="replace").splitlines():
        m = LINE.match(text)
        if m and int(m.group(1)) == tid and m.group(4) == bql:
            last, when = m.group(3), float(m.group(2))
    return when if last == "qemu_mutex_locked" else None


def connect_unix(path: Path, timeout: float = 5, qemu: subprocess.Popen[bytes] | None = None) -> socket.socket:
    """A client of QEMU's unix socket at `path`, once QEMU has made it (`timeout` seconds at most, less if
    `qemu` exits first); OSError when there is none."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline and (qemu is None or qemu.poll() is None):
        time.sleep(0.05)
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(path))
    return client


def qmp_client(path: Path) -> socket.socket:
    client = connect_unix(path)
    client.settimeout(5)
    client.recv(4096)  # the greeting
    client.sendall(b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}\n')
    client.recv(4096)
    return client


def others_still_log(log: Path, client: socket.socket) -> bool:
    """False when the stop caught the thread inside QEMU's log write, holding the log's FILE lock: then
    every other thread would block on its next trace line, and the trace would end with the stop."""
    for _ in range(3):  # lines already on their way right after the stop do not count: three windows
        size = log.stat().st_size
        client.sendall(b'{"exec-oob": "migrate-pause"}\n')
        time.sleep(0.2)
        if log.stat().st_size == size:
            return False
    return True


def stall(log: Path, seconds: float, qmp: Path) -> float:
    """Returns the time the stopped thread took the BQL."""
    proc = start(log, 4, qmp)
    stopped = None
    try:
        client = qmp_client(qmp)
        time.sleep(1.5)  # SLOF running; not a test, a recording
        bql = bql_of(log)
        threads = vcpu_threads(proc.pid)
        target = min(threads)  # CPU 0: the one running SLOF
        for attempt in range(1, 2001):
            ptrace(PTRACE_SEIZE, target)
            ptrace(PTRACE_INTERRUPT, target)
            os.waitpid(target, WALL)
            took = holds(log, target, bql)
            if took is not None and others_still_log(log, client):
                stopped = target
                print(f"stopped {threads[target]} (tid {target}) holding the BQL {bql} after {attempt} tries",
                      file=sys.stderr)
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    client.sendall(b'{"execute": "query-status"}\n{"exec-oob": "migrate-pause"}\n')
                    time.sleep(0.25)
                return took
            ptrace(PTRACE_DETACH, target)
            time.sleep(random.uniform(0.0005, 0.005))
        raise SystemExit("never caught the vCPU holding the BQL")
    finally:
        proc.send_signal(signal.SIGKILL)
        if stopped is not None:  # a traced thread is reaped by its tracer before its process can be
            os.waitpid(stopped, WALL)
        proc.wait()


def held_by(log: Path, tid: int) -> dict[str, str]:
    """The mutexes the thread's trace shows it holding now: address -> the site that took it."""
    held: dict[str, str] = {}
    mutex = re.compile(r"(\d+)@[\d.]+:qemu_mutex_(locked|unlock) \S+ mutex (\S+) \((.*)\)")
    for text in log.read_text(errors="replace").splitlines():
        m = mutex.match(text)
        if m and int(m.group(1)) == tid:
            if m.group(2) == "locked":
                held[m.group(3)] = m.group(4)
            else:
                held.pop(m.group(3), None)
    return held


def last_line(log: Path, tid: int) -> str:
    mine = [t for t in log.read_text(errors="replace").splitlines() if t.startswith(f"{tid}@")]
    return mine[-1] if mine else ""


def wait_stop(tid: int, seconds: float) -> int:
    """The next stop's status, or SystemExit after `seconds` with no stop."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pid, status = os.waitpid(tid, WALL | os.WNOHANG)
        if pid:
            return status
        time.sleep(0.0005)
    raise SystemExit(f"thread {tid} did not stop within {seconds} s")


def nested(log: Path, seconds: float, qmp: Path, hmp: Path) -> float:
    """Returns the time the I/O thread was stopped (the trace's cut is made from there)."""
    proc = start(log, 4, qmp, hmp)
    traced = None
    try:
        client = qmp_client(qmp)
        human = connect_unix(hmp)
        time.sleep(1.5)  # SLOF running; not a test, a recording
        bql = bql_of(log)
        iothread = min(threads_named(proc.pid, "IO mon_iothread"), default=None)
        if iothread is None:
            raise SystemExit("no thread named 'IO mon_iothread' (the QMP monitor's I/O thread)")
        ptrace(PTRACE_SEIZE, iothread, PTRACE_O_TRACESYSGOOD)
        traced = iothread
        ptrace(PTRACE_INTERRUPT, iothread)
        wait_stop(iothread, 5)
        ptrace(PTRACE_SYSCALL, iothread)
        client.sendall(b'{"exec-oob": "migrate-pause"}\n')  # its answer is written by the I/O thread
        sendmsg = SYS_SENDMSG[os.uname().machine]
        while True:
            status = wait_stop(iothread, 5)
            if not os.WIFSTOPPED(status):
                raise SystemExit(f"the I/O thread ended (status {status:#x})")
            sig = os.WSTOPSIG(status)
            if sig == signal.SIGTRAP | 0x80:
                if syscall_entered(iothread) == sendmsg:
                    break
                sig = 0
            elif sig == signal.SIGTRAP or status >> 16:
                sig = 0  # a ptrace event stop, not a signal to deliver
            ptrace(PTRACE_SYSCALL, iothread, sig)
        stopped_at = time.time()
        time.sleep(0.2)
        held = held_by(log, iothread)
        print(f"I/O thread {iothread} stopped entering sendmsg, holding {held}", file=sys.stderr)
        if not held:
            raise SystemExit("the I/O thread holds no mutex at its stop")
        human.sendall(b"system_powerdown\n")  # the main loop emits POWERDOWN with the BQL held
        main_tid = proc.pid
        until = time.monotonic() + 5
        while not any(f"waiting on mutex {m} " in last_line(log, main_tid) for m in held):
            if time.monotonic() > until:
                raise SystemExit(f"the main loop did not wait for {held}: its last line is "
                                 f"{last_line(log, main_tid)!r}")
            time.sleep(0.05)
        if bql not in held_by(log, main_tid):
            raise SystemExit("the main loop waits without holding the BQL")
        print(f"main loop waits: {last_line(log, main_tid)}", file=sys.stderr)
        time.sleep(seconds)
        ptrace(PTRACE_DETACH, iothread)
        traced = None
        time.sleep(0.1)
        return stopped_at
    finally:
        proc.send_signal(signal.SIGKILL)
        if traced is not None:
            os.waitpid(traced, WALL)
        proc.wait()


def healthy(log: Path, seconds: float, qmp: Path) -> None:
    proc = start(log, 4, qmp)
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def cut(raw: Path, out: Path, keep_s: float, since: float | None = None) -> None:
    """Keep the trace from keep_s seconds before `since` (default: before its end)."""
    stamp = re.compile(r"\d+@([\d.]+):")
    last = 0.0
    with raw.open(errors="replace") as lines:
        for text in lines:
            if m := stamp.match(text):
                last = max(last, float(m.group(1)))
    last = since if since is not None else last
    keeping = False
    with raw.open(errors="replace") as lines, out.open("w") as kept:
        for text in lines:
            m = stamp.match(text)
            keeping = keeping or (m is not None and float(m.group(1)) >= last - keep_s)
            if keeping:
                kept.write(text)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("healthy", "stall", "nested"))
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=float, default=3.0, help="healthy: how long to run")
    p.add_argument("--stall", type=float, default=3.0,
                   help="stall: how long the vCPU stays stopped; nested: how long the main loop waits")
    p.add_argument("--keep", type=float, default=0.25,
                   help="seconds of trace kept before the end (stall: before the stopped thread took the BQL; "
                        "nested: before the I/O thread's stop)")
    p.add_argument("--raw", type=Path, help="also keep the whole trace here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.log"
        if args.kind == "healthy":
            healthy(raw, args.seconds, Path(tmp) / "qmp.sock")
            cut(raw, args.out, args.keep)
        elif args.kind == "stall":
            took = stall(raw, args.stall, Path(tmp) / "qmp.sock")
            cut(raw, args.out, args.keep, took)
        else:
            stopped = nested(raw, args.stall, Path(tmp) / "qmp.sock", Path(tmp) / "hmp.sock")
            cut(raw, args.out, args.keep, stopped)
        if args.raw:
            shutil.copyfile(raw, args.raw)
    print(f"{args.out}: {args.out.stat().st_size:,} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
