"""`-machine none`: the process libvirt starts to probe an emulator (issue 29). No guest: a QMP server that
answers with what the real binary of the chosen release answered (probe.py), until `quit` or SIGTERM.

Also the pieces of a QEMU process both this and `vcpu-sched qemu` need: the locked pid file, and the QMP
sockets of `-chardev socket,...` with `-mon chardev=ID,mode=control`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import trio

from .errors import BadInput
from .probe import PACKAGE, PROBE_VERSIONS, greeting_version, probe_answer
from .qemu_cmdline import option_words
from .qmp import MessageReader, check_arguments, check_capabilities, check_request, encode, error, parse_listen


def write_pidfile(path: str) -> int:
    """QEMU's qemu_write_pidfile (util/oslib-posix.c): the file stays locked while the process runs, so
    that a second process given the same -pidfile is refused and leaves it as it was. Returns the
    descriptor that holds the lock."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    except OSError as e:
        raise BadInput(f"-pidfile {path}: {e.strerror}") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise BadInput(f"-pidfile {path}: Cannot lock pid file: {e.strerror}") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        raise BadInput(f"-pidfile {path}: {e.strerror}") from None
    return fd


def mon_chardevs(other: dict[str, list[str | None]]) -> list[str]:
    """`-chardev socket,id=ID,path=...|host=..,port=..,server=on,wait=off` used by `-mon chardev=ID,mode=control`."""
    chardevs: dict[str, str] = {}
    for spec in other.get("-chardev", []):
        if not spec:
            continue
        kind, *props = spec.split(",")
        options = dict(p.partition("=")[::2] for p in props)
        if kind == "socket" and "id" in options:
            if "fd" in options:
                address = f"fd:{options['fd']}"
            elif "path" in options:
                address = f"unix:{options['path']}"
            else:
                address = f"tcp:{options.get('host', '')}:{options.get('port', '')}"
            rest = ",".join(f"{k}={v}" for k, v in options.items() if k in ("server", "wait"))
            chardevs[options["id"]] = f"{address},{rest}"
    return [chardevs[label] for label in mon_labels(other, chardevs)]


def mon_labels(other: dict[str, list[str | None]], chardevs: dict[str, str] | None = None) -> list[str]:
    """The ids of the chardevs that `-mon chardev=ID,mode=control` makes monitors, in order."""
    out = []
    for spec in other.get("-mon", []):
        options = dict(p.partition("=")[::2] for p in (spec or "").split(","))
        if options.get("mode") == "control":
            if chardevs is not None and options.get("chardev") not in chardevs:
                raise BadInput(f"-mon {spec}: no -chardev socket with id={options.get('chardev')}")
            out.append(options.get("chardev", ""))
    return out



class ProbeCommandLine:
    """What `-machine none` (libvirt's probe: `-S -no-user-config -nodefaults -nographic -machine
    none,accel=kvm:tcg -qmp unix:PATH,server=on,wait=off -pidfile PATH -daemonize`) needs from its words."""

    def __init__(self, words: list[str]) -> None:
        self.qmp: list[str] = []
        self.pidfile: str | None = None
        self.daemonize = False
        self.ignored: list[str] = []
        self.other: dict[str, list[str | None]] = {}
        for option, value in option_words(words, ""):
            if option in ("-machine", "-M"):
                _, *props = (value or "").split(",")
                for prop in props:
                    key, _, accels = prop.partition("=")
                    bad = [a for a in accels.split(":") if a not in ("kvm", "tcg")] if key == "accel" else []
                    if bad:
                        raise BadInput(f"-machine {value}: accelerator {bad[0]!r} is not modelled (kvm or tcg)")
            elif option == "-daemonize":
                self.daemonize = True
            elif option == "-qmp" and value is not None:
                self.qmp.append(value)
            elif option == "-pidfile" and value is not None:
                self.pidfile = value
            elif option not in ("-S", "-nographic", "-no-user-config", "-nodefaults"):
                self.ignored.append(f"{option} {value}" if value is not None else option)
            self.other.setdefault(option, []).append(value)


