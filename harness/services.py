"""Start and stop the service processes some backends need: redis-server and memcached.

    svc = start_service("redis", run_dir, fsync=False, eatmydata=False, unix=False, memory_mb=64)
    store = backends.create("redis", **svc.store_options())
    ...
    svc.stop()

Contract:

* Each service is a child process in its own session (so a Ctrl-C sent to the
  terminal's process group reaches the harness, which stops it in order), with
  a private directory (mode 0700) created under ``run_dir``; ``stop()`` sends
  SIGTERM, then SIGKILL after a grace period, reaps it by PID and removes that
  directory. ``run_dir`` itself is created if missing and never removed.
* It listens on a free 127.0.0.1 port or, with ``unix=True``, on a unix socket
  in the private directory (0700 directory, socket 0700/0600): never on a
  public address.
* ``start_service`` returns only when the service answers (PING / version) or
  raises :class:`ServiceError` with the tail of the service's log.
* A missing program raises :class:`harness.errors.MissingBinary` naming the
  apt package.
* ``eatmydata=True`` starts the process with libeatmydata in LD_PRELOAD and
  records in ``preload_verified`` whether /proc/PID/maps shows it.

Redis durability: ``fsync=True`` is ``appendonly yes`` + ``appendfsync always``
(an fsync per write command, like LMDB's sync); ``fsync=False`` is ``appendonly
yes`` + ``appendfsync no``: Redis still writes every command to the AOF, only
the fsync is left to the kernel. That keeps "fsync off" comparable to the other
backends' "fsync off" (LMDB and files still write, they only skip the flush),
so the difference between the two modes is the price of the flush alone.
RDB snapshots are off (``save ""``) and automatic AOF rewrites are off, so no
background fork steals CPU in the middle of a measurement; the run directory
is removed after the run, so the AOF cannot grow without bound across runs.
``maxmemory`` is ``memory_mb`` with ``noeviction``: a full Redis refuses writes
(StoreFull) instead of silently evicting live dialogs.

memcached has no persistence, so ``fsync=True`` is refused (InvalidInput);
``-U 0`` disables UDP (the amplification vector) and ``-m`` caps memory.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from harness import durability
from harness.errors import HarnessError, InvalidInput, MissingBinary

KINDS = ("redis", "memcached")
PROGRAMS = {"redis": ("redis-server", "redis-server"), "memcached": ("memcached", "memcached")}
READY_TIMEOUT_S = 15.0
STOP_GRACE_S = 5.0
# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_UNIX_PATH = 107


class ServiceError(HarnessError):
    """A service did not start or died; the message carries its log tail."""


@dataclass
class Service:
    """A running redis-server or memcached started by :func:`start_service`."""

    kind: str
    pid: int
    host: Optional[str]
    port: Optional[int]
    unix_path: Optional[str]
    version: str
    directory: Path
    fsync: bool
    eatmydata: bool
    memory_mb: int
    preload_verified: bool = False
    proc: Optional[subprocess.Popen] = field(default=None, repr=False)

    def store_options(self) -> dict[str, Any]:
        """Options that point a backend at this service: ``{"url": ...}`` or ``{"servers": [...]}``."""
        if self.kind == "redis":
            url = f"unix://{self.unix_path}" if self.unix_path else f"redis://{self.host}:{self.port}/0"
            return {"url": url}
        return {"servers": [f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"]}

    def address(self) -> str:
        return self.unix_path or f"{self.host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        """For the manifest: what ran, where, with which durability."""
        return {"kind": self.kind, "pid": self.pid, "address": self.address(), "version": self.version,
                "fsync": self.fsync, "eatmydata": self.eatmydata,
                "eatmydata_verified": self.preload_verified, "memory_mb": self.memory_mb,
                "directory": str(self.directory)}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a grace period, reap, remove the private directory. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _terminate(proc, STOP_GRACE_S)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def program_path(kind: str) -> str:
    """Absolute path of the service's program; MissingBinary naming the apt package if absent."""
    if kind not in PROGRAMS:
        raise InvalidInput(f"unknown service {kind!r}; allowed: {', '.join(KINDS)}")
    program, package = PROGRAMS[kind]
    path = shutil.which(program)
    if path is None:
        raise MissingBinary(program, package)
    return path


def program_version(kind: str) -> str:
    """``v=7.0.15`` from ``redis-server --version``; ``1.6.18`` from ``memcached -V``."""
    flag = "--version" if kind == "redis" else "-V"
    out = subprocess.run([program_path(kind), flag], capture_output=True, text=True, timeout=10,
                         stdin=subprocess.DEVNULL).stdout.strip()
    for token in out.split():
        if token.startswith("v="):
            return token[2:]
    return out.split()[-1] if out else "unknown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_config(directory: Path, port: int, unix_path: Optional[str], fsync: bool, memory_mb: int) -> str:
    """The redis.conf text for one run (see the module docstring for the choices)."""
    lines = [
        "bind 127.0.0.1",
        "protected-mode yes",
        f"port {0 if unix_path else port}",
        "daemonize no",
        'save ""',
        "appendonly yes",
        f"appendfsync {'always' if fsync else 'no'}",
        "auto-aof-rewrite-percentage 0",
        f"dir {directory}",
        f"maxmemory {memory_mb}mb",
        "maxmemory-policy noeviction",
        "databases 16",
    ]
    if unix_path:
        lines += [f"unixsocket {unix_path}", "unixsocketperm 700"]
    return "\n".join(lines) + "\n"


