"""``shm``: our own hash table in one POSIX shared-memory segment.

Options (keyword-only; ``--opt k=v`` strings are coerced by the registry):

``slots`` (int, default 65536)
    Number of fixed-size record slots; must be a multiple of ``stripes``.
``slot_size`` (int bytes, default 1024)
    Bytes per slot including a 32-byte header, so a record holds
    ``slot_size - 32`` bytes of key + value. A multiple of 8 in 64..16 MiB.
    A larger record raises StoreFull naming the limit.
``stripes`` (int, default 64)
    Lock stripes; the table is split into this many independent regions.
``fsync`` / ``eatmydata``
    Recorded only: shared memory is never written to disk, so there is no
    fsync to turn on or off.

Layout. ``prepare()`` (in the parent) creates the segment with
multiprocessing.shared_memory (mode 0600, checked and forced) and removes it
from the resource tracker's books, so the tracker never unlinks a segment that
workers still use; ``destroy()`` unlinks it. Workers inherit the mapping
through fork. The segment holds a 64-byte header, one repair counter per
stripe, then ``slots`` slots. A slot is::

    seq u32 | state u8 | pad | klen u16 | vlen u32 | deadline f64 | khash u32 | crc u32 | pad 4
    key bytes | value bytes

``state`` is FREE, USED or DEAD (a tombstone). ``khash`` is crc32(key) and
``crc`` is crc32(key + value). ``deadline`` is a CLOCK_MONOTONIC time (shared
by all processes of one boot, which is all a RAM segment lives for); 0 = never.

Hashing. Slot ``crc32(key) % slots`` is the key's home; its region (the
stripe) is ``home // (slots / stripes)``. Linear probing with tombstones wraps
inside the region, so one stripe lock covers every slot a key can touch.

Writers take the stripe's fcntl byte-range lock (``lockf`` on byte ``stripe``
of a lock file, 0600 in a private 0700 directory, opened after fork in
``connect()``). The kernel drops such a lock when its holder dies, SIGKILL
included. A multiprocessing.Lock (a POSIX semaphore) held by a process that is
SIGKILLed stays locked forever and would wedge every other worker; that is why
it is not used. POSIX record locks belong to the process, so one store must be
used by one thread (workers are single-threaded asyncio loops).

Readers take no lock (seqlock): a writer makes ``seq`` odd, writes the record,
then makes it even again. A reader accepts a record only if ``seq`` was even
and unchanged across its read and the CRC matches; otherwise it retries, and
after a few retries reads under the stripe lock. So a torn record is never
returned.

Repair. A writer SIGKILLed mid-write leaves its slot with an odd ``seq``. The
next process that holds that stripe's lock (the lock proves the writer is gone)
keeps the record if it is complete (its CRC matches) and tombstones it
otherwise, and counts the repair in the stripe's counter (``stats()['repairs']``).

Expiry is kept in the record. An expired record is absent to readers; writers
tombstone expired records they meet while probing, and ``sweep()`` clears all.

``torn_write_and_die()`` at the end is a test hook (used only by
tests/backends/test_crash.py): it writes half a record and SIGKILLs its caller.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import struct
import tempfile
import time
from multiprocessing import resource_tracker, shared_memory
from typing import Optional

from backends.base import ConfigError, Store, StoreFull, StoreUnavailable, UpdateFn

try:  # the call the stdlib's SharedMemory.unlink() makes, without its tracker bookkeeping
    from _posixshmem import shm_unlink as _shm_unlink
except ImportError:  # pragma: no cover - non-POSIX
    _shm_unlink = None

_crc32 = __import__("zlib").crc32
_monotonic = time.monotonic

FREE, USED, DEAD = 0, 1, 2
_SLOT = struct.Struct("<IBxHIdII4x")        # seq, state, klen, vlen, deadline, khash, crc
_BODY = struct.Struct("<BxHIdII")           # the same fields after seq
_SEQ = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SEG = struct.Struct("<8sIIII")             # magic, version, slots, slot_size, stripes
_MAGIC = b"SIPSTSHM"
_HDR = _SLOT.size                           # 32
_SPINS = 8                                  # lock-free read attempts before taking the lock
_RETRY = object()
_MAX_SLOT = 16 << 20


class ShmStore(Store):
    name = "shm"

    def __init__(self, *, slots: int = 65536, slot_size: int = 1024, stripes: int = 64,
                 fsync: bool = False, eatmydata: bool = False) -> None:
        super().__init__(fsync=fsync, eatmydata=eatmydata)
        _check_options(slots, slot_size, stripes)
        self.slots, self.slot_size, self.stripes = slots, slot_size, stripes
        self._region = slots // stripes
        self._counters = 64
        self._base = _align(64 + 8 * stripes, 64)
        self.size = self._base + slots * slot_size
        self._shm: Optional[shared_memory.SharedMemory] = None
        self._mv: Optional[memoryview] = None
        self._dir: Optional[str] = None
        self._fd = -1
        self._pid = 0
        self._locked_reads = 0

    # ---- lifecycle -------------------------------------------------------
    def prepare(self) -> None:
        self._shm = _create_segment(self.size)
        self._mv = self._shm.buf
        _SEG.pack_into(self._mv, 0, _MAGIC, 1, self.slots, self.slot_size, self.stripes)
        self._dir = tempfile.mkdtemp(prefix="sipstate-shm-", dir=_shm_dir())   # 0700
        fd = os.open(self._lock_path(), os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        os.close(fd)

    def connect(self) -> None:
        if self._mv is None or self._dir is None:
            raise StoreUnavailable("shm: connect() before prepare(): no segment")
        if self._fd >= 0 and self._pid == os.getpid():
            return
        if self._fd >= 0:
            os.close(self._fd)   # inherited; POSIX locks are per process, reopen for clarity
        self._fd = os.open(self._lock_path(), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._pid = os.getpid()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def destroy(self) -> None:
        self.close()
        if self._shm is not None:
            name = self._shm._name  # with the leading slash, as shm_open wants it
            self._mv = None
            self._shm.close()
            if _shm_unlink is not None:
                try:
                    _shm_unlink(name)
                except FileNotFoundError:
                    pass
            self._shm = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _lock_path(self) -> str:
        return os.path.join(self._dir or "", "stripes.lock")

    @property
    def segment_name(self) -> Optional[str]:
        return self._shm.name if self._shm is not None else None

    # ---- locking ----------------------------------------------------------
    def _lock(self, stripe: int) -> None:
        if self._fd < 0 or self._pid != os.getpid():
            raise StoreUnavailable("shm: not connected in this process; call connect() after fork")
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, stripe, 0)

    def _unlock(self, stripe: int) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, stripe, 0)

    # ---- lock-free read ----------------------------------------------------
    def get(self, key: bytes) -> Optional[bytes]:
        h = _crc32(key)
        for _ in range(_SPINS):
            value = self._read(key, h)
            if value is not _RETRY:
                return value  # type: ignore[return-value]
        return self._locked_get(key, h)

    def _read(self, key: bytes, h: int) -> object:
        """One seqlock probe: the value, None, or _RETRY if a slot was being written."""
        mv, size, region = self._mv, self.slot_size, self._region
        home = h % self.slots
        lo = home - home % region
        idx, klen, unpack = home, len(key), _SLOT.unpack_from
        for _ in range(region):
            off = self._base + idx * size
            seq, state, kl, vl, deadline, kh, crc = unpack(mv, off)
            if seq & 1:
                return _RETRY
            if state == FREE:
                return None
            if state == USED and kh == h and kl == klen and mv[off + _HDR:off + _HDR + kl] == key:
                p = off + _HDR + kl
                value = mv[p:p + vl].tobytes()
                if _crc32(value, h) != crc or _SEQ.unpack_from(mv, off)[0] != seq:
                    return _RETRY
                if deadline and deadline <= _monotonic():
                    return None
                return value
            idx += 1
            if idx == lo + region:
                idx = lo
        return None

    def _locked_get(self, key: bytes, h: int) -> Optional[bytes]:
        self._locked_reads += 1
        home, stripe = self._home(h)
        self._lock(stripe)
        try:
            off, _ = self._probe(key, h, home, stripe)
            return self._value_at(off) if off >= 0 else None
        finally:
            self._unlock(stripe)

    # ---- writes (under the stripe lock) ---------------------------------------
    def add(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> bool:
        self._check_size(key, value)
        h = _crc32(key)
        home, stripe = self._home(h)
        self._lock(stripe)
        try:
            off, reuse = self._probe(key, h, home, stripe)
            if off >= 0:
                return False
            self._store(-1, reuse, stripe, key, value, h, ttl)
            return True
        finally:
            self._unlock(stripe)

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        self._check_size(key, value)
        h = _crc32(key)
        home, stripe = self._home(h)
        self._lock(stripe)
        try:
            off, reuse = self._probe(key, h, home, stripe)
            self._store(off, reuse, stripe, key, value, h, ttl)
        finally:
            self._unlock(stripe)

    def update(self, key: bytes, fn: UpdateFn, ttl: Optional[float] = None) -> Optional[bytes]:
        h = _crc32(key)
        home, stripe = self._home(h)
        self._lock(stripe)
        try:
            off, reuse = self._probe(key, h, home, stripe)
            new = fn(self._value_at(off) if off >= 0 else None)
            if new is None:
                if off >= 0:
                    self._kill(off, stripe)
            else:
                self._check_size(key, new)
                self._store(off, reuse, stripe, key, new, h, ttl)
            return new
        finally:
            self._unlock(stripe)

    def delete(self, key: bytes) -> bool:
        h = _crc32(key)
        home, stripe = self._home(h)
        self._lock(stripe)
        try:
            off, _ = self._probe(key, h, home, stripe)
            if off < 0:
                return False
            self._kill(off, stripe)
            return True
        finally:
            self._unlock(stripe)

    def _home(self, h: int) -> tuple[int, int]:
        home = h % self.slots
        return home, home // self._region

    def _check_size(self, key: bytes, value: bytes) -> None:
        room = self.slot_size - _HDR
        if len(key) + len(value) > room or len(key) > 0xFFFF:
            raise StoreFull(f"shm: record of {len(key)}-byte key + {len(value)}-byte value exceeds "
                            f"the {room} bytes a slot holds; raise option 'slot_size' (now {self.slot_size})")

    def _probe(self, key: bytes, h: int, home: int, stripe: int) -> tuple[int, int]:
        """Under the lock: (offset of key's live record or -1, first reusable offset or -1).

        Repairs half-written slots and tombstones expired records on the way.
        """
        mv, size, region = self._mv, self.slot_size, self._region
        lo = stripe * region
        idx, klen, reuse, now = home, len(key), -1, _monotonic()
        for _ in range(region):
            off = self._base + idx * size
            seq, state, kl, vl, deadline, kh, crc = _SLOT.unpack_from(mv, off)
            if seq & 1:
                state = self._repair(off, stripe)
                seq, state, kl, vl, deadline, kh, crc = _SLOT.unpack_from(mv, off)
            if state == FREE:
                return -1, (reuse if reuse >= 0 else off)
            if state == USED and deadline and deadline <= now:
                self._kill(off, stripe)
                state = _SLOT.unpack_from(mv, off)[1]
                if state == FREE:
                    return -1, (reuse if reuse >= 0 else off)
            elif state == USED and kh == h and kl == klen and mv[off + _HDR:off + _HDR + kl] == key:
                return off, reuse
            if state == DEAD and reuse < 0:
                reuse = off
            idx += 1
            if idx == lo + region:
                idx = lo
        return -1, reuse

    def _value_at(self, off: int) -> bytes:
        _, _, kl, vl, _, _, _ = _SLOT.unpack_from(self._mv, off)
        p = off + _HDR + kl
        return self._mv[p:p + vl].tobytes()

    def _store(self, off: int, reuse: int, stripe: int, key: bytes, value: bytes, h: int,
               ttl: Optional[float]) -> None:
        """Write in place over the key's record, or into the reusable slot."""
        deadline = _monotonic() + ttl if ttl else 0.0
        if off < 0:
            if reuse < 0:
                raise StoreFull(f"shm: stripe {stripe} is full ({self._region} slots of {self.slots}); "
                                "raise option 'slots' or delete/expire records")
            off = reuse
        mv = self._mv
        seq = _SEQ.unpack_from(mv, off)[0]
        _SEQ.pack_into(mv, off, (seq + 1) & 0xFFFFFFFF)     # odd: readers retry
        p = off + _HDR
        kl, vl = len(key), len(value)
        mv[p:p + kl] = key
        mv[p + kl:p + kl + vl] = value
        _BODY.pack_into(mv, off + 4, USED, kl, vl, deadline, h, _crc32(value, h))
        _SEQ.pack_into(mv, off, (seq + 2) & 0xFFFFFFFF)

    def _set_state(self, off: int, state: int) -> None:
        mv = self._mv
        seq = _SEQ.unpack_from(mv, off)[0] | 1
        _SEQ.pack_into(mv, off, seq)
        mv[off + 4] = state
        _SEQ.pack_into(mv, off, (seq + 1) & 0xFFFFFFFF)

    def _kill(self, off: int, stripe: int) -> None:
        """Tombstone the slot; free it (and tombstones before it) when the next slot is FREE,
        which ends every probe chain through them anyway."""
        size, region = self.slot_size, self._region
        lo = self._base + stripe * region * size
        hi = lo + region * size
        nxt = off + size if off + size < hi else lo
        if self._mv[nxt + 4] != FREE or _SEQ.unpack_from(self._mv, nxt)[0] & 1:
            self._set_state(off, DEAD)
            return
        self._set_state(off, FREE)
        for _ in range(region - 1):
            off = off - size if off > lo else hi - size
            if self._mv[off + 4] != DEAD or _SEQ.unpack_from(self._mv, off)[0] & 1:
                break
            self._set_state(off, FREE)

    def _repair(self, off: int, stripe: int) -> int:
        """Finish a slot a killed writer left odd: keep it if complete, else tombstone it."""
        mv = self._mv
        seq, state, kl, vl, _, kh, crc = _SLOT.unpack_from(mv, off)
        p = off + _HDR
        intact = (state == USED and kl + vl <= self.slot_size - _HDR
                  and _crc32(mv[p:p + kl]) == kh and _crc32(mv[p + kl:p + kl + vl], kh) == crc)
        state = USED if intact else DEAD
        mv[off + 4] = state
        _SEQ.pack_into(mv, off, (seq + 1) & 0xFFFFFFFF)
        counter = self._counters + 8 * stripe   # only touched under this stripe's lock
        _U64.pack_into(mv, counter, _U64.unpack_from(mv, counter)[0] + 1)
        return state

    # ---- whole-table operations ------------------------------------------------
    def count(self) -> int:
        """Live records (lock-free scan; exact when no writer is active)."""
        mv, now, n = self._mv, _monotonic(), 0
        for off in range(self._base, self.size, self.slot_size):
            seq, state, _, _, deadline, _, _ = _SLOT.unpack_from(mv, off)
            if state == USED and not seq & 1 and not (deadline and deadline <= now):
                n += 1
        return n

    def sweep(self) -> int:
        """Tombstone (or free) every expired record, stripe by stripe; returns how many."""
        swept = 0
        for stripe in range(self.stripes):
            self._lock(stripe)
            try:
                swept += self._sweep_stripe(stripe)
            finally:
                self._unlock(stripe)
        return swept

    def _sweep_stripe(self, stripe: int) -> int:
        mv, now, swept = self._mv, _monotonic(), 0
        first = self._base + stripe * self._region * self.slot_size
        for off in range(first, first + self._region * self.slot_size, self.slot_size):
            seq, state, _, _, deadline, _, _ = _SLOT.unpack_from(mv, off)
            if seq & 1:
                state = self._repair(off, stripe)
            if state == USED and deadline and deadline <= now:
                self._kill(off, stripe)
                swept += 1
        return swept

    # ---- introspection --------------------------------------------------------
    def stats(self) -> dict[str, int]:
        repairs = 0
        if self._mv is not None:
            repairs = sum(_U64.unpack_from(self._mv, self._counters + 8 * i)[0] for i in range(self.stripes))
        return {"repairs": repairs, "locked_reads": self._locked_reads}

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "slots": self.slots, "slot_size": self.slot_size,
                "stripes": self.stripes, "segment": self.segment_name, "bytes": self.size}

    def data_paths(self) -> list[str]:
        return [p for p in ("/dev/shm", self._dir) if p and os.path.isdir(p)]


