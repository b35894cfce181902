"""Process plumbing for the runner: spawn pinned children in their own process group,
stop a whole group for sure, read the server's ready line, probe it with a real SIP
OPTIONS, account CPU time of process trees, and find the shared-memory files a
server holds so nothing survives a SIGKILLed master.

Every child started by :func:`spawn` gets its own session (so a Ctrl-C on the
terminal reaches only the runner, which then stops children in order), a
parent-death signal (so a SIGKILLed runner still takes its children with it),
and, when asked, a CPU affinity set before it execs.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO, Callable, Iterable, Optional, Sequence

import psutil

PR_SET_PDEATHSIG = 1
SHM_ROOT = "/dev/shm"


def _preexec(cpus: Optional[Sequence[int]]) -> Callable[[], None]:
    """In the child before exec: die with the runner; pin to ``cpus``."""
    def setup() -> None:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if cpus:
            os.sched_setaffinity(0, set(cpus))
    return setup


def spawn(cmd: Sequence[str], *, cpus: Optional[Sequence[int]] = None, env: Optional[dict] = None,
          stdout: int | IO | None = None, stderr: int | IO | None = None,
          cwd: Optional[Path] = None, text: bool = False) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a new session (pgid == pid)."""
    # preexec_fn is safe here: the runner has no other threads (progress refreshes by hand).
    return subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            env=env, cwd=cwd, text=text, start_new_session=True,
                            preexec_fn=_preexec(cpus))


def pin_process(pid: int, cpus: Optional[Sequence[int]]) -> None:
    """Pin every thread of a running process (redis-server has helper threads)."""
    if not cpus:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(int(tid), set(cpus))


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid`` (zombies included)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == pgid:
                    out.append(int(entry))
    return out


def stop_group(proc: Optional[subprocess.Popen], grace: float = 10.0,
               sig: int = signal.SIGTERM) -> Optional[int]:
    """Send ``sig`` to the leader, wait up to ``grace`` s, then SIGKILL the whole group;
    return the leader's exit status. Idempotent; never leaves a member alive."""
    if proc is None:
        return None
    pgid = proc.pid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 5.0
    while True:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.2)
        alive = [p for p in group_members(pgid) if _state(p) not in ("Z", None)]
        if (not alive and proc.poll() is not None) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return proc.returncode


def _state(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0]
    except OSError:
        return None


def read_ready(proc: subprocess.Popen, timeout: float, log: IO[str]) -> dict:
    """The ``{"event": "ready", ...}`` JSON line from ``proc.stdout`` (text mode); other
    lines go to ``log``. RuntimeError if the process exits or the time runs out."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"no ready line within {timeout:.0f} s")
        readable, _, _ = select.select([proc.stdout], [], [], left)
        if not readable:
            continue
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            raise RuntimeError(f"exited with status {proc.returncode} before its ready line")
        log.write(line)
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("event") == "ready":
                return rec


def drain(stream: Optional[IO[str]], log: IO[str]) -> None:
    """Copy whatever ``stream`` has ready to ``log`` without blocking (keeps pipes from filling)."""
    if stream is None or stream.closed:
        return
    while select.select([stream], [], [], 0)[0]:
        data = os.read(stream.fileno(), 65536)
        if not data:
            return
        log.write(data.decode(errors="replace"))


def options_request(host: str, port: int) -> bytes:
    tag = uuid.uuid4().hex[:12]
    return (f"OPTIONS sip:ping@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {host}:9;branch=z9hG4bK-{tag}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:runner@{host}>;tag={tag}\r\n"
            f"To: <sip:ping@{host}>\r\n"
            f"Call-ID: {tag}@sipstate-runner\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def sip_options(host: str, port: int, timeout: float = 2.0) -> Optional[int]:
    """Send one OPTIONS over a fresh TCP connection; the response's status code (None if none)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(options_request(host, port))
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    parts = data.split(b" ", 2)
    if len(parts) >= 2 and parts[0] == b"SIP/2.0" and parts[1].isdigit():
        return int(parts[1])
    return None


def wait_options_ok(host: str, port: int, timeout: float = 15.0) -> None:
    """Poll with OPTIONS until a 200 answers; RuntimeError naming the last status otherwise."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = sip_options(host, port)
        if status == 200:
            return
        time.sleep(0.1)
    raise RuntimeError(f"OPTIONS to {host}:{port} got {status or 'no answer'} instead of 200 "
                       f"within {timeout:.0f} s")


def tree_cpu_seconds(pid: Optional[int]) -> float:
    """CPU seconds of ``pid``, of its reaped children, and of its live descendants.

    Live processes are read from /proc/PID/task/*/schedstat (nanoseconds, every thread)
    rather than utime+stime (10 ms ticks: too coarse for a few-second run of a process
    that uses 0.1 s); reaped children come from the parent's cutime+cstime. A worker
    that dies moves from "live descendant" to the master's reaped-children time, so the
    sum stays continuous across respawns. 0.0 if ``pid`` is gone.
    """
    if not pid:
        return 0.0
    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total = t.children_user + t.children_system
        for member in [proc, *proc.children(recursive=True)]:
            total += _live_cpu_seconds(member)
        return total
    except psutil.Error:
        return 0.0


def _live_cpu_seconds(proc: psutil.Process) -> float:
    """One live process's own CPU time, all threads, ns precision when schedstat exists."""
    try:
        total_ns = 0
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{tid}/schedstat") as fh:
                total_ns += int(fh.read().split()[0])
        return total_ns / 1e9
    except (OSError, ValueError, IndexError):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            return t.user + t.system
        return 0.0


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    try:
        proc = psutil.Process(pid)
        return [pid] + [c.pid for c in proc.children(recursive=True)]
    except psutil.Error:
        return []


def shm_entries(pids: Iterable[int], since: float) -> set[str]:
    """Top-level /dev/shm entries mapped or opened by ``pids`` and created at or after
    ``since`` (epoch seconds): what a SIGKILLed server would leave behind."""
    found: set[str] = set()
    for pid in pids:
        paths: list[str] = []
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/maps") as fh:
                paths += [ln.split(None, 5)[5].strip() for ln in fh if len(ln.split(None, 5)) == 6]
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    paths.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        for path in paths:
            path = path.removesuffix(" (deleted)")
            if path.startswith(SHM_ROOT + "/"):
                top = os.path.join(SHM_ROOT, path[len(SHM_ROOT) + 1:].split("/", 1)[0])
                with contextlib.suppress(OSError):
                    if os.lstat(top).st_ctime >= since - 1.0:
                        found.add(top)
    return found


def remove_paths(paths: Iterable[str]) -> list[str]:
    """Remove files/directories that still exist; return those removed."""
    import shutil

    removed = []
    for path in sorted(paths):
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if not os.path.lexists(path):
            removed.append(path)
    return removed