def _command(kind: str, directory: Path, port: int, unix_path: Optional[str], fsync: bool,
             memory_mb: int) -> list[str]:
    program = program_path(kind)
    if kind == "redis":
        conf = directory / "redis.conf"
        conf.write_text(redis_config(directory, port, unix_path, fsync, memory_mb))
        return [program, str(conf)]
    cmd = [program, "-U", "0", "-m", str(memory_mb), "-c", "4096"]
    cmd += ["-s", unix_path, "-a", "0600"] if unix_path else ["-l", "127.0.0.1", "-p", str(port)]
    if os.geteuid() == 0:
        # memcached refuses to run as root without -u; the harness itself runs as
        # root here, and the socket lives in a root-owned 0700 directory.
        cmd += ["-u", "root"]
    return cmd


def _probe(kind: str, port: int, unix_path: Optional[str], timeout: float) -> bool:
    """One readiness probe: PING -> +PONG, or version -> VERSION."""
    request, expect = (b"PING\r\n", b"+PONG") if kind == "redis" else (b"version\r\n", b"VERSION")
    family = socket.AF_UNIX if unix_path else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(unix_path if unix_path else ("127.0.0.1", port))
            s.sendall(request)
            return s.recv(64).startswith(expect)
    except OSError:
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def _wait_ready(kind: str, proc: subprocess.Popen, port: int, unix_path: Optional[str], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{kind} exited with status {proc.returncode} before it was ready; "
                               f"log: {log_tail(log)}")
        if _probe(kind, port, unix_path, 1.0):
            return
        time.sleep(0.02)
    _terminate(proc, 1.0)
    raise ServiceError(f"{kind} did not answer within {READY_TIMEOUT_S:.0f} s; log: {log_tail(log)}")


def _launch(kind: str, directory: Path, unix: bool, fsync: bool, eatmydata: bool,
            memory_mb: int) -> tuple[subprocess.Popen, int, Optional[str]]:
    """Start one process and wait for it; returns (proc, port, unix_path)."""
    port = 0 if unix else _free_port()
    unix_path = str(directory / f"{kind}.sock") if unix else None
    cmd = _command(kind, directory, port, unix_path, fsync, memory_mb)
    env = dict(os.environ)
    if eatmydata:
        env = durability.env_with_eatmydata(env)
    log = directory / f"{kind}.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=directory, env=env, start_new_session=True)
    _wait_ready(kind, proc, port, unix_path, log)
    return proc, port, unix_path


def _private_dir(kind: str, run_dir: Path, unix: bool) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=run_dir))  # mkdtemp: mode 0700
    if unix and len(str(directory / f"{kind}.sock")) > _MAX_UNIX_PATH:
        shutil.rmtree(directory, ignore_errors=True)
        raise InvalidInput(f"run directory {run_dir} is too long for a unix socket path "
                           f"(at most {_MAX_UNIX_PATH} bytes); use a shorter one such as /tmp")
    return directory


def start_service(kind: str, run_dir: Path, *, fsync: bool = False, eatmydata: bool = False,
                  unix: bool = False, memory_mb: int = 64) -> Service:
    """Start ``kind`` ("redis" | "memcached") and return it once it answers.

    A TCP port taken between choosing and binding it is retried on a new port
    (up to three times); every other failure raises at once.
    """
    program_path(kind)
    if kind == "memcached" and fsync:
        raise InvalidInput("memcached keeps nothing on disk: fsync=true has no meaning for it; allowed: false")
    if not 1 <= int(memory_mb) <= 1 << 20:
        raise InvalidInput(f"service memory_mb {memory_mb!r}: allowed 1..1048576")
    version = program_version(kind)
    directory = _private_dir(kind, run_dir, unix)
    try:
        for attempt in range(3):
            try:
                proc, port, unix_path = _launch(kind, directory, unix, fsync, eatmydata, memory_mb)
                break
            except ServiceError:
                if unix or attempt == 2:
                    raise
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    svc = Service(kind=kind, pid=proc.pid, host=None if unix else "127.0.0.1", port=None if unix else port,
                  unix_path=unix_path, version=version, directory=directory, fsync=fsync,
                  eatmydata=eatmydata, memory_mb=int(memory_mb), proc=proc)
    svc.preload_verified = durability.preload_verified(proc.pid) if eatmydata else False
    return svc