def probe_main(version: str | None, words: list[str], daemonize_allowed: bool) -> int:
    """`-machine none`: no guest, a QMP server that answers as the real binary of `version` answered libvirt's
    probe, until `quit` or SIGTERM. With -daemonize (the versioned entry points only), the command returns
    once the socket listens and the pid file is written, and the server goes on in a child process."""
    if version not in PROBE_VERSIONS:
        given = f"--qemu-version {version}" if version else "no --qemu-version"
        raise BadInput(f"-machine none: answers libvirt's probe as a recorded QEMU ({given}; recorded: "
                       f"{', '.join(PROBE_VERSIONS)})")
    line = ProbeCommandLine(words)
    if line.daemonize and not daemonize_allowed:
        raise BadInput("-daemonize: only the versioned entry points (vcpu-sched-qemu-X.Y) daemonize")
    listens = [parse_listen(v) for v in line.qmp] + [parse_listen(s) for s in mon_chardevs(line.other)]
    if len(listens) != 1 or listens[0].path is None:
        raise BadInput("-machine none: give exactly one unix QMP socket (-qmp unix:PATH,server=on,wait=off)")
    path = listens[0].path
    if line.ignored:
        print(f"vcpu-sched: ignored (not modelled): {', '.join(line.ignored)}", file=sys.stderr)
    ready_fd: int | None = None
    if line.daemonize:
        ready_fd = _daemonize()
    # SIGTERM and SIGINT wait, blocked, until the server's receiver is open (_on_sigterm): one sent as soon as
    # the socket exists (a test, a libvirt that gives up) ends the server as any other, not the bare process
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pid_fd: int | None = None
    try:
        Path(path).unlink(missing_ok=True)
        sock.bind(path)
        sock.listen(1)
        if line.pidfile:
            pid_fd = write_pidfile(line.pidfile)
        if ready_fd is not None:  # as QEMU's os_setup_post: the parent exits 0, the child loses its terminal
            os.write(ready_fd, b"1")
            os.close(ready_fd)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
        trio.run(_serve, sock, version, [("compat_monitor0", path)])
    except OSError as e:
        raise BadInput(f"-qmp {listens[0].spec}: cannot listen: {e.strerror or e}") from None
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            Path(path).unlink()
        if line.pidfile and pid_fd is not None:
            Path(line.pidfile).unlink(missing_ok=True)
            os.close(pid_fd)
    return 0


def _daemonize() -> int:
    """Fork: the parent waits until the child says it is ready (exit 0) or dies (exit 1). Returns, in the
    child, the descriptor to say it on."""
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        ready = os.read(read_end, 1)
        os._exit(0 if ready == b"1" else 1)
    os.close(read_end)
    os.setsid()
    return write_end


async def _serve(sock: socket.socket, version: str, chardevs: list[tuple[str, str]]) -> None:
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_on_sigterm, nursery.cancel_scope)
        while True:
            stream = await listener.accept()
            async with stream:
                if await _session(stream, version, chardevs):
                    nursery.cancel_scope.cancel()
                    return


async def _on_sigterm(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})  # blocked by probe_main
        async for _ in signals:  # QEMU: "terminating on signal 15", exit status 0
            scope.cancel()
            return


async def _session(stream: trio.SocketStream, version: str, chardevs: list[tuple[str, str]]) -> bool:
    """One client; True when it asked to quit."""
    async def send(message: dict[str, Any]) -> None:
        await stream.send_all(encode(message))

    negotiated = oob = False
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await send({"QMP": {"version": {"qemu": greeting_version(version), "package": PACKAGE},
                            "capabilities": ["oob"]}})
        reader = MessageReader()
        async for chunk in stream:
            for item in reader.feed(chunk):
                if isinstance(item, str):
                    await send(error("GenericError", item))
                    continue
                msg, msg_id = item
                try:
                    name, args, _ = check_request(msg, oob)
                except ValueError as e:
                    await send(error("GenericError", str(e), msg_id))
                    continue
                if name == "qmp_capabilities":
                    if negotiated:
                        answer = error("CommandNotFound", "Capabilities negotiation is already complete, "
                                                          "command ignored")
                    else:
                        try:
                            check_arguments(name, args)
                            check_capabilities(args)
                        except ValueError as e:
                            answer = error("GenericError", str(e))
                        else:
                            negotiated, oob, answer = True, "oob" in args.get("enable", []), {"return": {}}
                elif not negotiated:
                    answer = error("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
                elif name == "quit":
                    now = time.time()
                    await send({"event": "SHUTDOWN", "data": {"guest": False, "reason": "host-qmp-quit"},
                                "timestamp": {"seconds": int(now), "microseconds": int(now % 1 * 1_000_000)}})
                    await send({"return": {}} if msg_id is None else {"return": {}, "id": msg_id})
                    return True
                else:
                    answer = probe_answer(version, name, args, chardevs)
                await send(answer if msg_id is None else {**answer, "id": msg_id})
    return False
