"""A QMP server for `vcpu-sched qemu`: QEMU's protocol (docs/interop/qmp-spec.rst, monitor/qmp.c,
qapi/qmp-dispatch.c) in front of the model's main loop.

The monitor's I/O side - reading, parsing, the greeting, out-of-band commands - runs here, outside the
model, as QEMU runs it in the monitor I/O thread; every in-band command (qmp_capabilities included) is
queued for the model's main loop, which runs it with the BQL held (model/qmp_cmds.py). So while a vCPU
keeps the BQL, in-band commands are never answered and events stop, as on the real machine, while
`exec-oob` commands still are. Error classes and wording are QEMU 7.2's (tests/data/qmp-7.2/).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import trio

from .errors import BadInput
from .model.machine import Machine, MonitorRequest
from .model.qmp_cmds import COMMANDS, MIGRATE_ERRORS, PACKAGE, QEMU_VERSION

MAX_MESSAGE = 1 << 20
OOB = ("yank", "query-yank", "migrate-pause", "migrate-recover")
_TYPE_NAMES = {str: "string", int: "int", list: "array", dict: "object"}


def error(error_class: str, desc: str, msg_id: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": {"class": error_class, "desc": desc}}
    if msg_id is not None:
        out["id"] = msg_id
    return out


def check_request(msg: Any, oob_enabled: bool) -> tuple[str, dict[str, Any], bool]:
    """(command, arguments, out of band) of a well-formed request; ValueError with QEMU's wording otherwise."""
    if not isinstance(msg, dict):
        raise ValueError("QMP input must be a JSON object")
    for key in msg:
        if key not in ("execute", "exec-oob", "arguments", "id", "control"):
            raise ValueError(f"QMP input member '{key}' is unexpected")
    if "execute" in msg and "exec-oob" in msg:
        raise ValueError("QMP input must not have both 'execute' and 'exec-oob'")
    key = "exec-oob" if "exec-oob" in msg else "execute"
    if key not in msg:
        raise ValueError("QMP input lacks member 'execute'")
    name = msg[key]
    if not isinstance(name, str):
        raise ValueError(f"QMP input member '{key}' must be a string")
    args = msg.get("arguments", {})
    if not isinstance(args, dict):
        raise ValueError("QMP input member 'arguments' must be an object")
    oob = key == "exec-oob"
    if oob and not oob_enabled:
        raise ValueError("QMP input member 'exec-oob' is unexpected")
    return name, args, oob


def check_arguments(name: str, args: dict[str, Any]) -> None:
    required, optional = COMMANDS[name]
    for key, value in args.items():
        kind = required.get(key) or optional.get(key)
        if kind is None:
            raise ValueError(f"Parameter '{key}' is unexpected")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"Invalid parameter type for '{key}', expected: {_TYPE_NAMES[kind]}")
    for key in required:
        if key not in args:
            raise ValueError(f"Parameter '{key}' is missing")


