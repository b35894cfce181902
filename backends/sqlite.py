"""``sqlite``: one SQLite database in WAL mode, a connection per worker.

Options (keyword-only; ``--opt k=v`` strings are coerced by the registry):

``path`` (str, default: none)
    The database file. Without it, ``prepare()`` creates a private directory
    (0700) under /dev/shm holding ``state.db`` and ``destroy()`` removes it. A
    file the user names is created (0600, its directory 0700 if missing) and
    kept by ``destroy()``, which only empties the table.
``busy_timeout_ms`` (int, default 5000)
    How long a writer waits for the database lock before the call fails with
    StoreUnavailable (the server answers 503).
``fsync`` (bool)
    ``PRAGMA synchronous = FULL`` when true (WAL fsynced at every commit),
    ``OFF`` when false.
``eatmydata``
    Recorded only (the launcher sets LD_PRELOAD).

Table ``kv(k BLOB PRIMARY KEY, v BLOB, deadline REAL)`` WITHOUT ROWID;
``deadline`` is wall-clock seconds (the file outlives processes), 0 = never.
``prepare()`` creates the schema and switches the file to WAL (persistent).
``connect()`` opens the worker's own connection after fork (SQLite forbids
carrying one across fork; an inherited one is abandoned, never used or
closed). ``add`` is a single ``INSERT ... ON CONFLICT DO UPDATE ... WHERE the
old row expired`` statement, so it is atomic and honours expiry; ``update``
runs in ``BEGIN IMMEDIATE`` so the read-modify-write holds the write lock
from the start.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from typing import Any, Callable, Optional

from backends.base import ConfigError, Store, StoreUnavailable, UpdateFn

_SCHEMA = ("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL, "
           "deadline REAL NOT NULL) WITHOUT ROWID")
_GET = "SELECT v, deadline FROM kv WHERE k = ?"
_ADD = ("INSERT INTO kv (k, v, deadline) VALUES (?1, ?2, ?3) ON CONFLICT (k) DO UPDATE "
        "SET v = excluded.v, deadline = excluded.deadline "
        "WHERE kv.deadline != 0 AND kv.deadline <= ?4")
_PUT = "INSERT OR REPLACE INTO kv (k, v, deadline) VALUES (?, ?, ?)"
_DELETE = "DELETE FROM kv WHERE k = ? RETURNING deadline"
_COUNT = "SELECT count(*) FROM kv WHERE deadline = 0 OR deadline > ?"
_SWEEP = "DELETE FROM kv WHERE deadline != 0 AND deadline <= ?"


def _live(deadline: float, now: float) -> bool:
    return not deadline or deadline > now


class SqliteStore(Store):
    name = "sqlite"

    def __init__(self, *, path: Optional[str] = None, busy_timeout_ms: int = 5000,
                 fsync: bool = False, eatmydata: bool = False) -> None:
        super().__init__(fsync=fsync, eatmydata=eatmydata)
        if busy_timeout_ms < 0:
            raise ConfigError(f"backend 'sqlite' option 'busy_timeout_ms': {busy_timeout_ms}; "
                              "allowed: an integer >= 0")
        if path is not None and os.path.isdir(path):
            raise ConfigError(f"backend 'sqlite' option 'path': {path!r} is a directory; "
                              "allowed: a database file path")
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._dir: Optional[str] = None
        self._db: Optional[sqlite3.Connection] = None
        self._pid = 0
        self._abandoned: list[sqlite3.Connection] = []   # inherited through fork: never touched

    # ---- lifecycle -------------------------------------------------------
    def prepare(self) -> None:
        if self.path is None:
            self._dir = tempfile.mkdtemp(prefix="sipstate-sqlite-", dir=_shm_dir())   # 0700
            self.path = os.path.join(self._dir, "state.db")
        else:
            _make_parent(self.path)
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
        db = self._open()
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ConfigError(f"backend 'sqlite' option 'path': {self.path!r} cannot use WAL (got {mode})")
            db.execute(_SCHEMA)
        finally:
            db.close()

    def connect(self) -> None:
        if self.path is None:
            raise StoreUnavailable("sqlite: connect() before prepare(): no database")
        if self._db is not None and self._pid == os.getpid():
            return
        if self._db is not None:
            self._abandoned.append(self._db)   # closing it here could disturb the parent's locks
        self._db = self._open()
        self._pid = os.getpid()

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000,
                                 isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            db.execute(f"PRAGMA synchronous = {'FULL' if self.fsync else 'OFF'}")
            return db
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: cannot open {self.path!r}: {exc}") from exc

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        elif self._db is not None:
            self._abandoned.append(self._db)
        self._db = None

    def destroy(self) -> None:
        self.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        elif self.path and os.path.exists(self.path):
            db = self._open()
            try:
                db.execute("DELETE FROM kv")
            except sqlite3.Error:
                pass
            finally:
                db.close()

    # ---- operations --------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            raise StoreUnavailable("sqlite: not connected in this process; call connect() after fork")
        return self._db

    def get(self, key: bytes) -> Optional[bytes]:
        row = self._run(lambda db: db.execute(_GET, (key,)).fetchone())
        return row[0] if row is not None and _live(row[1], time.time()) else None

    def add(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> bool:
        now = time.time()
        cur = self._run(lambda db: db.execute(_ADD, (key, value, _deadline(ttl, now), now)))
        return cur.rowcount == 1

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        self._run(lambda db: db.execute(_PUT, (key, value, _deadline(ttl, time.time()))))

    def update(self, key: bytes, fn: UpdateFn, ttl: Optional[float] = None) -> Optional[bytes]:
        def body(db: sqlite3.Connection) -> Optional[bytes]:
            db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                row = db.execute(_GET, (key,)).fetchone()
                new = fn(row[0] if row is not None and _live(row[1], now) else None)
                if new is None:
                    db.execute("DELETE FROM kv WHERE k = ?", (key,))
                else:
                    db.execute(_PUT, (key, new, _deadline(ttl, now)))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return new
        return self._run(body)

    def delete(self, key: bytes) -> bool:
        def body(db: sqlite3.Connection) -> bool:
            rows = db.execute(_DELETE, (key,)).fetchall()
            return bool(rows) and _live(rows[0][0], time.time())
        return self._run(body)

    def count(self) -> int:
        return self._run(lambda db: db.execute(_COUNT, (time.time(),)).fetchone()[0])

    def sweep(self) -> int:
        """Delete expired rows; returns how many."""
        return self._run(lambda db: db.execute(_SWEEP, (time.time(),)).rowcount)

    def _run(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        try:
            return body(self.db)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    # ---- introspection ------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": self.path, "busy_timeout_ms": self.busy_timeout_ms,
                "synchronous": "FULL" if self.fsync else "OFF", "journal_mode": "wal",
                "sqlite_version": sqlite3.sqlite_version}

    def data_paths(self) -> list[str]:
        return [os.path.dirname(self.path)] if self.path else []


def _deadline(ttl: Optional[float], now: float) -> float:
    return now + ttl if ttl else 0.0


def _make_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"backend 'sqlite' option 'path': cannot create {parent!r}: {exc.strerror}") from None


def _shm_dir() -> Optional[str]:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None