def _check_options(slots: int, slot_size: int, stripes: int) -> None:
    if stripes < 1 or stripes > 4096:
        raise ConfigError(f"backend 'shm' option 'stripes': {stripes}; allowed: an integer in 1..4096")
    if slots < stripes or slots % stripes:
        raise ConfigError(f"backend 'shm' option 'slots': {slots}; allowed: a positive multiple of "
                          f"'stripes' ({stripes})")
    if slot_size < 64 or slot_size > _MAX_SLOT or slot_size % 8:
        raise ConfigError(f"backend 'shm' option 'slot_size': {slot_size}; allowed: a multiple of 8 "
                          f"in 64..{_MAX_SLOT}")


def _create_segment(size: int) -> shared_memory.SharedMemory:
    """A new segment, mode 0600, which the resource tracker will not unlink behind our back."""
    try:
        shm = shared_memory.SharedMemory(create=True, size=size, track=False)  # type: ignore[call-arg]
    except TypeError:  # Python < 3.13: the constructor registers it; take it back at once
        shm = shared_memory.SharedMemory(create=True, size=size)
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    os.fchmod(shm._fd, 0o600)  # type: ignore[attr-defined]   # the stdlib asks for 0600; make sure
    return shm


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _shm_dir() -> Optional[str]:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


def torn_write_and_die(store: ShmStore, key: bytes, value: bytes) -> None:  # pragma: no cover
    """TEST HOOK: claim ``key``'s slot under the lock, write an odd seq and half the
    record, then SIGKILL this process -- a writer killed mid-write, for the crash tests."""
    import signal
    h = _crc32(key)
    home, stripe = store._home(h)
    store._lock(stripe)
    off, reuse = store._probe(key, h, home, stripe)
    off = off if off >= 0 else reuse
    mv = store._mv
    _SEQ.pack_into(mv, off, _SEQ.unpack_from(mv, off)[0] | 1)
    p = off + _HDR + len(key)
    half = value[:len(value) // 2]
    mv[p:p + len(half)] = half
    os.kill(os.getpid(), signal.SIGKILL)