class QmpServer:
    """Serves one listening socket, one client at a time (as a QEMU chardev does), for one Machine."""

    def __init__(self, machine: Machine, chardev_id: str) -> None:
        self.machine = machine
        self.chardev_id = chardev_id
        self._token = trio.lowlevel.current_trio_token()
        self._client: trio.MemorySendChannel[dict[str, Any]] | None = None
        self._negotiated = False
        self._written = trio.Event()  # the current client's writer has sent everything and ended
        machine.qmp_event = self.event

    def event(self, name: str, data: dict[str, Any] | None) -> None:
        """From the main loop (any thread): an event for the client in command mode."""
        now = time.time()
        message: dict[str, Any] = {"event": name, "timestamp": {"seconds": int(now),
                                                                 "microseconds": int(now % 1 * 1_000_000)}}
        if data is not None:
            message["data"] = data
        self._token.run_sync_soon(self._send, message, True)

    def _send(self, message: dict[str, Any], is_event: bool = False) -> None:
        if self._client is not None and (self._negotiated or not is_event):
            # A client that does not read loses messages, as QEMU drops what overflows its output buffer.
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._client.send_nowait(message)

    async def serve(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                async with stream:
                    await self._session(stream)

    async def flush(self, timeout_s: float = 2.0) -> None:
        """Send what is queued for the client, then stop serving it (the process is about to end)."""
        await trio.lowlevel.checkpoint()  # the answers the main loop handed over with run_sync_soon go first
        if self._client is not None:
            self._client.close()
            with trio.move_on_after(timeout_s):
                await self._written.wait()

    async def _session(self, stream: trio.SocketStream) -> None:
        send, receive = trio.open_memory_channel[dict[str, Any]](1024)
        self._client, self._negotiated, self._written = send, False, trio.Event()
        greeting = {"QMP": {"version": {"qemu": QEMU_VERSION, "package": PACKAGE}, "capabilities": ["oob"]}}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, stream, receive, nursery.cancel_scope)
            self._send(greeting)
            with contextlib.suppress(trio.BrokenResourceError):  # the client reset the connection
                await self._read(stream)
            self._client = None
            send.close()

    async def _read(self, stream: trio.SocketStream) -> None:
        """Messages from the client until it hangs up, each handled as it is complete."""
        oob = False
        decoder = json.JSONDecoder()
        buffer = ""
        async for chunk in stream:
            buffer += chunk.decode("utf-8", errors="replace")
            if len(buffer) > MAX_MESSAGE and "\n" not in buffer:  # QEMU's JSON streamer has a limit too
                self._send(error("GenericError", "JSON parse error, message too large"))
                buffer = ""
            while True:
                buffer = buffer.lstrip()
                if not buffer:
                    break
                try:
                    msg, end = decoder.raw_decode(buffer)
                except json.JSONDecodeError as e:
                    if "\n" not in buffer:
                        break  # the rest of the message is still to come
                    self._send(error("GenericError", f"JSON parse error, {e.msg}"))
                    buffer = buffer[buffer.index("\n") + 1:]
                    continue
                buffer = buffer[end:]
                oob = self._handle(msg, oob)

    async def _writer(self, stream: trio.SocketStream, receive: trio.MemoryReceiveChannel[dict[str, Any]],
                      scope: trio.CancelScope) -> None:
        async with receive:
            async for message in receive:
                try:
                    await stream.send_all(json.dumps(message).encode() + b"\r\n")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    scope.cancel()
                    break
        self._written.set()

    def _handle(self, msg: Any, oob_enabled: bool) -> bool:
        """One message: answered here (bad input, out-of-band) or queued for the main loop. Returns whether
        out-of-band is on for this session."""
        msg_id = msg.get("id") if isinstance(msg, dict) else None
        try:
            name, args, oob = check_request(msg, oob_enabled)
        except ValueError as e:
            self._send(error("GenericError", str(e), msg_id))
            return oob_enabled
        if name not in COMMANDS:
            self._send(error("CommandNotFound", f"The command {name} has not been found", msg_id))
            return oob_enabled
        if oob and name not in OOB:
            self._send(error("GenericError", f"The command {name} does not support OOB", msg_id))
            return oob_enabled
        if not self._negotiated and name != "qmp_capabilities":
            self._send(error("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'",
                             msg_id))
            return oob_enabled
        try:
            check_arguments(name, args)
        except ValueError as e:
            self._send(error("GenericError", str(e), msg_id))
            return oob_enabled
        if oob:
            self._send(self._io_side(name, args, msg_id))  # needs no BQL: answered at once
            return oob_enabled
        if name == "qmp_capabilities":
            if self._negotiated:
                self._send(error("CommandNotFound", "Capabilities negotiation is already complete, command ignored",
                                 msg_id))
                return oob_enabled
            enable = args.get("enable", [])
            if any(cap != "oob" for cap in enable):
                self._send(error("GenericError", f"Capability '{next(c for c in enable if c != 'oob')}' not available",
                                 msg_id))
                return oob_enabled
            self._queue(name, args, msg_id, negotiate=True)
            return "oob" in enable
        self._queue(name, args, msg_id)
        return oob_enabled

    def _io_side(self, name: str, args: dict[str, Any], msg_id: Any) -> dict[str, Any]:
        if name == "query-yank":
            answer: dict[str, Any] = {"return": [{"id": self.chardev_id, "type": "chardev"}]}
        elif name == "yank":
            answer = {"return": {}}
        else:
            answer = error("GenericError", MIGRATE_ERRORS[name])
        if msg_id is not None:
            answer["id"] = msg_id
        return answer

    def _queue(self, name: str, args: dict[str, Any], msg_id: Any, negotiate: bool = False) -> None:
        client = self._client

        def reply(answer: dict[str, Any]) -> None:  # from the main loop, BQL held
            self._token.run_sync_soon(self._answer, client, answer, msg_id, negotiate)

        self.machine.monitor_requests.append(MonitorRequest(name, args, reply))

    def _answer(self, client: Any, answer: dict[str, Any], msg_id: Any, negotiate: bool) -> None:
        if client is not self._client:
            return  # that client has gone
        if negotiate and "return" in answer:
            self._negotiated = True
        if msg_id is not None:
            answer = {**answer, "id": msg_id}
        self._send(answer)


async def open_listener(spec: str) -> trio.SocketListener:
    """`unix:PATH,server=on,wait=off` or `tcp:HOST:PORT,server=on,wait=off` (QEMU's -qmp/-chardev socket)."""
    address, *props = spec.split(",")
    options = dict(p.partition("=")[::2] for p in props)
    kind, _, where = address.partition(":")
    if kind not in ("unix", "tcp") or not where:
        raise BadInput(f"-qmp {spec}: expected unix:PATH or tcp:HOST:PORT")
    if options.get("server") not in ("on", "yes", "true", ""):
        raise BadInput(f"-qmp {spec}: only a listening socket is modelled (server=on)")
    if options.get("wait", "on") not in ("off", "no", "false"):
        raise BadInput(f"-qmp {spec}: wait=on would block start-up until a client connects; use wait=off")
    if kind == "unix":
        path = Path(where)
        if path.exists() and not path.is_socket():
            raise BadInput(f"-qmp {spec}: {where} exists and is not a socket")
        path.unlink(missing_ok=True)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        try:
            await sock.bind(os.fspath(path))
        except OSError as e:
            raise BadInput(f"-qmp {spec}: cannot listen: {e.strerror}") from None
        sock.listen(1)
        return trio.SocketListener(sock)
    host, _, port = where.rpartition(":")
    if not port.isdigit():
        raise BadInput(f"-qmp {spec}: expected tcp:HOST:PORT")
    try:
        listeners = await trio.open_tcp_listeners(int(port), host=host or None)
    except OSError as e:
        raise BadInput(f"-qmp {spec}: cannot listen: {e.strerror}") from None
    return listeners[0]

