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
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import trio

from .config import FIXES, LOG_FORMATS, QEMU_VERSIONS, TIMEBASE_RESETS
from .engine.core import QUIT_REASON
from .errors import BadInput, RunKilled
from .model.machine import Machine
from .result import RunResult
from .versions import profile

OURS = {"--fix": True, "--seed": True, "--log": True, "--log-format": True, "--deadline": True,
        "--watchdog": True, "--scenario": True, "--timebase-reset": True, "--no-fast-forward": False,
        "--engine": True, "--qemu-version": True, "--set": True}
# QEMU options this command acts on (the machine's own are read by qemu_cmdline.py); others are reported.
HANDLED = {"-S", "-qmp", "-chardev", "-mon", "-name", "-pidfile", "-nographic", "-serial", "-daemonize"}


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcpu-sched qemu", description=__doc__.splitlines()[0],
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


def qemu_main(argv: list[str]) -> int:
    from .cli import parse_set
    from .qemu_cmdline import parse_words
    from .scenario import apply, check_machine, default_scenario, load

    ours, qemu_words = _split(argv)
    args = _parser().parse_args(ours)
    line = parse_words(qemu_words)
    other: dict[str, list[str | None]] = {}
    for option, value in line.other:
        other.setdefault(option, []).append(value)
    if "-daemonize" in other:
        raise BadInput("-daemonize: not supported; run it in the background from the shell or a service manager")
    qmp_specs = [v for v in other.get("-qmp", []) if v] + _mon_chardevs(other)
    ignored = [f"{o} {v}" if v else o for o, v in line.other if o not in HANDLED]
    if ignored:
        print(f"vcpu-sched: ignored (not modelled): {', '.join(ignored)}", file=sys.stderr)
    if not qmp_specs:
        print("vcpu-sched: warning: no -qmp: nothing can talk to this QEMU", file=sys.stderr)
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
    settings = apply(scenario.settings, overrides, "command line")
    if args.log:
        from .files import check_output

        check_output("--log", args.log)
    pidfile = (other.get("-pidfile") or [None])[-1]
    names = [v for v in other.get("-name", []) if v]
    console = _console(other)

    def drive(machine: Machine) -> Any:
        machine.start_paused = "-S" in other
        machine.name = names[-1].split(",")[0].removeprefix("guest=") if names else ""
        return _Served(machine, qmp_specs, args.engine)

    if pidfile:
        Path(pidfile).write_text(f"{os.getpid()}\n")
    from . import runner

    try:
        result = runner.run(settings, args.log, (), console, args.log_format, drive=drive)
    finally:
        if pidfile:
            Path(pidfile).unlink(missing_ok=True)
    if result.verdict == "deadline" and result.reason != QUIT_REASON:  # a quit ends it as QEMU's would: 0
        print(f"vcpu-sched: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _mon_chardevs(other: dict[str, list[str | None]]) -> list[str]:
    """`-chardev socket,id=ID,path=...|host=..,port=..,server=on,wait=off` used by `-mon chardev=ID,mode=control`."""
    chardevs: dict[str, str] = {}
    for spec in other.get("-chardev", []):
        if not spec:
            continue
        kind, *props = spec.split(",")
        options = dict(p.partition("=")[::2] for p in props)
        if kind == "socket" and "id" in options:
            if "path" in options:
                address = f"unix:{options['path']}"
            else:
                address = f"tcp:{options.get('host', '')}:{options.get('port', '')}"
            rest = ",".join(f"{k}={v}" for k, v in options.items() if k in ("server", "wait"))
            chardevs[options["id"]] = f"{address},{rest}"
    out = []
    for spec in other.get("-mon", []):
        options = dict(p.partition("=")[::2] for p in (spec or "").split(","))
        if options.get("mode") == "control":
            if options.get("chardev") not in chardevs:
                raise BadInput(f"-mon {spec}: no -chardev socket with id={options.get('chardev')}")
            out.append(chardevs[options["chardev"]])
    return out


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

    def __init__(self, machine: Machine, qmp_specs: list[str], engine: str) -> None:
        from .engine.threads_engine import ThreadsEngine
        from .engine.trio_engine import TrioEngine

        self.machine = machine
        self.specs = qmp_specs
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
        from .engine.threads_engine import ThreadsEngine
        from .qmp import QmpServer, open_listener

        listeners = [await open_listener(spec) for spec in self.specs]
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
