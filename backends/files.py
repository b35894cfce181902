"""``files``: one file per key in a private directory; the kernel's page cache is the sharing.

Options (keyword-only; ``--opt k=v`` strings are coerced by the registry):

``path`` (str, default: none)
    Directory holding the records. Without it, ``prepare()`` creates a private
    directory (0700) under /dev/shm and ``destroy()`` removes it. Any directory
    may be named (a real disk makes ``fsync`` meaningful); it is created 0700
    if missing, must not be accessible by group or others if it exists, and is
    never removed by ``destroy()`` (only its records are).
``stripes`` (int, default 64)
    Lock files; a record's writers serialise on ``crc32(file name) % stripes``.
``fsync`` (bool)
    fsync the new file before the rename and the directory after every
    rename/unlink, so a record survives power loss once a call returns.
``eatmydata``
    Recorded only (the launcher sets LD_PRELOAD).

Record file: an 8-byte little-endian float deadline (wall-clock seconds, 0 =
never; wall clock because files can outlive a reboot) followed by the value.
File names: ``k`` + urlsafe base64 of the key (no padding) for keys up to 180
bytes, else ``h`` + sha256 hex of the key; so any binary key is a safe name.

Atomicity. A write goes to a temporary file (O_CREAT|O_EXCL|O_NOFOLLOW, 0600)
that ``os.replace`` renames over the record, so a reader opens either the old
or the new file, never a torn one, even if the writer is SIGKILLed mid-write
(its temporary file is left behind and swept by the next ``prepare()``,
counted in ``stats()['orphans_swept']``). ``add``, ``put``, ``update`` and
``delete`` hold the key's stripe lock: ``flock`` on a lock file opened after
fork in ``connect()`` (an flock lock belongs to the open file description, so
a descriptor inherited across fork would be shared with the parent). The
kernel releases it when the holder dies. ``get`` takes no lock. Records are
opened with O_NOFOLLOW so a planted symlink is never followed.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import itertools
import os
import shutil
import struct
import tempfile
import time
import zlib
from typing import Optional

from backends.base import ConfigError, Store, StoreUnavailable, UpdateFn

_DEADLINE = struct.Struct("<d")
_HDR = _DEADLINE.size
_TMP = ".tmp-"
_LOCKS = ".locks"
_READ_CHUNK = 1 << 16
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def filename(key: bytes) -> str:
    """A safe file name for any binary key (see the module docstring)."""
    if len(key) <= 180:
        return "k" + base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")
    return "h" + hashlib.sha256(key).hexdigest()


class FilesStore(Store):
    name = "files"

    def __init__(self, *, path: Optional[str] = None, stripes: int = 64,
                 fsync: bool = False, eatmydata: bool = False) -> None:
        super().__init__(fsync=fsync, eatmydata=eatmydata)
        if not 1 <= stripes <= 4096:
            raise ConfigError(f"backend 'files' option 'stripes': {stripes}; allowed: an integer in 1..4096")
        if path is not None and os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"backend 'files' option 'path': {path!r} is not a directory; "
                              "allowed: a directory (created 0700 if missing)")
        self.path = path
        self.stripes = stripes
        self._owns_dir = False
        self._locks: list[int] = []
        self._dirfd = -1
        self._pid = 0
        self._seq = itertools.count()
        self._orphans_swept = 0

    # ---- lifecycle -------------------------------------------------------
    def prepare(self) -> None:
        if self.path is None:
            self.path = tempfile.mkdtemp(prefix="sipstate-files-", dir=_shm_dir())   # 0700
            self._owns_dir = True
        else:
            _make_private_dir(self.path)
        locks = os.path.join(self.path, _LOCKS)
        os.makedirs(locks, mode=0o700, exist_ok=True)
        for i in range(self.stripes):
            os.close(os.open(os.path.join(locks, str(i)), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600))
        self._orphans_swept += self._sweep_orphans()

    def connect(self) -> None:
        if self.path is None:
            raise StoreUnavailable("files: connect() before prepare(): no directory")
        if self._pid == os.getpid() and self._locks:
            return
        self.close()   # descriptors inherited through fork would share flock locks with the parent
        locks = os.path.join(self.path, _LOCKS)
        self._locks = [os.open(os.path.join(locks, str(i)), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                       for i in range(self.stripes)]
        self._dirfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._pid = os.getpid()

    def close(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self._locks = []
        if self._dirfd >= 0:
            os.close(self._dirfd)
        self._dirfd = -1

    def destroy(self) -> None:
        self.close()
        if not self.path:
            return
        if self._owns_dir:
            shutil.rmtree(self.path, ignore_errors=True)
            self._owns_dir = False
            return
        for name in os.listdir(self.path):
            if name[0] in "kh" or name.startswith(_TMP):
                _unlink(os.path.join(self.path, name))
        shutil.rmtree(os.path.join(self.path, _LOCKS), ignore_errors=True)

    def _sweep_orphans(self) -> int:
        """Remove temporary files left by writers that died mid-write (before any worker runs)."""
        n = 0
        for name in os.listdir(self.path):
            if name.startswith(_TMP) and _unlink(os.path.join(self.path, name)):
                n += 1
        return n

    # ---- file primitives -----------------------------------------------------
    def _file(self, key: bytes) -> tuple[str, str]:
        name = filename(key)
        return name, os.path.join(self.path, name)  # type: ignore[arg-type]

    def _read(self, path: str, now: Optional[float] = None) -> Optional[bytes]:
        """The live value in ``path``, or None if absent or expired."""
        try:
            fd = os.open(path, _O_READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"files: cannot open {path}: {exc.strerror}") from exc
        try:
            raw = _read_all(fd)
        finally:
            os.close(fd)
        if len(raw) < _HDR:
            raise StoreUnavailable(f"files: {path} is not a record ({len(raw)} bytes, no header)")
        deadline = _DEADLINE.unpack_from(raw)[0]
        if deadline and deadline <= (now if now is not None else time.time()):
            return None
        return raw[_HDR:]

    def _write(self, path: str, value: bytes, ttl: Optional[float]) -> None:
        deadline = time.time() + ttl if ttl else 0.0
        tmp = os.path.join(self.path, f"{_TMP}{os.getpid()}-{next(self._seq)}")  # type: ignore[arg-type]
        try:
            fd = os.open(tmp, _O_NEW, 0o600)
            try:
                _write_all(fd, _DEADLINE.pack(deadline) + value)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            raise StoreUnavailable(f"files: cannot write {path}: {exc.strerror}") from exc
        self._sync_dir()

    def _remove(self, path: str) -> None:
        if _unlink(path):
            self._sync_dir()

    def _sync_dir(self) -> None:
        if self.fsync:
            os.fsync(self._dirfd)

    # ---- locking ----------------------------------------------------------------
    def _lock(self, name: str) -> int:
        """Take the stripe lock of record file ``name`` (striped by name, so sweep() can lock too)."""
        if self._pid != os.getpid() or not self._locks:
            raise StoreUnavailable("files: not connected in this process; call connect() after fork")
        fd = self._locks[zlib.crc32(name.encode()) % self.stripes]
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    # ---- operations -------------------------------------------------------------
    def get(self, key: bytes) -> Optional[bytes]:
        return self._read(self._file(key)[1])

    def add(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> bool:
        name, path = self._file(key)
        fd = self._lock(name)
        try:
            if self._read(path) is not None:
                return False
            self._write(path, value, ttl)
            return True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        # Locked too: an unlocked put racing an update would be silently undone by it.
        name, path = self._file(key)
        fd = self._lock(name)
        try:
            self._write(path, value, ttl)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def update(self, key: bytes, fn: UpdateFn, ttl: Optional[float] = None) -> Optional[bytes]:
        name, path = self._file(key)
        fd = self._lock(name)
        try:
            old = self._read(path)
            new = fn(old)
            if new is None:
                self._remove(path)
            else:
                self._write(path, new, ttl)
            return new
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def delete(self, key: bytes) -> bool:
        name, path = self._file(key)
        fd = self._lock(name)
        try:
            existed = self._read(path) is not None
            self._remove(path)
            return existed
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def count(self) -> int:
        now = time.time()
        return sum(1 for name in os.listdir(self.path) if name[0] in "kh"
                   and self._read(os.path.join(self.path, name), now) is not None)  # type: ignore[arg-type]

    def sweep(self) -> int:
        """Remove expired records, each under its stripe lock; returns how many."""
        now, n = time.time(), 0
        for name in os.listdir(self.path):  # type: ignore[arg-type]
            if name[0] not in "kh":
                continue
            path = os.path.join(self.path, name)  # type: ignore[arg-type]
            fd = self._lock(name)
            try:
                if os.path.lexists(path) and self._read(path, now) is None:
                    self._remove(path)
                    n += 1
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return n

    # ---- introspection ---------------------------------------------------------
    def stats(self) -> dict[str, int]:
        return {"orphans_swept": self._orphans_swept}

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "path": self.path, "stripes": self.stripes}

    def data_paths(self) -> list[str]:
        return [self.path] if self.path else []


def _read_all(fd: int) -> bytes:
    chunks = [os.read(fd, _READ_CHUNK)]
    while len(chunks[-1]) == _READ_CHUNK:
        chunks.append(os.read(fd, _READ_CHUNK))
    return b"".join(chunks) if len(chunks) > 1 else chunks[0]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _make_private_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"backend 'files' option 'path': cannot create {path!r}: {exc.strerror}") from None
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"backend 'files' option 'path': {path!r} has mode {mode:o}; allowed: a directory "
                          "not accessible by group or others (chmod 700)")


def _shm_dir() -> Optional[str]:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None
