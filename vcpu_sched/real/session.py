"""One real run: start qemu-system-ppc64, read the guest console, drive the monitor script over QMP.

The monitor script is the scenario's (`monitor = [[pattern, command], ...]`): when a console line shows
the next pattern, the command is sent the moment later the model waits too (`monitor_delay_ms`, drawn from
the seed: 0-500 ms by default, as a management tool would act, not at the pattern's instant), then the
waiting guest is told to go on. `migrate` is a real
migration: `migrate` to a file through `exec:`, `quit`, and a second QEMU started with `-incoming` on
the same command line. A QMP command that gets no answer within the scenario's watchdog (`watchdog_s`, the
time the model lets a watched thread stay blocked; at least `MIN_WATCHDOG_S`) is a lockup. Every QEMU
this starts is killed (its whole process group) when the run ends, however it ends.

The guest gets the row's script on the console once its /init says it is ready. Where a restore is
faithful (`plan.fresh_boot`), the run restores a saved boot of a guest at that point (`boots.py`, saving it
first if there is none) instead of booting: the saved console is read as if the guest had just printed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import boots
from .guest import BOOT_INIT, END_OF_SCRIPT, KDUMP_INIT, READY, WAITING
from .kit import Kit, boot_initramfs, cache_dir
from .plan import Plan
from .verdict import Reading, check_harness, failures

QMP_TIMEOUT_S = 10.0  # connecting, and query-version
MIN_WATCHDOG_S = 2.0
MIGRATE_TIMEOUT_S = 120.0
BOOT_TIMEOUT_S = 300.0  # from QEMU's start to the guest's `ready for the script`, when saving a boot
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
    saved_boot: bool = True  # restore a saved boot where that is faithful (`plan.fresh_boot` is None)
    destination: str | None = None  # the binary a `migrate` loads into (default: `binary`)
    reading: Reading = field(default_factory=Reading)
    work: Path = Path()
    initrd: Path = Path()
    starts: int = 0
    proc: asyncio.subprocess.Process | None = None
    qmp: Any = None
    reader: asyncio.Task[None] | None = None
    pending: list[int] = field(default_factory=list)  # monitor entries whose pattern showed, not yet sent
    next_entry: int = 0
    waits: int = 0  # waits the guest printed that no command has answered yet
    busy: bool = False
    stopped: bool = False
    last_line_at: float = 0.0

    def _machine_argv(self) -> list[str]:
        """The command line a boot depends on (all but the monitor socket and -incoming)."""
        return [*self.plan.argv_tail, "-kernel", str(self.kit.vmlinux), "-initrd", str(self.initrd),
                "-append", self.plan.script.cmdline]

    async def _start(self, incoming: str | None = None, binary: str | None = None) -> None:
        self.starts += 1
        sock = self.work / f"qmp-{self.starts}.sock"
        argv = [binary or self.binary, *self._machine_argv(), "-qmp", f"unix:{sock},server=on,wait=off"]
        if incoming:
            argv += ["-incoming", incoming]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=_pdeathsig)
        self.qmp = await _connect(sock, self.proc)

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

    def _type(self, text: str) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.write(text.encode())

    def _go(self) -> None:
        self._type("go\n")

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
        await asyncio.sleep(self.plan.model.monitor_delay_ns(entry) / 1e9)  # the model's own delay
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

    async def _save_state(self, path: Path) -> bool:
        """Migrate the running guest to `path`; whether the migration completed."""
        await self.execute("migrate", {"uri": f"exec:cat > {path}"})
        deadline = time.monotonic() + MIGRATE_TIMEOUT_S
        while True:
            info = await self.execute("query-migrate") or {}
            status = info.get("status")
            if status in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
                self.reading.qmp.append(f"-> query-migrate: status {status}")
                return status == "completed"
            await asyncio.sleep(0.2)

    async def _quit(self) -> None:
        """`quit` the QEMU at hand (once its state is saved) and wait for it to go."""
        old, old_qmp = self.proc, self.qmp
        await self.execute("quit")
        with contextlib.suppress(Exception):
            await old_qmp.disconnect()
        assert old is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(old.wait(), 10.0)
        await _kill(old)
        self.proc = self.qmp = None

    async def _load_state(self, path: Path, binary: str | None = None) -> None:
        """A second QEMU on the same command line, loading `path`, until it runs the guest."""
        await self._start(f"exec:cat {path}", binary)
        deadline = time.monotonic() + MIGRATE_TIMEOUT_S
        while True:
            status = (await self.execute("query-status") or {}).get("status")
            if status == "running" or time.monotonic() > deadline:
                self.reading.qmp.append(f"-> query-status (destination): {status}")
                return
            await asyncio.sleep(0.2)

    async def _migrate(self) -> None:
        """Migrate to a file and restore into a second QEMU on the same command line."""
        state = self.work / "migration.bin"
        if not await self._save_state(state):
            self.reading.harness = "the migration did not complete"
            self.stopped = True
            return
        await self._quit()
        into = f" ({self.destination})" if self.destination else ""
        self.reading.console.append(f"vcpu-sched: migrated; the destination QEMU{into} loads the state")
        await self._load_state(state, self.destination)
        self.reader = asyncio.create_task(self._read_console())

    async def _save_boot(self, store: boots.Store, name: str) -> boots.SavedBoot | None:
        """Boot the guest up to its script, and save it; None (with the reason in `reading.boot`) if that
        boot does not get there: the run then boots afresh and shows what happens."""
        await self._start()
        assert self.proc is not None and self.proc.stdout is not None
        console: list[str] = []
        staged = store.staging(name)
        try:
            while True:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), BOOT_TIMEOUT_S)
                if not raw:
                    self.reading.boot = "booted afresh: the boot to save ended before the guest was ready"
                    return None
                line = raw.decode(errors="replace").rstrip("\r\n")
                console.append(line)
                if self.console_out is not None:
                    self.console_out(line)
                if line.strip() == READY:
                    break
            if not await self._save_state(staged):
                self.reading.boot = "booted afresh: saving the boot did not complete"
                return None
            await self._quit()
            return store.keep(name, staged, console)
        except TimeoutError:
            self.reading.boot = f"booted afresh: the boot to save was not ready within {BOOT_TIMEOUT_S:.0f} s"
            return None
        finally:
            store.discard(name)
            if self.proc is not None:
                await _kill(self.proc)
                self.proc = self.qmp = None

    async def _boot(self) -> None:
        """Get the guest to its script: restore a saved boot where that is faithful, else boot."""
        if self.plan.fresh_boot is not None:
            self.reading.boot = f"booted afresh: {self.plan.fresh_boot}"
        elif not self.saved_boot:
            self.reading.boot = "booted afresh, as asked (--fresh-boot)"
        elif await self._restore():
            return
        await self._start()
        self.reader = asyncio.create_task(self._read_console())

    async def _restore(self) -> bool:
        """Restore the saved boot of this command line (saving it first if there is none)."""
        store = boots.Store(cache_dir() / "boots")
        name = boots.key(self.binary, self._machine_argv(), [self.kit.vmlinux, self.initrd])
        start = time.monotonic()
        async with store.locked(name):
            saved = store.find(name)
            made = saved is None
            if saved is None:
                saved = await self._save_boot(store, name)
        if saved is None:
            return False
        await self._load_state(saved.state)
        took = time.monotonic() - start
        self.reading.boot = f"restored a saved boot{' (saved first)' if made else ''} in {took:.1f} s"
        note = f"vcpu-sched: {self.reading.boot}; its console up to the script follows"
        self.reading.console.append(note)
        if self.console_out is not None:
            self.console_out(note)
        for line in saved.console:  # as if the guest had just printed them: READY sends the script
            self._line(line)
        self.reader = asyncio.create_task(self._read_console())
        return True

    async def _read_console(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                return
            self._line(raw.decode(errors="replace").rstrip("\r\n"))

    def _line(self, line: str) -> None:
        self.last_line_at = time.monotonic()
        self.reading.console.append(line)
        if self.console_out is not None:
            self.console_out(line)
        harness = check_harness(line)
        if harness is not None:
            self.reading.harness = harness
        if line.strip() == READY:  # every boot's /init (a reset boots again): the row's script
            self._type(self.plan.script.body + END_OF_SCRIPT + "\n")
        elif line.strip() == WAITING:
            self._guest_waits()
        elif self.next_entry < len(self.plan.monitor) and self.plan.monitor[self.next_entry][0] in line:
            self.pending.append(self.next_entry)
            self.next_entry += 1

    async def _drive(self) -> None:
        await self._boot()
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
            kdump = KDUMP_INIT if self.plan.script.kdump_cmdline is not None else None
            self.initrd = boot_initramfs(self.kit, BOOT_INIT, kdump, cache_dir() / "initramfs")
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
        console_out: Callable[[str], None] | None = None, saved_boot: bool = True,
        destination: str | None = None) -> Reading:
    """Run `plan` on `binary` (migrating into `destination`, if given) to its end; the console, QMP answers
    and why it ended."""
    return asyncio.run(Session(binary, plan, kit, seed, deadline_s, console_out, saved_boot, destination).run())


def binary_version(binary: str) -> str:
    return asyncio.run(query_version(binary))
