"""What a real QEMU answers to libvirt's capability probe, recorded by tools/record_probe.py (issue 29).

vcpu_sched/probe_data/X.Y.json.gz holds, for each QEMU release the model can claim to be, the greeting and
the answer to every command libvirt 9.0 sends while it probes a qemu-system-ppc64 binary: the static ones
(query-qmp-schema, query-machines, query-cpu-definitions, qom-list-types, device-list-properties, ...),
answered from here as the real binary answered them.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import os
import signal
import socket
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import trio

from .errors import BadInput

PROBE_VERSIONS = ("7.2", "11.1")


def probe_key(name: str, args: dict[str, Any]) -> str:
    """One command with its arguments, as a key of the recorded answers."""
    return name if not args else f"{name} {json.dumps(args, sort_keys=True, separators=(',', ':'))}"


@functools.cache
def probe_data(version: str) -> dict[str, Any]:
    """{"greeting": the real binary's, "answers": {probe_key: {"return": ...} or {"error": ...}}}."""
    blob = resources.files("vcpu_sched").joinpath("probe_data", f"{version}.json.gz").read_bytes()
    data: dict[str, Any] = json.loads(gzip.decompress(blob))
    return data


def recorded(version: str | None, name: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """The real answer to this command, if the probe recorded it for the version the run models."""
    if version not in PROBE_VERSIONS:
        return None
    answer: dict[str, Any] | None = probe_data(version)["answers"].get(probe_key(name, args))
    return answer


def greeting_version(version: str) -> dict[str, int]:
    """The `qemu` version triple of the real binary recorded for this release."""
    triple: dict[str, int] = probe_data(version)["greeting"]["QMP"]["version"]["qemu"]
    return triple


def probe_answer(version: str, name: str, args: dict[str, Any], chardevs: list[tuple[str, str]]) -> dict[str, Any]:
    """The answer of `-machine none` (no guest: every answer is static) to one negotiated in-band command."""
    from .model.qmp_cmds import PACKAGE

    if name == "query-version":
        return {"return": {"qemu": greeting_version(version), "package": PACKAGE}}
    if name == "query-chardev":
        return {"return": [{"filename": f"unix:{path},server=on", "frontend-open": i == len(chardevs) - 1,
                            "label": label} for i, (label, path) in enumerate(chardevs)]}
    answer = recorded(version, name, args)
    if answer is not None:
        return answer
    if any(key.split(" ", 1)[0] == name for key in probe_data(version)["answers"]):
        return {"error": {"class": "GenericError",
                          "desc": f"vcpu-sched: {name} with these arguments was not recorded from QEMU {version}"}}
    return {"error": {"class": "CommandNotFound", "desc": f"The command {name} has not been found"}}


class ProbeCommandLine:
    """What `-machine none` (libvirt's probe: `-S -no-user-config -nodefaults -nographic -machine
    none,accel=kvm:tcg -qmp unix:PATH,server=on,wait=off -pidfile PATH -daemonize`) needs from its words."""

    def __init__(self, words: list[str]) -> None:
        self.qmp: list[str] = []
        self.pidfile: str | None = None
        self.daemonize = False
        self.ignored: list[str] = []
        self.other: dict[str, list[str | None]] = {}
        i = 0
        while i < len(words):
            word = words[i]
            value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("-") else None
            option = "-" + word.lstrip("-")
            if not word.startswith("-"):
                raise BadInput(f"unexpected argument {word!r}")
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
            i += 1 if value is None else 2


def probe_main(version: str | None, words: list[str], daemonize_allowed: bool) -> int:
    """`-machine none`: no guest, a QMP server that answers as the real binary of `version` answered libvirt's
    probe, until `quit` or SIGTERM. With -daemonize (the versioned entry points only), the command returns
    once the socket listens and the pid file is written, and the server goes on in a child process."""
    from .qemu_command import _mon_chardevs, _write_pidfile
    from .qmp import parse_listen

    if version not in PROBE_VERSIONS:
        given = f"--qemu-version {version}" if version else "no --qemu-version"
        raise BadInput(f"-machine none: answers libvirt's probe as a recorded QEMU ({given}; recorded: "
                       f"{', '.join(PROBE_VERSIONS)})")
    line = ProbeCommandLine(words)
    if line.daemonize and not daemonize_allowed:
        raise BadInput("-daemonize: only the versioned entry points (vcpu-sched-qemu-X.Y) daemonize")
    listens = [parse_listen(v) for v in line.qmp] + [parse_listen(s) for s in _mon_chardevs(line.other)]
    if len(listens) != 1 or listens[0].path is None:
        raise BadInput("-machine none: give exactly one unix QMP socket (-qmp unix:PATH,server=on,wait=off)")
    path = listens[0].path
    if line.ignored:
        print(f"vcpu-sched: ignored (not modelled): {', '.join(line.ignored)}", file=sys.stderr)
    ready_fd: int | None = None
    if line.daemonize:
        ready_fd = _daemonize()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pid_fd: int | None = None
    try:
        Path(path).unlink(missing_ok=True)
        sock.bind(path)
        sock.listen(1)
        if line.pidfile:
            pid_fd = _write_pidfile(line.pidfile)
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
        async for _ in signals:  # QEMU: "terminating on signal 15", exit status 0
            scope.cancel()
            return


async def _session(stream: trio.SocketStream, version: str, chardevs: list[tuple[str, str]]) -> bool:
    """One client; True when it asked to quit."""
    from .model.qmp_cmds import PACKAGE
    from .qmp import MessageReader, check_request, encode, error

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
