"""eatmydata: turn fsync and friends into no-ops for chosen processes, and prove it.

``eatmydata: true`` in a scenario means libeatmydata.so is LD_PRELOADed into the
processes that call fsync (the server workers, redis-server, bench-store). The
library replaces fsync, fdatasync, msync(MS_SYNC), sync, sync_file_range and
O_SYNC/O_DSYNC opens with no-ops, so a backend configured to be durable keeps
its code path but loses the cost (and the guarantee) of reaching the disk.

Contracts:

* :func:`find_libeatmydata` returns the absolute path of the library or raises
  :class:`harness.errors.MissingBinary` naming the apt package.
* :func:`env_with_eatmydata` returns a *new* environment mapping with the
  library appended to LD_PRELOAD (existing preloads are kept, in order).
* :func:`preload_verified` tells whether the library is mapped into a running
  process (``/proc/PID/maps``): the only proof that the preload took effect,
  since a setuid program or a statically linked one ignores LD_PRELOAD.
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
from pathlib import Path
from typing import Mapping, Optional

from harness.errors import MissingBinary

LIBRARY = "libeatmydata.so"
APT_PACKAGE = "libeatmydata1"
# Debian/Ubuntu multiarch paths first, then the traditional ones.
_KNOWN_GLOBS = (
    "/usr/lib/*-linux-gnu/libeatmydata.so*",
    "/lib/*-linux-gnu/libeatmydata.so*",
    "/usr/lib64/libeatmydata.so*",
    "/usr/lib/libeatmydata.so*",
    "/usr/local/lib/libeatmydata.so*",
)


def _from_ldconfig() -> list[str]:
    """Paths ldconfig's cache knows for libeatmydata (empty if ldconfig is absent)."""
    for ldconfig in ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        try:
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10,
                                 stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        return re.findall(r"libeatmydata\.so\S*\s.*=>\s*(\S+)", out)
    return []


def find_libeatmydata() -> str:
    """Absolute path of libeatmydata.so on this system; MissingBinary if it is not installed.

    The unversioned ``libeatmydata.so`` is preferred, then the highest ``.so.N``.
    """
    candidates = _from_ldconfig()
    for pattern in _KNOWN_GLOBS:
        candidates += sorted(glob.glob(pattern))
    existing = [c for c in candidates if os.path.isfile(c)]
    if not existing:
        raise MissingBinary(LIBRARY, APT_PACKAGE)
    existing.sort(key=lambda p: (not p.endswith(".so"), -len(p)))
    return str(Path(existing[0]).resolve())


def env_with_eatmydata(env: Mapping[str, str], library: Optional[str] = None) -> dict[str, str]:
    """A copy of ``env`` whose LD_PRELOAD also loads libeatmydata (found if not given)."""
    lib = library or find_libeatmydata()
    out = dict(env)
    current = [p for p in re.split(r"[:\s]+", out.get("LD_PRELOAD", "")) if p]
    if lib not in current:
        current.append(lib)
    out["LD_PRELOAD"] = ":".join(current)
    return out


def preload_verified(pid: int) -> bool:
    """True if libeatmydata is mapped into process ``pid`` (False if absent or the pid is gone)."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as fh:
            return any(b"libeatmydata" in line for line in fh)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def describe(pid: Optional[int], requested: bool) -> dict[str, object]:
    """What the manifest records about one process: asked for eatmydata, and did it load."""
    return {"eatmydata": requested,
            "eatmydata_verified": bool(pid) and preload_verified(int(pid)) if requested else False}
