"""Process helpers for the server tests: worker pids, RSS, polling."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import psutil

T = TypeVar("T")


def worker_pids(master_pid: int) -> set[int]:
    """PIDs of the master's live child processes (its workers)."""
    try:
        children = psutil.Process(master_pid).children()
    except psutil.NoSuchProcess:
        return set()
    return {c.pid for c in children if _alive(c)}


def _alive(proc: psutil.Process) -> bool:
    """Not a zombie; a child reaped between listing and asking is not alive either."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def rss_kb(pid: int) -> int:
    """Resident set size from /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll until ``predicate()`` is truthy; its value, or the last falsy value at timeout."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def wait_workers(master_pid: int, count: int, timeout: float = 10.0) -> set[int]:
    """Wait until the master has exactly ``count`` workers; their pids."""
    pids: set[int] = set()

    def settled() -> bool:
        nonlocal pids
        pids = worker_pids(master_pid)
        return len(pids) == count

    wait_for(settled, timeout)
    return pids
