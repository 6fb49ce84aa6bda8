"""docs/qmp.md's Python session, run as written against the `vcpu-sched qemu` command above it: the monitor
stops answering once the guest locks up, and out-of-band commands still answer (issue 26 item 3)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("qemu.qmp")

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "qmp.md"


def _session_and_server(sock: Path) -> tuple[str, list[str]]:
    text = PAGE.read_text(encoding="utf-8")
    session = re.search(r"```python\n(.*?)```", text, re.S)
    server = re.search(r"```sh\n(vcpu-sched qemu .*?)\n(?=vcpu-sched|```)", text, re.S)
    assert session is not None and server is not None, "docs/qmp.md has the server command and the session"
    command = server.group(1).split("  #")[0].replace("\\\n", " ")
    argv = [str(Path(sys.executable).parent / "vcpu-sched"), *shlex.split(command)[1:]]
    assert "unix:/tmp/q.sock,server=on,wait=off" in argv and '"/tmp/q.sock"' in session.group(1)
    return (session.group(1).replace('"/tmp/q.sock"', repr(str(sock))),
            [a.replace("/tmp/q.sock", str(sock)) for a in argv])


@pytest.mark.slow  # about 3 s: the server's start, the boot, a 1 s monitor timeout
def test_the_session_shows_the_hang(tmp_path: Path) -> None:
    sock = tmp_path / "q.sock"
    session, argv = _session_and_server(sock)
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):  # the socket appears once the server listens (a bounded wait, not a sleep to pass)
            if sock.exists() or server.poll() is not None:
                break
            time.sleep(0.05)
        assert sock.exists(), server.stderr.read() if server.poll() is not None else "no socket"
        out = subprocess.run([sys.executable, "-c", session], capture_output=True, text=True, timeout=60, check=False)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "'status': 'prelaunch'" in lines[0]
    assert "hung: the BQL is held by a vCPU" in lines, out.stdout
    assert lines[-1].startswith("[{'id'"), "out-of-band query-yank answers during the hang"
    assert server.returncode == 143, err  # SIGTERM ends it, the log completed
