"""One real run: start qemu-system-ppc64, read the guest console, drive the monitor script over QMP.

The monitor script is the scenario's (`monitor = [[pattern, command], ...]`): when a console line shows
the next pattern, the command is sent a moment later drawn from the seed (0-500 ms, as a management tool
would act, not at the pattern's instant), then the waiting guest is told to go on. `migrate` is a real
migration: `migrate` to a file through `exec:`, `quit`, and a second QEMU started with `-incoming` on
the same command line. A QMP command that gets no answer within the scenario's watchdog (`watchdog_s`, the
time the model lets a watched thread stay blocked; at least `MIN_WATCHDOG_S`) is a lockup. Every QEMU
this starts is killed (its whole process group) when the run ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .guest import WAITING
from .kit import Kit, cache_dir, run_initramfs
from .plan import Plan
from .verdict import Reading, check_harness, failures

QMP_TIMEOUT_S = 10.0  # connecting, and query-version
MIN_WATCHDOG_S = 2.0
MIGRATE_TIMEOUT_S = 120.0
PROBE_EVERY_S = 5.0  # query-status while the guest works: a main loop that stops answering is a lockup
# The first guest-visible failure decides the verdict, as in the model; after it the run goes on while the
# console does (the lines that come with it: a second CPU's start-cpu, the rest of a kdump kernel's boot,
# its traced RTAS calls), and ends once it has been quiet this long - Linux waits about 100 s of TCG time
# per stuck CPU, saying nothing.
AFTER_FAILURE_S = 10.0


class QmpTimeout(Exception):
    pass


def _pdeathsig() -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: QEMU dies with us


async def query_version(binary: str) -> str:
    """The binary's version as QMP's `query-version` gives it ("11.1.3"), from a QEMU started with -M none."""
    with tempfile.TemporaryDirectory(prefix="vcpu-sched-") as tmp:
        sock = Path(tmp) / "qmp.sock"
        proc = await asyncio.create_subprocess_exec(
            binary, "-machine", "none", "-nodefaults", "-display", "none", "-S",
            "-qmp", f"unix:{sock},server=on,wait=off", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            preexec_fn=_pdeathsig)
        try:
            qmp = await _connect(sock, proc)
            try:
                answer = await asyncio.wait_for(qmp.execute("query-version"), QMP_TIMEOUT_S)
            finally:
                await qmp.disconnect()
            q = answer["qemu"]
            return f"{q['major']}.{q['minor']}.{q['micro']}"
        finally:
            await _kill(proc)


async def _connect(sock: Path, proc: asyncio.subprocess.Process) -> Any:
    from qemu.qmp import QMPClient

    deadline = time.monotonic() + 30.0
    while not sock.exists():
        if proc.returncode is not None or time.monotonic() > deadline:
            err = (await proc.stderr.read()).decode(errors="replace").strip() if proc.stderr else ""
            raise RuntimeError(f"QEMU exited before its QMP socket appeared: {err.splitlines()[-1:] or '?'}")
        await asyncio.sleep(0.05)
    while True:  # the socket file exists from bind(); QEMU listens a moment later
        qmp = QMPClient("vcpu-sched")
        try:
            await asyncio.wait_for(qmp.connect(str(sock)), QMP_TIMEOUT_S)
            return qmp
        except Exception as e:  # qemu.qmp's ConnectError, or a timeout
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cannot connect to QEMU's QMP socket: {e}") from None
            await asyncio.sleep(0.1)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await proc.wait()


@dataclass
class Session:
    """The state of one real run while it goes."""

    binary: str
    plan: Plan
    kit: Kit
    seed: int
    deadline_s: float
    console_out: Callable[[str], None] | None = None
    reading: Reading = field(default_factory=Reading)
    work: Path = Path()
    proc: asyncio.subprocess.Process | None = None
    qmp: Any = None
    reader: asyncio.Task[None] | None = None
    pending: list[int] = field(default_factory=list)  # monitor entries whose pattern showed, not yet sent
    next_entry: int = 0
    waits: int = 0  # waits the guest printed that no command has answered yet
    busy: bool = False
    stopped: bool = False
    last_line_at: float = 0.0

    def _argv(self, incoming: str | None = None) -> list[str]:
        argv = [self.binary, *self.plan.argv_tail, "-kernel", str(self.kit.vmlinux),
                "-initrd", str(self.work / "initrd.cpio"), "-append", self.plan.script.cmdline,
                "-qmp", f"unix:{self.work / ('qmp-in.sock' if incoming else 'qmp.sock')},server=on,wait=off"]
        if incoming:
            argv += ["-incoming", incoming]
        return argv

    async def _start(self, incoming: str | None = None) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self._argv(incoming), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=_pdeathsig)
        self.qmp = await _connect(self.work / ("qmp-in.sock" if incoming else "qmp.sock"), self.proc)

    async def execute(self, command: str, args: dict[str, Any] | None = None) -> Any:
        shown = f"{command} {json.dumps(args, sort_keys=True)}" if args else command
        timeout = max(self.plan.model.watchdog_s, MIN_WATCHDOG_S)
        start = time.monotonic()
        try:
            answer = await asyncio.wait_for(self.qmp.execute(command, args), timeout)
        except TimeoutError:
            self.reading.qmp.append(f"-> {shown}: no answer in {timeout:.0f} s")
            self.reading.lockup = (f"the monitor did not answer {command} within {timeout:.0f} s "
                                   "(QEMU's main loop is blocked)")
            raise QmpTimeout from None
        except Exception as e:  # a QMP error object (qemu.qmp's ExecuteError) or a closed connection
            self.reading.qmp.append(f"-> {shown}: error: {e} ({time.monotonic() - start:.2f} s)")
            return None
        if command != "query-status" and command != "query-migrate":
            self.reading.qmp.append(f"-> {shown}: {json.dumps(answer, sort_keys=True)} "
                                    f"({time.monotonic() - start:.2f} s)")
        return answer

    def _go(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.write(b"go\n")

    def _guest_waits(self) -> None:
        later = any(self.plan.script.waits[self.next_entry:])
        if not later and not self.pending and not self.busy:
            self._go()  # nothing left for it to wait for (a second boot runs the same script)
        else:
            self.waits += 1

    def _ready(self) -> bool:
        """The next pending command may go: its guest is at its wait (a command the guest waits for is
        sent once it waits, so it lands where the model's guest holds, not in the middle of a boot)."""
        return bool(self.pending) and (not self.plan.script.waits[self.pending[0]] or self.waits > 0)

    async def _monitor_command(self, entry: int) -> None:
        command = self.plan.monitor[entry][1]
        await asyncio.sleep(random.Random(f"real-monitor:{self.seed}:{entry}").uniform(0.0, 0.5))
        words = command.split(maxsplit=1)
        if command == "migrate":
            await self._migrate()
        elif command == "system_reset":
            await self.execute("system_reset")
            self.waits = 0  # the guest that waited is gone; the next boot waits afresh
            return
        elif command == "nmi":
            await self.execute("inject-nmi")
            self.waits = 0
            return
        elif words[0] == "device_add":
            await self.execute("device_add", await self._device_args(words[1] if len(words) > 1 else ""))
        elif command == "info registers":
            await self.execute("human-monitor-command", {"command-line": "info registers"})
        else:
            await self.execute(command)
        if self.plan.script.waits[entry] and self.waits:
            self.waits -= 1
            self._go()

    async def _device_args(self, options: str) -> dict[str, Any]:
        """HMP's `DRIVER,prop=value` as QMP arguments; the model's `host-spapr-cpu-core` (KVM's `-cpu host`)
        becomes the core type this machine's CPU model plugs, as query-hotpluggable-cpus names it."""
        if not options:
            return {}  # QEMU answers "Parameter 'driver' is missing", as to HMP's bare device_add
        driver, *props = options.split(",")
        args: dict[str, Any] = {"driver": driver}
        for prop in props:
            key, _, value = prop.partition("=")
            args[key] = int(value) if value.isascii() and value.isdigit() else value
        if driver.startswith("host-"):
            slots = await self.execute("query-hotpluggable-cpus") or []
            types = {slot.get("type") for slot in slots}
            args["driver"] = next(iter(sorted(t for t in types if t)), driver)
        return args

    async def _migrate(self) -> None:
        """Migrate to a file and restore into a second QEMU on the same command line."""
        state = self.work / "migration.bin"
        await self.execute("migrate", {"uri": f"exec:cat > {state}"})
        deadline = time.monotonic() + MIGRATE_TIMEOUT_S
        while True:
            info = await self.execute("query-migrate") or {}
            status = info.get("status")
            if status in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
                self.reading.qmp.append(f"-> query-migrate: status {status}")
                break
            await asyncio.sleep(0.2)
        if status != "completed":
            self.reading.harness = f"the migration ended {status}"
            self.stopped = True
            return
        old, old_qmp = self.proc, self.qmp
        await self.execute("quit")
        with contextlib.suppress(Exception):
            await old_qmp.disconnect()
        assert old is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(old.wait(), 10.0)
        await _kill(old)
        self.reading.console.append("vcpu-sched: migrated; the destination QEMU loads the state")
        await self._start(f"exec:cat {state}")
        self.reader = asyncio.create_task(self._read_console())
        while True:
            status = (await self.execute("query-status") or {}).get("status")
            if status == "running" or time.monotonic() > deadline:
                self.reading.qmp.append(f"-> query-status (destination): {status}")
                break
            await asyncio.sleep(0.2)

    async def _read_console(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.last_line_at = time.monotonic()
            self.reading.console.append(line)
            if self.console_out is not None:
                self.console_out(line)
            harness = check_harness(line)
            if harness is not None:
                self.reading.harness = harness
            if line.strip() == WAITING:
                self._guest_waits()
            elif self.next_entry < len(self.plan.monitor) and self.plan.monitor[self.next_entry][0] in line:
                self.pending.append(self.next_entry)
                self.next_entry += 1

    async def _drive(self) -> None:
        await self._start()
        self.reader = asyncio.create_task(self._read_console())
        last_probe = time.monotonic()
        failed_at: float | None = None
        seen = 0
        while not self.stopped:
            if failed_at is None and failures(self.reading.console[seen:]):
                failed_at = time.monotonic()
            seen = len(self.reading.console)
            quiet = time.monotonic() - max(failed_at or 0.0, self.last_line_at)
            if failed_at is not None and quiet > AFTER_FAILURE_S and not self.busy:
                self.reading.ended = f"stopped when the console fell quiet {AFTER_FAILURE_S:.0f} s after a failure"
                return
            if self._ready():
                self.busy = True
                await self._monitor_command(self.pending.pop(0))
                self.busy = False
                continue
            if self.reader is not None and self.reader.done():
                proc = self.proc
                assert proc is not None
                await proc.wait()
                if not self.reading.done:
                    self.reading.ended = f"QEMU exited (status {proc.returncode}) before the guest finished"
                return
            if time.monotonic() - last_probe > PROBE_EVERY_S:
                await self.execute("query-status")
                last_probe = time.monotonic()
            await asyncio.sleep(0.05)

    async def run(self) -> Reading:
        with tempfile.TemporaryDirectory(prefix="vcpu-sched-real-") as tmp:
            self.work = Path(tmp)
            run_initramfs(self.kit, self.plan.script.init, self.plan.script.kdump_init, cache_dir() / "initramfs",
                          self.work / "initrd.cpio")
            try:
                await asyncio.wait_for(self._drive(), self.deadline_s)
            except TimeoutError:
                self.reading.ended = f"the run's deadline ({self.deadline_s:.0f} s) passed"
            except QmpTimeout:
                pass
            except (RuntimeError, OSError) as e:  # QEMU would not start, or its QMP went away
                self.reading.harness = str(e)
            finally:
                if self.qmp is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self.qmp.disconnect(), 2.0)
                if self.proc is not None:
                    stderr = self.proc.stderr
                    await _kill(self.proc)
                    if stderr is not None:
                        with contextlib.suppress(Exception):
                            text = (await asyncio.wait_for(stderr.read(), 1.0)).decode(errors="replace")
                            said = [t for t in text.splitlines()
                                    if t.strip() and "TCG doesn't support requested feature" not in t]
                            # what QEMU said first (an abort's message comes before its register dump)
                            self.reading.qmp += [f"qemu stderr: {t}" for t in said[:4]]
                            ended = self.reading.ended or ""
                            if said and ended.startswith("QEMU exited"):
                                self.reading.ended = f"{ended}: {said[0].strip()}"
        return self.reading


def run(binary: str, plan: Plan, kit: Kit, seed: int, deadline_s: float,
        console_out: Callable[[str], None] | None = None) -> Reading:
    """Run `plan` on `binary` to its end; the console, QMP answers and why it ended."""
    return asyncio.run(Session(binary, plan, kit, seed, deadline_s, console_out).run())


def binary_version(binary: str) -> str:
    return asyncio.run(query_version(binary))
