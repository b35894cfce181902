"""``lmdb``: one LMDB environment shared by every worker through the page cache.

Options (all keyword-only; strings from ``--opt k=v`` are coerced by the registry):

``path`` (str, default: none)
    Directory of the LMDB environment. Without it, ``prepare()`` creates a
    private directory (mode 0700) under /dev/shm and ``destroy()`` removes it.
    A directory the user names is created 0700 if missing and never removed.
``sync`` (bool, default: follows ``fsync``)
    LMDB's ``sync`` and ``metasync`` flags: fsync of the data file at every
    commit. ``fsync=true`` turns it on; an explicit ``sync`` overrides.
``map_size`` (int bytes, default 1 GiB)
    Maximum size of the database; a write beyond it raises StoreFull.
``writemap`` (bool, default false)
    Write through a writable memory map instead of write(2).
``max_readers`` (int, default 256)
    Reader lock-table slots (one per process/thread with an open read txn).

How the contract is met:

* The environment is opened in each worker by ``connect()`` after fork; LMDB
  forbids using an environment across fork. ``prepare()`` creates the files in
  the parent and closes them again before the workers exist; a handle a child
  inherited anyway (parent connected before forking) is closed, never used.
* A worker killed inside a read transaction leaves its pid in the reader lock
  table, which would pin old pages forever; ``prepare()`` and ``connect()``
  call ``reader_check()`` to clear such stale readers (counted in ``stats()``).
  A writer killed mid-transaction is handled by LMDB's robust mutex.
* Expiry lives in the value: an 8-byte little-endian float deadline in
  wall-clock seconds (0 = never) precedes the payload. Wall clock, because the
  deadline is shared by processes and can outlive a reboot on a real disk.
  Expired records count as absent and are overwritten by ``add``/``put``.
* ``add`` and ``update`` are one write transaction each: LMDB has one writer at
  a time, so read-check-write inside it is atomic across processes.
* ``eatmydata`` is only recorded; the launcher sets LD_PRELOAD.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
from typing import Any, Optional

import lmdb

from backends.base import ConfigError, Store, StoreFull, StoreUnavailable, UpdateFn

_DEADLINE = struct.Struct("<d")
_HDR = _DEADLINE.size
_MIN_MAP = 1 << 20


def encode(value: bytes, ttl: Optional[float]) -> bytes:
    """Deadline header + payload. ``ttl`` None or 0 means no expiry."""
    deadline = time.time() + ttl if ttl else 0.0
    return _DEADLINE.pack(deadline) + value


def decode(raw: Optional[bytes], now: Optional[float] = None) -> Optional[bytes]:
    """Payload of a stored record, or None if absent or expired."""
    if raw is None:
        return None
    deadline = _DEADLINE.unpack_from(raw)[0]
    if deadline and deadline <= (now if now is not None else time.time()):
        return None
    return raw[_HDR:]


class LmdbStore(Store):
    name = "lmdb"
    extra = "lmdb"

    def __init__(self, *, path: Optional[str] = None, sync: Optional[bool] = None,
                 map_size: int = 1 << 30, writemap: bool = False, max_readers: int = 256,
                 fsync: bool = False, eatmydata: bool = False) -> None:
        super().__init__(fsync=fsync, eatmydata=eatmydata)
        if map_size < _MIN_MAP:
            raise ConfigError(f"backend 'lmdb' option 'map_size': {map_size} is too small; "
                              f"allowed: an integer >= {_MIN_MAP} bytes")
        if max_readers < 1:
            raise ConfigError(f"backend 'lmdb' option 'max_readers': {max_readers}; allowed: an integer >= 1")
        if path is not None and os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"backend 'lmdb' option 'path': {path!r} is not a directory; "
                              "allowed: a directory (created if missing)")
        self.path = path
        self.sync = self.fsync if sync is None else bool(sync)
        self.map_size = map_size
        self.writemap = bool(writemap)
        self.max_readers = max_readers
        self._owns_dir = False
        self._env: Optional[lmdb.Environment] = None
        self._pid = 0
        self._stale_cleared = 0

    # ---- lifecycle -------------------------------------------------------
    def prepare(self) -> None:
        if self.path is None:
            self.path = tempfile.mkdtemp(prefix="sipstate-lmdb-", dir=_shm_dir())  # 0700
            self._owns_dir = True
        else:
            try:
                os.makedirs(self.path, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"backend 'lmdb' option 'path': cannot create {self.path!r}: "
                                  f"{exc.strerror}") from None
        env = self._open()
        try:
            self._stale_cleared += env.reader_check()
        finally:
            env.close()

    def connect(self) -> None:
        if self.path is None:
            raise StoreUnavailable("lmdb: connect() before prepare(): no environment path")
        if self._env is not None and self._pid != os.getpid():
            # Inherited through fork: never used here. Closing it in the child
            # is safe (it clears only this pid's reader slots, and the child
            # holds none of the parent's fcntl locks) and drops py-lmdb's
            # "already open in this process" guard for these files.
            self._env.close()
            self._env = None
        if self._env is None:
            self._env = self._open()
            self._pid = os.getpid()
        self._stale_cleared += self._env.reader_check()

    def close(self) -> None:
        if self._env is not None:
            self._env.close()   # also safe for a handle inherited through fork (see connect)
        self._env = None

    def destroy(self) -> None:
        self.close()
        if self._owns_dir and self.path:
            shutil.rmtree(self.path, ignore_errors=True)
            self._owns_dir = False

    def _open(self) -> lmdb.Environment:
        try:
            return lmdb.open(self.path, map_size=self.map_size, sync=self.sync, metasync=self.sync,
                             writemap=self.writemap, max_readers=self.max_readers, max_dbs=0,
                             readahead=False, mode=0o600, subdir=True, create=True)
        except lmdb.Error as exc:
            raise StoreUnavailable(f"lmdb: cannot open environment {self.path!r}: {exc}") from exc

    # ---- operations --------------------------------------------------------
    @property
    def env(self) -> lmdb.Environment:
        if self._env is None or self._pid != os.getpid():
            raise StoreUnavailable("lmdb: not connected in this process; call connect() after fork")
        return self._env

    def get(self, key: bytes) -> Optional[bytes]:
        try:
            with self.env.begin() as txn:
                return decode(txn.get(key))
        except lmdb.BadValsizeError as exc:
            raise _bad_key(key, exc) from exc
        except lmdb.Error as exc:
            raise StoreUnavailable(f"lmdb get: {exc}") from exc

    def add(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> bool:
        def write(txn: lmdb.Transaction) -> bool:
            if decode(txn.get(key)) is not None:
                return False
            txn.put(key, encode(value, ttl))
            return True
        return self._write(key, write)

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        self._write(key, lambda txn: txn.put(key, encode(value, ttl)))

    def update(self, key: bytes, fn: UpdateFn, ttl: Optional[float] = None) -> Optional[bytes]:
        def write(txn: lmdb.Transaction) -> Optional[bytes]:
            new = fn(decode(txn.get(key)))
            if new is None:
                txn.delete(key)
            else:
                txn.put(key, encode(new, ttl))
            return new
        return self._write(key, write)

    def delete(self, key: bytes) -> bool:
        return self._write(key, lambda txn: decode(txn.pop(key)) is not None)

    def count(self) -> int:
        now = time.time()
        with self.env.begin() as txn:
            return sum(1 for raw in txn.cursor().iternext(keys=False, values=True)
                       if decode(raw, now) is not None)

    def sweep(self) -> int:
        """Delete expired records; returns how many were removed."""
        now = time.time()
        with self.env.begin(write=True) as txn:
            dead = [k for k, raw in txn.cursor() if decode(raw, now) is None]
            for k in dead:
                txn.delete(k)
        return len(dead)

    def _write(self, key: bytes, body: Any) -> Any:
        """Run ``body(txn)`` in one write transaction (committed unless it raises)."""
        try:
            with self.env.begin(write=True) as txn:
                return body(txn)
        except lmdb.MapFullError as exc:
            raise StoreFull(f"lmdb: map_size {self.map_size} bytes is full; raise option 'map_size'") from exc
        except lmdb.BadValsizeError as exc:
            raise _bad_key(key, exc) from exc
        except lmdb.Error as exc:
            raise StoreUnavailable(f"lmdb write: {exc}") from exc

    # ---- introspection ------------------------------------------------------
    def stats(self) -> dict[str, int]:
        out = {"stale_readers_cleared": self._stale_cleared}
        if self._env is not None and self._pid == os.getpid():
            out["entries"] = self._env.stat()["entries"]
            out["readers"] = self._env.info()["num_readers"]
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": self.path, "sync": self.sync,
                "map_size": self.map_size, "writemap": self.writemap,
                "max_readers": self.max_readers, "lmdb_version": ".".join(map(str, lmdb.version()))}

    def data_paths(self) -> list[str]:
        return [self.path] if self.path else []


def _shm_dir() -> Optional[str]:
    """/dev/shm when it exists (RAM, like the other in-memory backends), else the temp dir."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


def _bad_key(key: bytes, exc: Exception) -> StoreFull:
    return StoreFull(f"lmdb: key of {len(key)} bytes rejected ({exc}); keys must be 1..511 bytes")
