"""A QMP server for `vcpu-sched qemu`: QEMU's protocol (docs/interop/qmp-spec.rst, monitor/qmp.c,
qapi/qmp-dispatch.c) in front of the model's main loop.

The monitor's I/O side - reading, parsing, the greeting, out-of-band commands - runs here, outside the
model, as QEMU runs it in the monitor I/O thread; every in-band command (qmp_capabilities included) is
queued for the model's main loop, which runs it with the BQL held (model/qmp_cmds.py). So while a vCPU
keeps the BQL, in-band commands are never answered and events stop, as on the real machine, while
`exec-oob` commands still are. Error classes and wording are QEMU 7.2's (tests/data/qmp-7.2/).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import trio

from .errors import BadInput
from .model.machine import Machine, MonitorRequest
from .model.qmp_cmds import COMMANDS, MIGRATE_ERRORS, PACKAGE, known, qemu_version

MAX_MESSAGE = 1 << 20
MAX_NESTING = 1 << 10  # qobject/json-streamer.c: deeper messages are refused
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes; Python's bind wants room for the NUL that Linux does not need
OOB = ("yank", "query-yank", "migrate-pause", "migrate-recover")
_TYPE_NAMES = {str: "string", int: "int", list: "array", dict: "object"}
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')  # in valid JSON text: strings and structure
_NON_ASCII = re.compile(r"[^\x00-\x7f]")  # in valid JSON text, only inside strings


class RawId(str):
    """A request's `id` as the client wrote it (its JSON text), echoed unchanged in the answer.

    QEMU echoes the id it parsed, printed again (qobject/json-writer.c): an integer beyond 64 bits became a
    double and comes back rounded, and `1e999` became infinity and comes back as `inf`, which is not JSON.
    The QMP spec asks for the same id back, so it is kept as text: valid JSON, since the request parsed,
    and equal to what the client sent under any JSON parser."""


class ParseError(ValueError):
    """A message QEMU's JSON parser would refuse although Python's accepts it."""


def error(error_class: str, desc: str, msg_id: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": {"class": error_class, "desc": desc}}
    if msg_id is not None:
        out["id"] = msg_id
    return out


def encode(message: dict[str, Any]) -> bytes:
    """One message as a line of JSON, never anything else: a RawId goes in as written, and a value JSON
    cannot hold (NaN, infinity: a model bug) makes the line an error instead."""
    raw = message.get("id")
    body = {k: v for k, v in message.items() if k != "id" or not isinstance(raw, RawId)}
    try:
        text = json.dumps(body, allow_nan=False)
    except (ValueError, RecursionError) as e:
        text = json.dumps(error("GenericError", f"internal error: the answer is not JSON ({e})"))
    if isinstance(raw, RawId):
        text = f'{text[:-1]}, "id": {raw}}}'
    return text.encode() + b"\r\n"


# Parse errors and limits in QEMU's words, as its qobject/ has them (read in QEMU 10 trees): the "JSON
# parse error, ..." of json-parser.c's parse_error (a lone surrogate, invalid UTF-8 in a string, a
# duplicate key) and json-streamer.c's (a stray character, "JSON nesting depth limit exceeded"). A parse
# error is answered as QEMU answers one (monitor/qmp.c handle_qmp_command: qmp_error_response, GenericError).
def _integer(text: str) -> int | float:
    """A JSON integer as QEMU's parser keeps it (json-parser.c parse_literal): an int64, else a uint64,
    else the nearest double - never Python's unbounded int, which refuses to convert over 4300 digits."""
    if len(text) <= 20:
        value = int(text)
        if -(1 << 63) <= value < 1 << 64:
            return value
    return float(text)


def _constant(name: str) -> NoReturn:
    """NaN, Infinity, -Infinity: Python's extension to JSON. QEMU's lexer stops at their first letter."""
    raise ParseError(f"JSON parse error, stray '{name[:2] if name.startswith('-') else name[0]}'")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ParseError("JSON parse error, duplicate key")
    return out


