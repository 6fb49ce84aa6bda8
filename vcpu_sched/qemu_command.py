"""`vcpu-sched qemu [OUR OPTIONS] QEMU-OPTIONS...`: the model as a QEMU process a management tool can drive.

Our options are the double-dash ones below; every other word is `qemu-system-ppc64`'s command line, read by
qemu_cmdline.py (machine, accelerator, -smp, -cpu) plus what a process needs here: `-S` (prelaunch until
`cont`), `-qmp` / `-chardev socket,...` with `-mon chardev=ID,mode=control` (a QMP server, qmp.py), `-name`,
`-pidfile`, `-nographic` / `-serial stdio|mon:stdio|null` (where the guest console goes). `-daemonize` is
refused: the process would have to outlive its terminal. The run goes in real time (guest time = wall
time) until `quit`, SIGTERM / Ctrl-C or `--deadline`; a lockup is reported on stderr and the process keeps
hanging, as QEMU would.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from .config import FIXES, LOG_FORMATS, QEMU_VERSIONS, TIMEBASE_RESETS
from .engine.core import QUIT_REASON
from .errors import BadInput, RunKilled
from .model.machine import Machine
from .numbers import ascii_numbers
from .probe_server import mon_chardevs as _mon_chardevs
from .probe_server import mon_labels
from .probe_server import write_pidfile as _write_pidfile
from .result import RunResult
from .versions import profile

if TYPE_CHECKING:
    from .qmp import Listen

OURS = {"--fix": True, "--seed": True, "--log": True, "--log-format": True, "--deadline": True,
        "--watchdog": True, "--scenario": True, "--timebase-reset": True, "--no-fast-forward": False,
        "--engine": True, "--qemu-version": True, "--set": True}
# QEMU options this command acts on (the machine's own are read by qemu_cmdline.py); others are reported.
HANDLED = {"-S", "-qmp", "-chardev", "-mon", "-name", "-pidfile", "-nographic", "-serial", "-daemonize",
           "-no-shutdown"}


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    ours: list[str] = []
    qemu: list[str] = []
    words = iter(argv)
    for word in words:
        name = word.split("=", 1)[0]
        if name in OURS:
            ours.append(word)
            if OURS[name] and "=" not in word:
                ours.append(next(words, ""))
        elif word in ("-h", "--help"):
            ours.append(word)
        else:
            qemu.append(word)
    return ours, qemu


class _Parser(argparse.ArgumentParser):
    """Our options' errors as every other bad input: one line, exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ascii_numbers(self)

    def error(self, message: str) -> NoReturn:
        raise BadInput(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vcpu-sched qemu", description=__doc__.splitlines()[0],
                usage="vcpu-sched qemu [--fix F] [--seed N] [--log FILE] ... QEMU-OPTIONS...")
    p.add_argument("--fix", choices=FIXES)
    p.add_argument("--timebase-reset", choices=TIMEBASE_RESETS)
    p.add_argument("--seed", type=int)
    p.add_argument("--scenario", help="the guest's scenario (default: the seed's; s390x-sigp-cross for "
                                       "s390-ccw-virtio, powernv-core-stop-start for powernv)")
    p.add_argument("--log", metavar="FILE")
    p.add_argument("--log-format", choices=LOG_FORMATS, default="jsonl")
    p.add_argument("--deadline", type=float, default=3600.0, metavar="SECONDS",
                   help="end the process after this many seconds (default 3600)")
    p.add_argument("--watchdog", type=float, metavar="SECONDS", help="seconds before a lockup is reported")
    p.add_argument("--no-fast-forward", action="store_true")
    p.add_argument("--engine", choices=("trio", "threads"), default="trio",
                   help="threads: one OS thread per QEMU thread, so thread-id is each vCPU's own")
    p.add_argument("--qemu-version", choices=QEMU_VERSIONS, help="the model at this QEMU release (its loop and fixes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="any scenario setting, e.g. --set kernel_irqchip=false")
    return p


def qemu_main(argv: list[str], emulator: bool = False) -> int:
    """Every input and output is checked, and every TCP port bound, before the first file is written: a
    start that fails leaves an existing --log and -pidfile as they were. `emulator`: run as a versioned
    entry point (vcpu-sched-qemu-X.Y), which libvirt starts with -daemonize for its probe."""
    # QEMU takes SIGINT as a request to terminate even when its parent ignored it (os-posix.c
    # os_setup_signal_handling installs termsig_handler for SIGINT, SIGHUP and SIGTERM): a process started
    # in the background of a shell without job control inherits SIGINT ignored, and Python keeps that.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    from . import runner
    from .config import parse_set
    from .qemu_cmdline import parse_words
    from .qmp import parse_listen, reserve
    from .scenario import apply, check_machine, default_scenario, load

    ours, qemu_words = _split(argv)
    args = _parser().parse_args(ours)
    if _machine_none(qemu_words):  # libvirt's capability probe: no guest, the recorded answers (probe.py)
        from .probe_server import probe_main

        return probe_main(args.qemu_version, qemu_words, daemonize_allowed=emulator)
    line = parse_words(qemu_words)
    other: dict[str, list[str | None]] = {}
    for option, value in line.other:
        other.setdefault(option, []).append(value)
    if "-daemonize" in other:
        raise BadInput("-daemonize: not supported; run it in the background from the shell or a service manager")
    listens = [parse_listen(v) for v in other.get("-qmp", []) if v] + [parse_listen(s) for s in _mon_chardevs(other)]
    scenario = load(args.scenario or default_scenario(line.machine_type))
    check_machine(scenario, line.machine_type, "the command line")
    overrides: dict[str, Any] = dict(line.overrides)
    if args.qemu_version is not None:  # the model at that release; --fix, --set below still win
        overrides |= profile(args.qemu_version)
    overrides |= {
        "clock": "real", "engine": args.engine, "time_scale": 1.0,
        "deadline_s": args.deadline, "wall_deadline_s": min(args.deadline, 3600.0),
        **{k: v for k, v in {"fix": args.fix, "seed": args.seed, "watchdog_s": args.watchdog,
                             "timebase_reset": args.timebase_reset,
                             "qemu_version": args.qemu_version}.items() if v is not None}}
    overrides |= dict(parse_set(item) for item in args.sets)
    if args.no_fast_forward:
        overrides["fast_forward"] = False
    watchdog = scenario.settings.watchdog_s
    if "watchdog_s" not in overrides and watchdog >= args.deadline:  # one the user did not give: say whose
        raise BadInput(f"--deadline {args.deadline:g}: the scenario's watchdog ({scenario.settings.scenario}: "
                       f"{watchdog:g} s) could not report a lockup before it; add --watchdog SECONDS below that")
    settings = apply(scenario.settings, overrides, "command line")
    pidfile = (other.get("-pidfile") or [None])[-1]
    _check_outputs(args, pidfile, [w.path for w in listens if w.path is not None])
    names = [v for v in other.get("-name", []) if v]
    console = _console(other)
    ignored = [f"{o} {v}" if v else o for o, v in line.other if o not in HANDLED]
    if ignored:
        print(f"vcpu-sched: ignored (not modelled): {', '.join(ignored)}", file=sys.stderr)
    if not listens:
        print("vcpu-sched: warning: no -qmp: nothing can talk to this QEMU", file=sys.stderr)

    labels = [f"compat_monitor{i}" for i, v in enumerate(other.get("-qmp", [])) if v] + mon_labels(other)

    def drive(machine: Machine) -> Any:
        from .model.qmp_cmds import CHARDEVS, PERIPHERALS
        from .model.runstate import PAUSE_ON_SHUTDOWN
        from .qmp import chardev_filename

        PERIPHERALS[machine] = _devices(other)
        CHARDEVS[machine] = [(label, chardev_filename(where, sock))
                             for label, where, sock in zip(labels, listens, socks, strict=True)] + ptys
        machine.start_paused = "-S" in other
        if "-no-shutdown" in other:  # a guest's shutdown stops the VM (run state shutdown) instead of exiting
            PAUSE_ON_SHUTDOWN.add(machine)
        machine.name = names[-1].split(",")[0].removeprefix("guest=") if names else ""
        return _Served(machine, list(zip(listens, socks, strict=True)), args.engine)

    socks: list[socket.socket | None] = []
    pid_fd: int | None = None
    pty_fds: list[int] = []
    ptys: list[tuple[str, str]] = []  # -chardev pty,id=ID: a terminal nothing writes to (libvirt's console)
    try:
        for label in _pty_chardevs(other):
            master, follower = os.openpty()
            pty_fds += [master, follower]
            ptys.append((label, f"pty:{os.ttyname(follower)}"))
        for where in listens:
            socks.append(reserve(where))
        if pidfile:
            pid_fd = _write_pidfile(pidfile)
        result = runner.run(settings, args.log, (), console, args.log_format, drive=drive)
    except BrokenPipeError:
        raise
    except OSError as e:  # the log cannot be written (/dev/full), as `run --log` says it
        if args.log is None:
            raise
        raise BadInput(f"--log {args.log}: {e.strerror}") from None
    finally:
        for fd in pty_fds:
            os.close(fd)
        for sock in socks:
            if sock is not None:
                sock.close()
        if pidfile and pid_fd is not None:  # removed at exit, as QEMU's qemu_unlink_pidfile does
            Path(pidfile).unlink(missing_ok=True)
            os.close(pid_fd)
    if result.verdict == "deadline" and result.reason != QUIT_REASON:  # a quit ends it as QEMU's would: 0
        print(f"vcpu-sched: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _devices(other: dict[str, list[str | None]]) -> list[tuple[str, str]]:
    """(id, driver) of each `-device` with an id, in JSON (libvirt's) or DRIVER,id=ID,... form: the model does not
    run them, but qom-list of /machine/peripheral names them as QEMU would."""
    import json

    out = []
    for spec in other.get("-device", []):
        if not spec:
            continue
        props: dict[str, Any]
        if spec.startswith("{"):
            try:
                props = json.loads(spec)
            except ValueError:
                raise BadInput(f"-device {spec}: not JSON") from None
        else:
            driver, *rest = spec.split(",")
            props = {"driver": driver} | dict(p.partition("=")[::2] for p in rest)
        if isinstance(props, dict) and isinstance(props.get("id"), str) and isinstance(props.get("driver"), str):
            out.append((props["id"], props["driver"]))
    return out


def _pty_chardevs(other: dict[str, list[str | None]]) -> list[str]:
    """The ids of `-chardev pty,id=ID` (libvirt's serial console)."""
    out = []
    for spec in other.get("-chardev", []):
        kind, *props = (spec or "").split(",")
        options = dict(p.partition("=")[::2] for p in props)
        if kind == "pty" and options.get("id"):
            out.append(options["id"])
    return out


def _machine_none(words: list[str]) -> bool:
    """Whether the command line's machine is `none` (QEMU's machine without a board: libvirt's probe)."""
    machines = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-machine", "-M", "--machine")]
    return bool(machines) and machines[-1].split(",")[0] == "none"


def _check_outputs(args: argparse.Namespace, pidfile: str | None, sockets: list[str]) -> None:
    """--log, -pidfile and the unix sockets can be written, and each is a file of its own."""
    from .files import check_output

    inputs = (args.scenario,) if args.scenario else ()
    seen: dict[str, str] = {}
    for option, path in [("--log", args.log), ("-pidfile", pidfile), *(("-qmp", p) for p in sockets)]:
        if path is None:
            continue
        if option != "-qmp":
            check_output(option, path, inputs)
        where = os.path.realpath(path)
        if where in seen:
            raise BadInput(f"{option} {path}: is also the {seen[where]} file; choose another name")
        seen[where] = option


def _console(other: dict[str, list[str | None]]) -> Any:
    serial = (other.get("-serial") or [None])[-1]
    if serial in ("null", "none") or (serial is None and "-nographic" not in other):
        return None

    def out(t_ns: int, text: str) -> None:
        print(text, flush=True)

    return out


class _Served:
    """An engine for runner.run that serves QMP beside the model, in one Trio run: the Trio engine in the
    same event loop, or the threads engine (one OS thread per QEMU thread) in a worker thread."""

    def __init__(self, machine: Machine, sockets: list[tuple[Listen, socket.socket | None]], engine: str) -> None:
        from .engine.threads_engine import ThreadsEngine
        from .engine.trio_engine import TrioEngine

        self.machine = machine
        self.sockets = sockets
        self.engine: TrioEngine | ThreadsEngine
        if engine == "threads":
            self.engine = ThreadsEngine(machine, serve=self._verdict)  # fills machine.thread_ids as they start
        else:
            self.engine = TrioEngine(machine, serve=self._verdict)
            tid = threading.get_native_id()  # the Trio engine steps every QEMU thread on this one
            machine.thread_ids.update({name: tid for name, _ in machine.threads()})
        self._signal: int | None = None

    def now_ns(self) -> int:
        return self.engine.now_ns()

    def _verdict(self) -> None:
        verdict = self.engine.core.verdict
        assert verdict is not None
        print(f"vcpu-sched: {verdict[0]}: {verdict[1]}", file=sys.stderr, flush=True)
        lockup = verdict[2]
        if lockup is not None:
            for i, step in enumerate(lockup.chain, 1):
                print(f"  {i}. {step}", file=sys.stderr, flush=True)

    def run(self) -> RunResult:
        result: RunResult = trio.run(self._main)
        return result

    async def _main(self) -> RunResult:
        from .qmp import listen

        made: list[str] = []  # unix sockets made here: removed at the end, as QEMU's socket_listen_cleanup does
        try:
            listeners = []
            for where, sock in self.sockets:
                listeners.append(listen(where, sock))
                if where.path is not None:
                    made.append(where.path)
            return await self._serve(listeners)
        finally:
            for path in made:
                with contextlib.suppress(OSError):
                    Path(path).unlink()

    async def _serve(self, listeners: list[trio.SocketListener]) -> RunResult:
        from .engine.threads_engine import ThreadsEngine
        from .qmp import QmpServer

        servers = [QmpServer(self.machine, f"compat_monitor{i}") for i in range(len(listeners))]
        error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            for server, listener in zip(servers, listeners, strict=True):
                nursery.start_soon(server.serve, listener)
            try:
                if isinstance(self.engine, ThreadsEngine):
                    nursery.start_soon(self._signals, self.engine)
                    result = await trio.to_thread.run_sync(self.engine.run)
                    if self._signal == signal.SIGTERM:
                        raise RunKilled("SIGTERM")
                    if self._signal == signal.SIGINT:
                        raise KeyboardInterrupt
                else:
                    result = await self.engine.run_async()
                for server in servers:  # the last answers (quit's) reach their clients before the exit
                    await server.flush()
            except (Exception, KeyboardInterrupt) as e:  # SIGTERM, Ctrl-C, a model error: as they are
                error = e
            finally:
                nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        return result

    async def _signals(self, engine: Any) -> None:
        """The threads engine runs off the main thread: signals reach it through here."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self._signal = signum
                engine.halt("killed (SIGTERM)" if signum == signal.SIGTERM else "interrupted (Ctrl-C)")
                return
