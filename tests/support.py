"""Helpers for tests: free loopback ports and a real `harness serve` subprocess."""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
# External test material (RFC 4475 torture messages), vendored from ../shared/testdata so
# that a clean clone anywhere has it; tests/data/rfc4475/README.md says where it is from.
TESTDATA = ROOT / "tests" / "data"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


@contextlib.contextmanager
def running_server(backend: str = "local", workers: int = 2, opts: Optional[dict] = None,
                   extra: Sequence[str] = (), ready_timeout: float = 30.0,
                   env: Optional[dict] = None) -> Iterator[dict]:
    """Start `harness serve` on a free port; yield its ready record plus ``proc``.

    The record is the JSON ready line: host, port, workers, pid. On exit the
    server gets SIGTERM, then SIGKILL after 10 s.
    """
    cmd = harness_cmd("serve", "--backend", backend, "--workers", str(workers),
                      "--host", "127.0.0.1", "--port", "0", *extra)
    for k, v in (opts or {}).items():
        cmd += ["--opt", f"{k}={v}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, cwd=ROOT,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        ready = _read_ready(proc, ready_timeout)
        ready["proc"] = proc
        yield ready
    finally:
        _stop(proc)


def _read_ready(proc: subprocess.Popen, timeout: float) -> dict:
    """Read stdout until the JSON ready line, without blocking past ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError(f"harness serve exited ({proc.wait()}) before its ready line")
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("event") == "ready":
                return rec
    raise RuntimeError(f"harness serve printed no ready line within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc.stdout:
        proc.stdout.close()
