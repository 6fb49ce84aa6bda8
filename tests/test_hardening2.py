"""Issue 25, items 1 and 2: no QMP message kills `vcpu-sched qemu`, and a start that fails touches no file.

Every test runs the user's command as a process and talks to it over a real socket. Waits are bounded
polls (a socket appears, an answer line comes), never sleeps; each test ends with no process of ours left."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Qemu, wait_for

LINE = ["--fix", "quiesced", "-M", "pseries,accel=kvm", "-smp", "2", "-cpu", "host"]
VCPU_SCHED = [sys.executable, "-m", "vcpu_sched"]


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    # what earlier tests left (multiprocessing's resource tracker after a Dask sweep) is not this test's
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    assert [c for c in psutil.Process().children(recursive=True) if c.pid not in before] == []


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[Qemu]:
    q = Qemu(tmp_path, *LINE)
    yield q
    _stop(q.proc)


class Client:
    """A raw QMP connection: bytes out, one answer line in (the greeting read and capabilities negotiated)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)  # a bound on a wait that fails the test, not a measurement
        self.sock.connect(str(path))
        self.lines = self.sock.makefile("rb")
        assert "QMP" in json.loads(self.lines.readline())
        assert self.ask(b'{"execute": "qmp_capabilities"}\n') == {"return": {}}

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        line = self.lines.readline()
        assert line.endswith(b"\r\n"), line
        return line

    def ask(self, data: bytes) -> Any:
        self.send(data)
        return strict(self.line())

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def _not_json(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


def strict(text: bytes | str) -> Any:
    """JSON as RFC 8259 has it: no NaN or Infinity, numbers of any size, valid UTF-8."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # strict: invalid UTF-8 raises
    return json.loads(text, parse_int=Decimal, parse_float=Decimal, parse_constant=_not_json)


def _status_ok(client: Client) -> None:
    assert client.ask(b'{"execute": "query-status", "id": "after"}\n') == {
        "return": {"running": False, "singlestep": False, "status": "prelaunch"}, "id": "after"}


def _error(desc: str) -> dict[str, Any]:
    return {"error": {"class": "GenericError", "desc": desc}}


HOSTILE = [  # (what the client sends, the answer) - QEMU's words for its parse errors (qobject/json-*.c)
    (b"[" * 200_000 + b"]" * 200_000 + b"\n", _error("JSON nesting depth limit exceeded")),
    (b'{"a":' * 200_000 + b"1" + b"}" * 200_000 + b"\n", _error("JSON nesting depth limit exceeded")),
    (b"[" * 1025 + b"]" * 1025 + b"\n", _error("JSON nesting depth limit exceeded")),
    (b"[" * 1024 + b"]" * 1024 + b"\n", _error("QMP input must be a JSON object")),  # QEMU's limit: accepted
    (b'{"execute": "query-status", "id": NaN}\n', _error("JSON parse error, stray 'N'")),
    (b'{"execute": "query-status", "id": [Infinity]}\n', _error("JSON parse error, stray 'I'")),
    (b'{"execute": "query-status", "id": -Infinity}\n', _error("JSON parse error, stray '-I'")),
    (b'{"execute": "query-status", "id": "\\ud800"}\n',
     _error("JSON parse error, \\ud800 is not a valid Unicode character")),
    (b'{"execute": "query-status", "arguments": {"\\udfff": 1}}\n',
     _error("JSON parse error, \\udfff is not a valid Unicode character")),
    (b'{"execute": "query-status", "id": "\xff\xfe"}\n', _error("JSON parse error, invalid UTF-8 sequence in string")),
    (b'{"execute": "query-status", "id": "\xed\xa0\x80"}\n',  # a surrogate encoded in UTF-8: not UTF-8
     _error("JSON parse error, invalid UTF-8 sequence in string")),
    (b'{"execute": "query-status", "id": 1, "id": 2}\n', _error("JSON parse error, duplicate key")),
    (b"\xff\xfe\x00\n", None),  # not JSON at all: an error, in Python's words after QEMU's prefix
    (b"1" * 5001 + b"\n", _error("QMP input must be a JSON object")),
    (b'{"execute": "human-monitor-command", "arguments": {"command-line": "info status", "cpu-index": '
     + b"9" * 5001 + b"}}\n", _error("Invalid parameter type for 'cpu-index', expected: int")),
]


def test_hostile_messages_get_error_objects_and_the_session_goes_on(qemu: Qemu) -> None:
    client = Client(qemu.sock)
    try:
        for message, answer in HOSTILE:
            got = client.ask(message)
            if answer is None:
                assert got["error"]["class"] == "GenericError" and got["error"]["desc"].startswith("JSON parse error")
            else:
                assert got == answer, message[:80]
            _status_ok(client)
    finally:
        client.close()
    assert qemu.proc.poll() is None


@pytest.mark.parametrize("id_text", [
    b"1e999", b"-1e999", b"1" * 5001, b"-" + b"9" * 5001, b"18446744073709551616", b"1.0", b"0.1e-999",
    b'"\\u00e9\xc3\xa9"', b'{"deep": [[[[1e400]]]], "s": "\\ud83d\\ude00"}', b"null",
])
def test_the_id_comes_back_as_the_client_wrote_it(qemu: Qemu, id_text: bytes) -> None:
    """An id that Python would turn into Infinity, or refuse to convert, comes back as valid JSON with
    the value the client sent (QEMU itself would print 1e999 back as `inf`)."""
    client = Client(qemu.sock)
    try:
        client.send(b'{"execute": "query-status", "id": ' + id_text + b"}\n")
        line = client.line()
        assert line.isascii()  # as QEMU's JSON writer: every non-ASCII character escaped
        answer = strict(line)
        assert answer["return"]["status"] == "prelaunch"
        assert answer["id"] == strict(id_text)
        _status_ok(client)
    finally:
        client.close()


def test_a_character_split_between_two_reads_survives(qemu: Qemu) -> None:
    client = Client(qemu.sock)
    try:
        e_acute = "é".encode()
        # The answer to the first message shows the server has read the first byte of é, alone.
        client.send(b'{"execute": "query-status", "id": 1}{"execute": "query-status", "id": "' + e_acute[:1])
        assert strict(client.line())["id"] == 1
        client.send(e_acute[1:] + b'"}\n')
        assert strict(client.line()) == {"return": {"running": False, "singlestep": False, "status": "prelaunch"},
                                         "id": "é"}
        _status_ok(client)
    finally:
        client.close()


def test_the_next_client_is_served_after_a_hostile_one(qemu: Qemu) -> None:
    first = Client(qemu.sock)
    first.send(b"[" * 200_000)  # and hangs up in the middle of it
    first.close()
    second = Client(qemu.sock)
    try:
        _status_ok(second)
    finally:
        second.close()


# Generated messages: JSON texts with every kind Python's json mishandles - numbers beyond 64 bits and
# beyond Python's int-string limit, overflowing floats, NaN and Infinity, lone surrogates escaped and
# encoded, invalid bytes, repeated keys, deep nesting - each sent as one line.
NUMBERS = st.from_regex(r"-?(0|[1-9][0-9]{0,5100})(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,5})?", fullmatch=True)
TEXTS = st.text(st.characters(codec=None) | st.characters(categories=["Cs"]), max_size=8)  # lone surrogates too
STRINGS = st.one_of(TEXTS.map(json.dumps), TEXTS.map(lambda t: json.dumps(t, ensure_ascii=False)))
SCALARS = st.one_of(st.sampled_from(["null", "true", "false", "NaN", "Infinity", "-Infinity", "1e999"]),
                    NUMBERS, st.integers(4300, 6000).map(lambda n: "9" * n), STRINGS)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
    | st.lists(st.tuples(STRINGS, inner), max_size=4).map(
        lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}"),
    max_leaves=12)
DEEP = st.integers(1000, 5000).map(lambda n: "[" * n + "]" * n)  # around QEMU's limit, 1024
TOO_DEEP = st.integers(1100, 5000).map(lambda n: "[" * n + "]" * n)  # as an id: never echoed, so never parsed here
WITH_ID = '{"execute": "query-status", "id": '
MESSAGES = st.one_of(VALUES, DEEP, (VALUES | TOO_DEEP).map(lambda v: WITH_ID + v + "}"),
                     VALUES.map(lambda v: '{"execute": "query-status", "arguments": ' + v + "}"),
                     st.binary(max_size=20).map(lambda b: b"\xff" + b.replace(b"\n", b"")))  # never a JSON prefix


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Client]:
    q = Qemu(tmp_path, *LINE)
    client = Client(q.sock)
    yield client
    _status_ok(client)
    client.close()
    _stop(q.proc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=MESSAGES)
def test_any_message_gets_one_json_answer(served: Client, message: str | bytes) -> None:
    data = message if isinstance(message, bytes) else message.encode("utf-8", "surrogatepass")
    served.send(data + b"\n")
    answer = strict(served.line())
    assert ("error" in answer) != ("return" in answer) and set(answer) <= {"error", "return", "id"}, answer
    if "return" in answer and data.startswith(WITH_ID.encode()):  # its id back: the value sent
        assert answer["id"] == strict(data[len(WITH_ID):-1])


# A failed start: one line, exit status 2, and an existing --log and -pidfile left as they were.
def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


@pytest.mark.parametrize("qmp,needle", [
    ("unix:{tmp}/" + "s" * 120 + ".sock,server=on,wait=off", "is too long"),
    ("tcp:127.0.0.1:99999,server=on,wait=off", "'99999' is not a port number"),
    ("tcp:127.0.0.1:²,server=on,wait=off", "is not a port number"),
    ("tcp:127.0.0.1:-1,server=on,wait=off", "is not a port number"),
    ("tcp:127.0.0.1:{taken},server=on,wait=off", "cannot listen: Address already in use"),
    ("tcp:no-such-host.invalid:4444,server=on,wait=off", "cannot listen"),
    ("unix:{tmp}/no/such/dir/q.sock,server=on,wait=off", "no such directory"),
    ("unix:{tmp}/run.jsonl,server=on,wait=off", "exists and is not a socket"),
    ("unix:{tmp},server=on,wait=off", "exists and is not a socket"),
    ("unix:{tmp}/q.sock,server=on,wait=on", "wait=on"),
])
def test_a_bad_qmp_socket_leaves_the_files_as_they_were(tmp_path: Path, qmp: str, needle: str) -> None:
    log, pidfile = tmp_path / "run.jsonl", tmp_path / "q.pid"
    log.write_bytes(b'{"event": "an earlier run"}\n')
    pidfile.write_bytes(b"4242\n")
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    with _taken_port() as taken:
        spec = qmp.format(tmp=tmp_path, taken=taken.getsockname()[1])
        proc = subprocess.run([*VCPU_SCHED, "qemu", "--log", str(log), *LINE, "-S", "-pidfile", str(pidfile),
                               "-qmp", spec], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("vcpu-sched: error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing changed, created or removed


@pytest.mark.parametrize("args,needle", [
    (["--log", "{tmp}/run.jsonl", "-pidfile", "{tmp}/no/such/dir/q.pid"], "no such directory"),
    (["--log", "{tmp}/run.jsonl", "-pidfile", "{tmp}"], "is a directory"),
    (["--log", "{tmp}/run.jsonl", "-pidfile", "{tmp}/run.jsonl"], "is also the --log file"),
    (["--log", "{tmp}/run.jsonl", "-pidfile", "{tmp}/q.pid", "-qmp", "unix:{tmp}/q.pid,server=on,wait=off"],
     "exists and is not a socket"),
    (["--log", "{tmp}/run.jsonl", "-qmp", "unix:{tmp}/a.sock,server=on,wait=off",
      "-qmp", "unix:{tmp}/a.sock,server=on,wait=off"], "is also the -qmp file"),
    (["--log", "{tmp}/no/such/dir/run.jsonl", "-pidfile", "{tmp}/q.pid"], "no such directory"),
    (["--log", "{tmp}/run.jsonl", "--fix", "bogus", "-pidfile", "{tmp}/q.pid"], "argument --fix: invalid choice"),
    (["--log", "{tmp}/run.jsonl", "--deadline", "soon", "-pidfile", "{tmp}/q.pid"], "argument --deadline"),
    (["--log", "{tmp}/run.jsonl", "--deadline", "3", "-pidfile", "{tmp}/q.pid"], "add --watchdog SECONDS"),
    (["--log", "{tmp}/run.jsonl", "-pidfile", "{tmp}/q.pid", "-mon", "chardev=nope,mode=control"],
     "no -chardev socket with id=nope"),
])
def test_a_bad_output_or_option_leaves_the_files_as_they_were(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "run.jsonl").write_bytes(b'{"event": "an earlier run"}\n')
    (tmp_path / "q.pid").write_bytes(b"4242\n")
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    argv = [a.format(tmp=tmp_path) for a in args]
    sock = f"unix:{tmp_path}/q.sock,server=on,wait=off"
    proc = subprocess.run([*VCPU_SCHED, "qemu", *LINE, "-S", *argv, "-qmp", sock],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("vcpu-sched: error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_log_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([*VCPU_SCHED, "qemu", "--log", "/dev/full", *LINE, "-S", "--deadline", "30",
                           "--watchdog", "10", "-qmp", f"unix:{tmp_path}/q.sock,server=on,wait=off"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2 and proc.stderr == "vcpu-sched: error: --log /dev/full: No space left on device\n"
    assert list(tmp_path.iterdir()) == []


def test_a_second_process_with_the_same_pidfile_is_refused(tmp_path: Path) -> None:
    """As QEMU locks its pidfile (qemu_write_pidfile): the second start fails and leaves the first's
    pidfile, which the first removes when it quits."""
    pidfile = tmp_path / "q.pid"
    first = Qemu(tmp_path, *LINE, "-pidfile", str(pidfile))
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text() == f"{first.proc.pid}\n", 60)
        second = subprocess.run([*VCPU_SCHED, "qemu", *LINE, "-S", "-pidfile", str(pidfile),
                                 "-qmp", f"unix:{tmp_path}/second.sock,server=on,wait=off"],
                                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        assert second.returncode == 2 and len(second.stderr.splitlines()) == 1
        assert "Cannot lock pid file" in second.stderr
        assert pidfile.read_text() == f"{first.proc.pid}\n" and not (tmp_path / "second.sock").exists()
        client = Client(first.sock)
        client.send(b'{"execute": "quit"}\n')
        assert first.proc.wait(timeout=60) == 0
        client.close()
        assert not pidfile.exists()
    finally:
        _stop(first.proc)


def test_a_sweep_that_fails_creates_no_seed_database(tmp_path: Path) -> None:
    """The same kind in `sweep --db`: the database was created before the cluster was reached."""
    db = tmp_path / "seeds.jsonl"
    proc = subprocess.run([*VCPU_SCHED, "sweep", "--seeds", "0:4", "--cluster", "tcp://127.0.0.1:1", "--db", str(db)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not db.exists()


def test_an_unwritable_existing_output_is_refused_before_the_run(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write any file")
    log = tmp_path / "run.jsonl"
    log.write_bytes(b"kept\n")
    log.chmod(0o444)
    proc = subprocess.run([*VCPU_SCHED, "run", "--quiet", "--log", str(log)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr == f"vcpu-sched: error: --log {log}: is not writable\n"
    assert log.read_bytes() == b"kept\n"