_DECODER = json.JSONDecoder(parse_int=_integer, parse_constant=_constant, object_pairs_hook=_object)


def _refusal(value: Any) -> str | None:
    """What QEMU refuses in a parsed message: nesting deeper than its limit, and a \\u escape that is half
    of a surrogate pair (Python keeps it as a lone surrogate, which no UTF-8 output can hold)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            bad = _SURROGATE.search(item)
            if bad:
                return f"JSON parse error, \\u{ord(bad.group()):04x} is not a valid Unicode character"
        elif isinstance(item, dict | list):
            if depth > MAX_NESTING:
                return "JSON nesting depth limit exceeded"
            stack.extend((member, depth + 1) for member in ([*item, *item.values()] if isinstance(item, dict)
                                                            else item))
    return None


def _escape(char: re.Match[str]) -> str:
    """A character as a JSON escape: answers are ASCII, as QEMU's JSON writer makes them."""
    return json.dumps(char.group())[1:-1]


def member_text(text: str, name: str) -> str | None:
    """The JSON text of member `name` of the object `text` (valid JSON, no repeated keys), as written."""
    depth, key, start = 0, None, -1
    for token in _TOKEN.finditer(text):
        char = token.group()[0]
        if depth == 1 and char in ",}":
            if key == name:
                return text[start:token.start()].strip(" \t\r\n")
            start = -1
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif depth == 1 and char == ":":
            start = token.end()
        elif depth == 1 and char == '"' and start < 0:
            key = json.loads(token.group())
    return None


