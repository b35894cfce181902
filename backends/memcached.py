"""``memcached``: every worker talks to memcached (pymemcache, text protocol).

Options:

``servers`` (list of str, default: none)
    ``host:port``, ``unix:/path`` or ``/path`` of servers the user runs
    (comma-separated on the command line). Several servers are used through
    pymemcache's HashClient (rendezvous hashing). Without it the harness starts
    its own memcached (``service = "memcached"``).
``prefix`` (str, default ``sipstate:``)
    Prepended to every key; ``count()``, ``prepare()`` and ``destroy()`` only
    see keys under it. Printable ASCII without spaces, at most 64 bytes.
``timeout`` (float seconds, default 2.0)
    Connect and read timeout; past it an operation raises StoreUnavailable.
``fsync``
    memcached keeps nothing on disk, so ``fsync=true`` is refused (ConfigError).

How the contract is met:

* Keys: the text protocol forbids spaces, control bytes and keys over 250
  bytes, while Store keys are arbitrary bytes. A key of printable ASCII is used
  as is; any other key becomes ``~`` + base64url(key), or ``#`` + sha256 when
  that would be too long (keys starting with ``~`` or ``#`` are always encoded,
  so the mapping stays one-to-one).
* Expiry: memcached's clock ticks once a second, so a native exptime of 1 can
  expire an item after a few milliseconds. The deadline (8-byte wall-clock
  float, 0 = never) is therefore stored in front of the value, as in the lmdb
  backend, and checked on every read; memcached's own exptime is set a second
  or two later only so that it eventually frees the memory.
* ``add`` is memcached ``add``; if the key is held by a record whose deadline
  has passed, that record is replaced with ``cas`` (so two racing adds still
  create it once).
* ``update`` is ``gets`` + ``cas`` in a retry loop (``add`` when absent). A
  delete by update (``fn`` returns None) is a ``cas`` with a negative exptime,
  which memcached treats as "expire now": a conditional delete, which the
  text protocol's ``delete`` is not.
* ``delete`` reads first (``gets``) so that an expired record reports False, as
  the contract says, then deletes: two round trips.
* ``count()`` lists keys with ``lru_crawler metadump hash`` (a walk of the hash
  table: the LRU walk of ``metadump all`` misses items that the LRU maintainer
  moves during the walk, measured here) and counts ours that are live by their
  deadline. Caveat: a count taken while others write is a snapshot of a moving
  table; for audits after a run it is exact. (``stats curr_items`` would count
  every prefix and expired items.)
* Socket errors and timeouts raise StoreUnavailable; memcached's "out of
  memory" or "object too large" raise StoreFull.
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
import socket
import struct
import time
from typing import Any, Optional
from urllib.parse import unquote_to_bytes

from backends.base import ConfigError, MissingDependency, Store, StoreFull, StoreUnavailable, UpdateFn

try:
    from pymemcache.client.base import Client, normalize_server_spec
    from pymemcache.client.hash import HashClient
    from pymemcache.exceptions import MemcacheError, MemcacheServerError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("backend 'memcached' needs pymemcache; install it with: "
                            "pip install 'sipstate[memcached]'") from exc

_DEADLINE = struct.Struct("<d")
_HDR = _DEADLINE.size
_MAX_KEY = 250
_SAFE_KEY = re.compile(rb"[\x21\x22\x24-\x7d][\x21-\x7e]*")
_SAFE_PREFIX = re.compile(r"[\x21-\x7e]{0,64}")
_RELATIVE_LIMIT = 30 * 24 * 3600  # memcached reads larger exptimes as absolute unix time
_ERRORS = (MemcacheError, OSError, socket.timeout)
_MAX_RETRIES = 10_000


def encode(value: bytes, ttl: Optional[float], now: Optional[float] = None) -> bytes:
    deadline = (now or time.time()) + ttl if ttl else 0.0
    return _DEADLINE.pack(deadline) + value


def decode(raw: Optional[bytes], now: Optional[float] = None) -> Optional[bytes]:
    """Payload, or None if absent or past its deadline."""
    if raw is None or len(raw) < _HDR:
        return None
    deadline = _DEADLINE.unpack_from(raw)[0]
    if deadline and deadline <= (now or time.time()):
        return None
    return raw[_HDR:]


def exptime(ttl: Optional[float]) -> int:
    """memcached exptime that frees the item after our deadline has surely passed."""
    if not ttl:
        return 0
    seconds = int(math.ceil(ttl)) + 2
    return seconds if seconds <= _RELATIVE_LIMIT else int(time.time()) + seconds


class MemcachedStore(Store):
    name = "memcached"
    extra = "memcached"
    service = "memcached"

    def __init__(self, *, servers: Optional[list[str]] = None, prefix: str = "sipstate:",
                 timeout: float = 2.0, fsync: bool = False, eatmydata: bool = False) -> None:
        super().__init__(fsync=fsync, eatmydata=eatmydata)
        if fsync:
            raise ConfigError("backend 'memcached' option 'fsync': memcached keeps nothing on disk; "
                              "allowed: false")
        if not _SAFE_PREFIX.fullmatch(prefix):
            raise ConfigError(f"backend 'memcached' option 'prefix': {prefix!r}; allowed: printable "
                              "ASCII without spaces, at most 64 characters")
        if not timeout > 0:
            raise ConfigError(f"backend 'memcached' option 'timeout': {timeout!r}; allowed: a number > 0")
        self.servers = [_check_server(s) for s in servers] if servers else None
        self.prefix = prefix.encode()
        self.timeout = float(timeout)
        self.service = None if self.servers else "memcached"
        self._client: Optional[Any] = None
        self._retries = 0

    # ---- lifecycle ----------------------------------------------------------
    def _clients(self) -> list[Any]:
        """One plain Client per server (for metadump and the single-server case)."""
        if not self.servers:
            raise ConfigError("backend 'memcached': no 'servers' option and no service started; give "
                              "servers=host:port or let the harness start memcached")
        return [Client(normalize_server_spec(s), connect_timeout=self.timeout, timeout=self.timeout,
                       no_delay=True, default_noreply=False) for s in self.servers]

    def _open(self) -> Any:
        if self.servers and len(self.servers) > 1:
            return HashClient([normalize_server_spec(s) for s in self.servers], connect_timeout=self.timeout,
                              timeout=self.timeout, no_delay=True, default_noreply=False,
                              retry_attempts=0, dead_timeout=1)
        return self._clients()[0]

    def prepare(self) -> None:
        """Check every server answers and remove keys left under our prefix."""
        self._remove_ours()

    def connect(self) -> None:
        self._client = self._open()
        try:
            self._client.version() if not isinstance(self._client, HashClient) else None
        except _ERRORS as exc:
            self._client = None
            raise StoreUnavailable(f"memcached at {self.servers[0]}: {exc}") from exc

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def destroy(self) -> None:
        if self.servers:
            try:
                self._remove_ours()
            except StoreUnavailable:
                pass  # the service is gone: nothing left to remove

    # ---- key mapping ----------------------------------------------------------
    def mkey(self, key: bytes) -> bytes:
        """The memcached key for a Store key (one-to-one, see the module docstring)."""
        if len(key) + len(self.prefix) <= _MAX_KEY and _SAFE_KEY.fullmatch(key):
            return self.prefix + key
        encoded = b"~" + base64.urlsafe_b64encode(key)
        if len(encoded) + len(self.prefix) > _MAX_KEY:
            encoded = b"#" + hashlib.sha256(key).hexdigest().encode()
        return self.prefix + encoded

    def _conn(self) -> Any:
        if self._client is None:
            raise StoreUnavailable("backend 'memcached': connect() was not called in this process")
        return self._client

    # ---- operations ---------------------------------------------------------------
    def get(self, key: bytes) -> Optional[bytes]:
        try:
            return decode(self._conn().get(self.mkey(key)))
        except _ERRORS as exc:
            raise _translate(exc) from exc

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        try:
            self._conn().set(self.mkey(key), encode(value, ttl), expire=exptime(ttl), noreply=False)
        except _ERRORS as exc:
            raise _translate(exc) from exc

    def add(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> bool:
        client, k, exp = self._conn(), self.mkey(key), exptime(ttl)
        try:
            for _ in range(_MAX_RETRIES):
                record = encode(value, ttl)
                if client.add(k, record, expire=exp, noreply=False):
                    return True
                raw, cas = client.gets(k)
                if raw is not None and decode(raw) is not None:
                    return False
                # Held by an expired record (replace it if nobody else did) or just vanished.
                if raw is not None and client.cas(k, record, cas, expire=exp, noreply=False):
                    return True
                self._retries += 1
        except _ERRORS as exc:
            raise _translate(exc) from exc
        raise StoreUnavailable(f"backend 'memcached': add of {key!r} lost {_MAX_RETRIES} races in a row")

    def update(self, key: bytes, fn: UpdateFn, ttl: Optional[float] = None) -> Optional[bytes]:
        """gets -> fn -> cas (or add when absent), retried until no other writer came in between."""
        client, k, exp = self._conn(), self.mkey(key), exptime(ttl)
        try:
            for _ in range(_MAX_RETRIES):
                raw, cas = client.gets(k)
                old = decode(raw)
                new = fn(old)
                if new is None and old is None:
                    return None
                if raw is None:
                    done = client.add(k, encode(new, ttl), expire=exp, noreply=False)
                elif new is None:  # conditional delete: store-and-expire-now if unchanged
                    done = client.cas(k, b"", cas, expire=-1, noreply=False)
                else:
                    done = client.cas(k, encode(new, ttl), cas, expire=exp, noreply=False)
                if done:
                    return new
                self._retries += 1
        except _ERRORS as exc:
            raise _translate(exc) from exc
        raise StoreUnavailable(f"backend 'memcached': update of {key!r} lost {_MAX_RETRIES} races in a row")

    def delete(self, key: bytes) -> bool:
        client, k = self._conn(), self.mkey(key)
        try:
            raw = client.get(k)
            if raw is None:
                return False
            deleted = bool(client.delete(k, noreply=False))
            return deleted and decode(raw) is not None
        except _ERRORS as exc:
            raise _translate(exc) from exc

    def count(self) -> int:
        clients = self._clients()
        try:
            now, live = time.time(), 0
            for server, client in zip(self.servers or [], clients):
                keys = _our_keys(server, self.prefix, self.timeout)
                for i in range(0, len(keys), 100):
                    found = client.get_many(keys[i:i + 100])
                    live += sum(1 for raw in found.values() if decode(raw, now) is not None)
            return live
        except _ERRORS as exc:
            raise _translate(exc) from exc
        finally:
            for client in clients:
                client.close()

    def _remove_ours(self) -> None:
        clients = self._clients()
        try:
            for server, client in zip(self.servers or [], clients):
                for key in _our_keys(server, self.prefix, self.timeout):
                    client.delete(key, noreply=False)
        except _ERRORS as exc:
            raise _translate(exc) from exc
        finally:
            for client in clients:
                client.close()

    # ---- introspection ----------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        return {"cas_retries": self._retries}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "servers": self.servers, "prefix": self.prefix.decode(),
                "timeout": self.timeout}


def _metadump(server: str, timeout: float) -> bytes:
    """The raw ``lru_crawler metadump hash`` answer of one server, on a connection of its own
    (pymemcache's raw_command stops at its first read for answers this long). The
    crawler serves one dump at a time, so a BUSY answer is retried for up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        dump = _metadump_once(server, timeout)
        if dump is not None:
            return dump
        if time.monotonic() > deadline:
            raise StoreUnavailable(f"memcached at {server}: lru_crawler stayed busy for {timeout} s")
        time.sleep(0.02)


def _metadump_once(server: str, timeout: float) -> Optional[bytes]:
    spec = normalize_server_spec(server)
    family = socket.AF_UNIX if isinstance(spec, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(spec)
        sock.sendall(b"lru_crawler metadump hash\r\n")
        chunks: list[bytes] = []
        tail = b""
        while not (tail.endswith(b"\nEND\r\n") or tail == b"END\r\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise StoreUnavailable(f"memcached at {server}: connection closed during metadump")
            if not chunks and chunk.startswith(b"BUSY"):
                return None
            if not chunks and chunk.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")):
                raise StoreUnavailable(f"memcached at {server}: metadump refused: {chunk[:80]!r}")
            chunks.append(chunk)
            tail = (tail + chunk)[-16:]
        return b"".join(chunks)


def _our_keys(server: str, prefix: bytes, timeout: float) -> list[bytes]:
    """Keys under ``prefix`` on one server (URL-decoded from the metadump)."""
    keys = []
    for line in _metadump(server, timeout).split(b"\n"):
        if line.startswith(b"key="):
            key = unquote_to_bytes(line[4:].split(b" ", 1)[0])
            if key.startswith(prefix):
                keys.append(key)
    return keys


def _check_server(spec: str) -> str:
    """Validate one ``servers`` entry; ConfigError naming it."""
    spec = spec.strip()
    if spec.startswith("unix:") or spec.startswith("/"):
        return spec
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"backend 'memcached' option 'servers': {spec!r}; allowed: host:port, "
                          "unix:/path/to/socket or /path/to/socket")
    return spec


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, MemcacheServerError) and re.search(r"memory|too large", str(exc)):
        return StoreFull(f"memcached refused the write: {exc}")
    return StoreUnavailable(f"memcached: {exc}")
