"""The environment a results folder was measured in: what ``manifest.json`` records.

Everything here is read-only inspection of the machine (``/proc``, ``git``,
``--version`` of the server programs); nothing raises on a missing tool -- an
absent program or file is recorded as None so a manifest can always be written.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional

PACKAGES = ("sipstate", "pyyaml", "pydantic", "hdrhistogram", "psutil", "rich", "lmdb", "redis",
            "hiredis", "pymemcache", "UltraDict", "uvloop", "pandas", "pyarrow")
SERVER_VERSION_COMMANDS = {
    "redis": ["redis-server", "--version"],
    "memcached": ["memcached", "-V"],
    "sipp": ["sipp", "-v"],
}


def now_iso(when: Optional[float] = None) -> str:
    """UTC time as ISO 8601 with a Z, seconds precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when if when is not None else time.time()))


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, Optional[str]]:
    """Installed distribution versions (None when absent)."""
    out: dict[str, Optional[str]] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _first_line(cmd: list[str]) -> Optional[str]:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or "") + (proc.stderr or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else None


def server_versions() -> dict[str, Optional[str]]:
    """First line of ``redis-server --version``, ``memcached -V``, ``sipp -v`` (None if absent)."""
    return {name: _first_line(cmd) for name, cmd in SERVER_VERSION_COMMANDS.items()}


def git_commit(repo: Path) -> dict[str, Any]:
    """HEAD of the checkout at ``repo`` and whether the tree has local changes."""
    def git(*args: str) -> Optional[str]:
        try:
            proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=10, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def host_info() -> dict[str, Any]:
    """CPU model, core counts, kernel, memory of this machine."""
    model = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                  if ln.lower().startswith("model name")), platform.processor() or None)
    mem_kb = next((int(ln.split()[1]) for ln in _read("/proc/meminfo").splitlines()
                   if ln.startswith("MemTotal:")), None)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "hostname": platform.node(),
        "cpu_model": model,
        "cpu_cores": os.cpu_count(),
        "cpu_usable": usable,
        "kernel": platform.release(),
        "os": platform.platform(),
        "memory_mb": round(mem_kb / 1024) if mem_kb else None,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, device) from /proc/mounts, octal escapes decoded."""
    out = []
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3:
            point = parts[1].encode().decode("unicode_escape")
            out.append((point, parts[2], parts[0]))
    return out


def filesystem_of(path: str | Path) -> dict[str, Any]:
    """Mount point, filesystem type and device holding ``path`` (its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    real = os.path.realpath(p)
    best = ("", None, None)
    for point, fstype, device in _mounts():
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype, device)  # the last, longest match wins (overmounts)
    if not best[0]:
        return {"path": str(path), "mount_point": None, "fstype": _stat_fstype(real), "device": None}
    return {"path": str(path), "mount_point": best[0], "fstype": best[1], "device": best[2]}


def _stat_fstype(path: str) -> Optional[str]:
    """Fallback when /proc/mounts is unreadable: ``stat -f -c %T``."""
    try:
        proc = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None


def python_info() -> dict[str, Any]:
    return {"version": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable}


def environment(repo: Path) -> dict[str, Any]:
    """Everything about the machine and software, for the top of manifest.json."""
    versions = package_versions()
    return {
        "sipstate_version": versions.get("sipstate"),
        "git": git_commit(repo),
        "python": python_info(),
        "packages": versions,
        "servers": server_versions(),
        "host": host_info(),
    }