class MessageReader:
    """The client's bytes as requests, each `(message, id)`, or the error text of a message that cannot be
    one. Decoded as a stream, so a UTF-8 character split between two reads survives; an invalid byte is
    kept (as a surrogate escape) until its message is refused. A message that cannot be parsed is dropped
    with the rest of its line, as the line is where a client starts again."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._text = ""
        self._skip_line = False

    def feed(self, data: bytes | bytearray) -> list[tuple[Any, RawId | None] | str]:
        self._text += self._utf8.decode(data)
        out: list[tuple[Any, RawId | None] | str] = []
        while True:
            if self._skip_line:
                line_end = self._text.find("\n")
                self._text = "" if line_end < 0 else self._text[line_end + 1:]
                self._skip_line = line_end < 0
            self._text = self._text.lstrip(" \t\r\n")
            if not self._text:
                return out
            try:
                msg, end = _DECODER.raw_decode(self._text)
            except RecursionError:  # deeper than MAX_NESTING, and more (Python's limit is raised above it)
                out.append("JSON nesting depth limit exceeded")
                self._skip_line = True
                continue
            except ParseError as e:  # wrong however the message ends
                out.append(str(e))
                self._skip_line = True
                continue
            except json.JSONDecodeError as e:
                if self._text.find("\n", e.pos) >= 0:  # a wrong line, not a message still arriving
                    out.append(f"JSON parse error, {e.msg}")
                    self._skip_line = True
                    continue
                end = -1
            if end < 0 or (end == len(self._text) and self._text[-1] not in '"]}'):  # a number may go on
                if len(self._text) > MAX_MESSAGE:  # QEMU's JSON streamer has a limit too
                    out.append("JSON parse error, message too large")
                    self._text = ""
                return out  # the rest of the message is still to come
            text, self._text = self._text[:end], self._text[end:]
            if _SURROGATE.search(text):  # bytes that are not UTF-8: outside a string they fail to parse
                out.append("JSON parse error, invalid UTF-8 sequence in string")
                continue
            problem = _refusal(msg)
            if problem is not None:
                out.append(problem)
                continue
            raw = member_text(text, "id") if isinstance(msg, dict) and "id" in msg else None
            out.append((msg, None if raw is None else RawId(_NON_ASCII.sub(_escape, raw))))


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


def check_capabilities(args: dict[str, Any]) -> None:
    """qmp_capabilities' `enable` (a list: check_arguments), element by element as QEMU's QAPI input visitor
    reads it: QMPCapability's one value is oob, which every monitor here offers, so monitor/qmp-cmds-control.c
    qmp_caps_check's "Capability ... not available" never comes."""
    for i, cap in enumerate(args.get("enable", [])):
        if not isinstance(cap, str):
            raise ValueError(f"Invalid parameter type for 'enable[{i}]', expected: string")
        if cap != "oob":  # a list element has no name: qapi-visit-core.c input_type_enum says "null"
            raise ValueError(f"Parameter 'null' does not accept value '{cap}'")


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
        # Python's json recurses once per level: let it go as deep as QEMU allows, and further, so that
        # a message nested deeper than MAX_NESTING is found too deep rather than beyond the interpreter.
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 2 * MAX_NESTING + 1000))

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
        greeting = {"QMP": {"version": {"qemu": qemu_version(self.machine), "package": PACKAGE},
                            "capabilities": ["oob"]}}
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
        reader = MessageReader()
        async for chunk in stream:
            for item in reader.feed(chunk):
                if isinstance(item, str):  # a parse error, answered as QEMU answers one (monitor/qmp.c)
                    self._send(error("GenericError", item))
                else:
                    oob = self._handle(*item, oob)

    async def _writer(self, stream: trio.SocketStream, receive: trio.MemoryReceiveChannel[dict[str, Any]],
                      scope: trio.CancelScope) -> None:
        async with receive:
            async for message in receive:
                try:
                    await stream.send_all(encode(message))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    scope.cancel()
                    break
        self._written.set()

    def _handle(self, msg: Any, msg_id: RawId | None, oob_enabled: bool) -> bool:
        """One message: answered here (bad input, out-of-band) or queued for the main loop. Returns whether
        out-of-band is on for this session."""
        try:
            name, args, oob = check_request(msg, oob_enabled)
        except ValueError as e:
            self._send(error("GenericError", str(e), msg_id))
            return oob_enabled
        if not self._negotiated and name != "qmp_capabilities":
            # monitor/qmp.c monitor_qmp_dispatch: before negotiation only qmp_capabilities exists, and a command
            # not found - any other, known or not (QEMU 7.2 answers so) - gets this message instead
            self._send(error("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'",
                             msg_id))
            return oob_enabled
        if not known(self.machine, name):
            self._send(error("CommandNotFound", f"The command {name} has not been found", msg_id))
            return oob_enabled
        if oob and name not in OOB:
            self._send(error("GenericError", f"The command {name} does not support OOB", msg_id))
            return oob_enabled
        try:
            if name in COMMANDS:  # a recorded command's arguments pick its recorded answer (probe.recorded)
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
            try:
                check_capabilities(args)
            except ValueError as e:
                self._send(error("GenericError", str(e), msg_id))
                return oob_enabled
            self._queue(name, args, msg_id, negotiate=True)
            return "oob" in args.get("enable", [])
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


@dataclass(frozen=True)
class Listen:
    """Where one QMP socket listens: a unix `path`, or a TCP `host` (None: every address) and `port`."""

    spec: str
    path: str | None = None
    host: str | None = None
    port: int = 0
    fd: int | None = None  # a listening socket the parent passed (libvirt: -chardev socket,id=ID,fd=N)


