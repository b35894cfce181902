"""``ultradict``: UltraDict (PyPI) with its default settings, as a peer baseline.

UltraDict keeps a full copy of the dict in every process and shares changes
through an append-only stream in shared memory (plus full dumps when the stream
buffer fills). It is here because it is what people find when they search for
"shared dict between processes"; it runs through the same contract,
concurrency and benchmark tests as our own backends, and its failures are
reported, not hidden.

Options:

``shared_lock`` (bool, default false: UltraDict's default)
    False: every UltraDict instance gets its own ``multiprocessing.RLock``. A
    process that attaches by name therefore has a lock that excludes nobody
    else, so read-modify-write across processes is *not* atomic (measured by
    tests/backends/test_concurrency.py). True: UltraDict's shared spin lock in
    the segment (needs the ``atomics`` package).
``buffer_size`` (int bytes, default 10000: UltraDict's default)
    Size of the update stream; when it fills, the writer dumps the whole dict.

How the contract is mapped:

* ``prepare()`` creates the dict under a unique name (``sipstate_<pid>_<hex>``)
  and keeps the creating instance until ``destroy()``, which unlinks its
  shared memory. ``connect()`` attaches by name in each worker, as separate
  processes using UltraDict do.
* A record is ``(deadline, value)``; deadline 0.0 means no expiry, else a
  wall-clock time shared by all processes. Expired records count as absent.
* ``add``, ``update`` and ``delete`` run their check and write under
  ``dict.lock`` -- whatever that lock excludes with the chosen settings.
* Errors raised by UltraDict (a corrupt stream, a full buffer) become
  StoreUnavailable naming the UltraDict exception.
* Importing UltraDict patches multiprocessing's resource tracker to ignore
  shared memory (its own workaround for bpo-38119); it happens only when this
  backend is chosen.
"""
from __future__ import annotations

import os
import secrets
import time
from typing import Any, Optional

from backends.base import ConfigError, MissingDependency, Store, StoreUnavailable, UpdateFn

try:
    from UltraDict import UltraDict
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("backend 'ultradict' needs UltraDict; install it with: "
                            "pip install 'sipstate[ultradict]'") from exc

Record = tuple[float, bytes]


def _live(record: Optional[Record], now: Optional[float] = None) -> Optional[bytes]:
    if record is None:
        return None
    deadline, value = record
    if deadline and deadline <= (now or time.time()):
        return None
    return value


def _record(value: bytes, ttl: Optional[float]) -> Record:
    return (time.time() + ttl if ttl else 0.0, bytes(value))


class UltraDictStore(Store):
    name = "ultradict"
    extra = "ultradict"

    def __init__(self, *, shared_lock: bool = False, buffer_size: int = 10_000,
                 fsync: bool = False, eatmydata: bool = False) -> None:
        super().__init__(fsync=fsync, eatmydata=eatmydata)
        if not 1024 <= buffer_size < 2 ** 32:
            raise ConfigError(f"backend 'ultradict' option 'buffer_size': {buffer_size!r}; "
                              "allowed: 1024 .. 4294967295 bytes")
        self.shared_lock = bool(shared_lock)
        self.buffer_size = int(buffer_size)
        self.segment_name: Optional[str] = None
        self._owner: Optional[Any] = None
        self._d: Optional[Any] = None

    # ---- lifecycle --------------------------------------------------------------
    def prepare(self) -> None:
        self.segment_name = f"sipstate_{os.getpid()}_{secrets.token_hex(4)}"
        kwargs = {"shared_lock": True} if self.shared_lock else {}
        self._owner = UltraDict(name=self.segment_name, create=True, buffer_size=self.buffer_size, **kwargs)

    def connect(self) -> None:
        if self.segment_name is None:
            raise ConfigError("backend 'ultradict': connect() before prepare(); the parent prepares the dict")
        try:
            self._d = UltraDict(name=self.segment_name, create=False)
        except Exception as exc:
            raise StoreUnavailable(f"ultradict: cannot attach {self.segment_name!r}: {exc!r}") from exc

    def close(self) -> None:
        d, self._d = self._d, None
        if d is not None:
            d.close()

    def destroy(self) -> None:
        self.close()
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.close(unlink=True)

    def _dict(self) -> Any:
        if self._d is None:
            raise StoreUnavailable("backend 'ultradict': connect() was not called in this process")
        return self._d

    # ---- operations ------------------------------------------------------------------
    def get(self, key: bytes) -> Optional[bytes]:
        d = self._dict()
        try:
            return _live(d.get(key))
        except Exception as exc:
            raise _unavailable(exc) from exc

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        d = self._dict()
        try:
            d[key] = _record(value, ttl)
        except Exception as exc:
            raise _unavailable(exc) from exc

    def add(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> bool:
        d = self._dict()
        try:
            with d.lock:
                if _live(d.get(key)) is not None:
                    return False
                d[key] = _record(value, ttl)
                return True
        except Exception as exc:
            raise _unavailable(exc) from exc

    def update(self, key: bytes, fn: UpdateFn, ttl: Optional[float] = None) -> Optional[bytes]:
        d = self._dict()
        with d.lock:
            try:
                record = d.get(key)
            except Exception as exc:
                raise _unavailable(exc) from exc
            new = fn(_live(record))  # fn's own exception propagates unchanged
            try:
                if new is not None:
                    d[key] = _record(new, ttl)
                elif record is not None:
                    del d[key]
            except Exception as exc:
                raise _unavailable(exc) from exc
        return new

    def delete(self, key: bytes) -> bool:
        d = self._dict()
        try:
            with d.lock:
                record = d.get(key)
                if record is None:
                    return False
                del d[key]
                return _live(record) is not None
        except Exception as exc:
            raise _unavailable(exc) from exc

    def count(self) -> int:
        d = self._dict()
        try:
            now = time.time()
            return sum(1 for record in list(d.values()) if _live(record, now) is not None)
        except Exception as exc:
            raise _unavailable(exc) from exc

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shared_lock": self.shared_lock, "buffer_size": self.buffer_size,
                "segment_name": self.segment_name}

    def data_paths(self) -> list[str]:
        return [f"/dev/shm/{self.segment_name}"] if self.segment_name else []


def _unavailable(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"ultradict: {type(exc).__name__}: {exc}")