def parse_listen(spec: str) -> Listen:
    """`unix:PATH,server=on,wait=off` or `tcp:HOST:PORT,server=on,wait=off` (QEMU's -qmp/-chardev socket),
    checked without touching anything: BadInput saying why it cannot be a listening socket."""
    address, *props = spec.split(",")
    options = dict(p.partition("=")[::2] for p in props)
    kind, _, where = address.partition(":")
    if kind == "fd":
        return _inherited(spec, where)
    if kind not in ("unix", "tcp") or not where:
        raise BadInput(f"-qmp {spec}: expected unix:PATH or tcp:HOST:PORT")
    if options.get("server") not in ("on", "yes", "true", ""):
        raise BadInput(f"-qmp {spec}: only a listening socket is modelled (server=on)")
    if options.get("wait", "on") not in ("off", "no", "false"):
        raise BadInput(f"-qmp {spec}: wait=on would block start-up until a client connects; use wait=off")
    if kind == "tcp":
        host, _, port = where.rpartition(":")
        if not re.fullmatch("[0-9]{1,5}", port) or int(port) > 65535:
            raise BadInput(f"-qmp {spec}: port {port!r} is not a port number (0 to 65535)")
        return Listen(spec, host=host.removeprefix("[").removesuffix("]") or None, port=int(port))
    size = len(os.fsencode(where))
    if size > UNIX_PATH_MAX:  # QEMU's words (util/qemu-sockets.c), with the limit here
        raise BadInput(f"-qmp {spec}: UNIX socket path '{where}' is too long: {size} bytes, at most {UNIX_PATH_MAX}")
    path = Path(where)
    parent = path.parent
    try:
        if not parent.is_dir():
            raise BadInput(f"-qmp {spec}: no such directory {parent}")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise BadInput(f"-qmp {spec}: directory {parent} is not writable")
        if (path.exists() or path.is_symlink()) and not path.is_socket():
            raise BadInput(f"-qmp {spec}: {where} exists and is not a socket")
    except OSError as e:
        raise BadInput(f"-qmp {spec}: {e.strerror}") from None
    return Listen(spec, path=where)


def chardev_filename(where: Listen, sock: socket.socket | None) -> str:
    """The `filename` query-chardev gives a listening QMP socket (chardev/char-socket.c SocketAddress_to_str)."""
    path = where.path
    if path is None and sock is not None and sock.family == socket.AF_UNIX:
        path = sock.getsockname()
    if path is not None:
        return f"unix:{path},server=on"
    return f"tcp:{where.host or '0.0.0.0'}:{where.port},server=on"


def _inherited(spec: str, number: str) -> Listen:
    """`fd:N`: descriptor N, inherited, must be a listening stream socket (QEMU's qemu_chr_open_socket with
    fd=: libvirt binds and listens on the monitor's unix socket itself and passes it)."""
    if not re.fullmatch("[0-9]{1,9}", number):
        raise BadInput(f"-chardev {spec}: fd={number!r} is not a descriptor number")
    fd = int(number)
    why = ""
    try:
        sock = socket.socket(fileno=os.dup(fd))
        try:
            listening = sock.type == socket.SOCK_STREAM and sock.getsockopt(socket.SOL_SOCKET,
                                                                             socket.SO_ACCEPTCONN)
        finally:
            sock.close()
    except OSError as e:
        listening, why = False, f" ({e.strerror or e})"
    if not listening:
        raise BadInput(f"-chardev {spec}: fd={fd} is not a listening stream socket{why}")
    return Listen(spec, fd=fd)


def reserve(where: Listen) -> socket.socket | None:
    """A TCP port bound now, so that a port in use is refused before anything is written; it listens
    from listen() on, when the process serves (a client is refused until then, as by a QEMU not up yet).
    A unix socket was checked by parse_listen: its file appears when it listens, so that its appearing
    still means the process is up."""
    if where.path is not None:
        return None
    if where.fd is not None:
        return socket.socket(fileno=where.fd)
    sock: socket.socket | None = None
    try:
        family, _, _, _, address = socket.getaddrinfo(where.host, where.port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        return sock
    except (OSError, UnicodeError) as e:
        if sock is not None:
            sock.close()
        raise BadInput(f"-qmp {where.spec}: cannot listen: {getattr(e, 'strerror', None) or e}") from None


def listen(where: Listen, sock: socket.socket | None) -> trio.SocketListener:
    """The listening socket, from inside the Trio run that serves it: the port reserve() bound, or the
    unix socket, made now (a socket file left at its path is replaced, as QEMU's unix_listen_saddr does)."""
    try:
        if sock is None:
            Path(str(where.path)).unlink(missing_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(where.path))
            sock.listen(1)
        else:
            sock.listen(socket.SOMAXCONN)
    except OSError as e:
        if sock is not None:
            sock.close()
        raise BadInput(f"-qmp {where.spec}: cannot listen: {e.strerror or e}") from None
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))
