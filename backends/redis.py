"""``redis``: every worker talks to one redis-server over TCP or a unix socket.

Options:

``url`` (str, default: none)
    ``redis://host:port/db`` or ``unix:///path/to/socket[?db=N]`` of a server
    the user runs. Without it the harness starts its own redis-server
    (``service = "redis"``, see harness/services.py) and passes its url.
``prefix`` (str, default ``sipstate:``)
    Prepended to every key, so a shared server is not polluted: ``count()``
    counts, and ``prepare()``/``destroy()`` remove, only keys under it. Runs
    that share one server at the same time need distinct prefixes.
``timeout`` (float seconds, default 2.0)
    Socket connect and read timeout; past it an operation raises StoreUnavailable.
``fsync`` / ``eatmydata``
    Applied by the harness to the redis-server it starts (``appendfsync
    always`` / ``no``, LD_PRELOAD). With a user ``url`` they are only recorded:
    the user's server configuration is never changed.

How the contract is met (redis-py with the hiredis parser, one connection per
process, opened in ``connect()`` after fork; the hot operations are sent on
redis-py's Connection directly, below the client's retry and callback layer,
which costs ~5 µs per command here -- see ``_cmd``):

* ``add`` is ``SET key value NX PX ttl``: existence check, write and expiry in
  one command, so Redis's single-threaded execution makes it atomic.
* ``update`` must run a *Python* function between the read and the write, so
  the read-modify-write cannot be a server-side Lua script. Two ways remain:
  WATCH/MULTI/EXEC (three round trips: WATCH, GET, then MULTI+SET+EXEC, plus
  connection state that must be cleaned up on every error), or an optimistic
  compare-and-set: GET, compute, then one small Lua script that writes (or
  deletes) only if the value is still the one that was read, retrying
  otherwise. The CAS needs two round trips and no connection state, so it is
  used. It compares values, not versions: an A -> B -> A change in between is
  accepted, which is still a correct serialization of the two writers
  (``fn`` only sees the value).
* TTLs are Redis's own (PX, millisecond resolution); ``ttl`` None or 0 means
  no expiry, and ``put``/``update`` without a ttl clear an older one, as in
  every other backend.
* ``count()`` SCANs ``prefix*`` (COUNT 1000), or DBSIZE when the prefix is empty.
* Connection errors and timeouts raise StoreUnavailable; an out-of-memory
  refusal (``maxmemory`` with ``noeviction``) raises StoreFull.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Optional
from urllib.parse import urlparse

from backends.base import ConfigError, MissingDependency, Store, StoreFull, StoreUnavailable, UpdateFn

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("backend 'redis' needs redis-py and hiredis; install them with: "
                            "pip install 'sipstate[redis]'") from exc

# KEYS[1] key; ARGV[1] "1" if a value was read else "0"; ARGV[2] that value;
# ARGV[3] "set" or "del"; ARGV[4] new value; ARGV[5] ttl in ms ("0" = none).
_CAS_LUA = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
if ARGV[3] == 'del' then
  redis.call('DEL', KEYS[1])
elseif ARGV[5] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[4])
end
return 1
"""
_SCHEMES = ("redis", "rediss", "unix")
_MAX_CAS_RETRIES = 10_000


def _ttl_ms(ttl: Optional[float]) -> Optional[int]:
    """Milliseconds for PX, at least 1; None for no expiry (ttl None or 0)."""
    if not ttl:
        return None
    return max(1, int(round(ttl * 1000)))


class RedisStore(Store):
    name = "redis"
    extra = "redis"
    service = "redis"

    def __init__(self, *, url: Optional[str] = None, prefix: str = "sipstate:", timeout: float = 2.0,
                 fsync: bool = False, eatmydata: bool = False) -> None:
        super().__init__(fsync=fsync, eatmydata=eatmydata)
        if url is not None and urlparse(url).scheme not in _SCHEMES:
            raise ConfigError(f"backend 'redis' option 'url': {url!r} is not valid; allowed: "
                              "redis://host:port/db, rediss://host:port/db or unix:///path/to/socket")
        if not timeout > 0:
            raise ConfigError(f"backend 'redis' option 'timeout': {timeout!r}; allowed: a number > 0")
        self.url = url
        self.prefix = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        self.timeout = float(timeout)
        # The harness starts a server only when the user named none.
        self.service = None if url else "redis"
        self._client: Optional[Any] = None
        self._cas_sha = ""
        self._retries = 0

    # ---- lifecycle -------------------------------------------------------
    def _open(self) -> Any:
        if not self.url:
            raise ConfigError("backend 'redis': no 'url' option and no service started; give "
                              "url=redis://host:port/db or let the harness start redis-server")
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=self.timeout,
                                          socket_connect_timeout=self.timeout,
                                          single_connection_client=True,
                                          retry=Retry(NoBackoff(), 0), protocol=2)
            client.ping()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis at {self.url}: {exc}") from exc
        return client

    def prepare(self) -> None:
        """Check the server answers and remove keys left under our prefix by an earlier run."""
        client = self._open()
        try:
            self._remove_ours(client)
        finally:
            client.close()

    def connect(self) -> None:
        """Open this process's own connection (never one inherited across fork)."""
        self._client = self._open()
        self._cas_sha = hashlib.sha1(_CAS_LUA.encode()).hexdigest()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except redis.RedisError:
                pass

    def destroy(self) -> None:
        """Remove keys under our prefix (never the whole database)."""
        if not self.url:
            return
        try:
            client = self._open()
        except StoreUnavailable:
            return  # the service is already gone: nothing left to remove
        try:
            self._remove_ours(client)
        finally:
            client.close()

    def _remove_ours(self, client: Any) -> None:
        if not self.prefix:
            return
        batch: list[bytes] = []
        for key in client.scan_iter(match=self._pattern(), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)

    def _pattern(self) -> bytes:
        return re.sub(rb"([*?\[\]\\])", rb"\\\1", self.prefix) + b"*"

    # ---- operations ---------------------------------------------------------
    def _conn(self) -> Any:
        """This process's redis-py Connection (single_connection_client keeps exactly one)."""
        if self._client is None:
            raise StoreUnavailable("backend 'redis': connect() was not called in this process")
        return self._client.connection

    def _cmd(self, *args: Any) -> Any:
        """One command on this process's connection, below redis-py's client layer.

        ``Redis.get()`` and friends add retry wrappers, argument filtering and
        response callbacks around the connection: ~5 µs of a ~16 µs GET on this
        machine (measured). Sending on the redis-py Connection (hiredis parser)
        directly keeps the library's protocol code and drops that layer.
        """
        conn = self._conn()
        try:
            conn.send_command(*args)
            return conn.read_response()
        except redis.ResponseError as exc:
            raise _translate(exc) from exc
        except (redis.RedisError, OSError) as exc:
            conn.disconnect()  # the next command reconnects
            raise StoreUnavailable(f"redis: {exc}") from exc

    def get(self, key: bytes) -> Optional[bytes]:
        return self._cmd("GET", self.prefix + key)

    def add(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> bool:
        px = _ttl_ms(ttl)
        if px is None:
            return self._cmd("SET", self.prefix + key, value, "NX") is not None
        return self._cmd("SET", self.prefix + key, value, "NX", "PX", px) is not None

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        px = _ttl_ms(ttl)
        if px is None:
            self._cmd("SET", self.prefix + key, value)
        else:
            self._cmd("SET", self.prefix + key, value, "PX", px)

    def update(self, key: bytes, fn: UpdateFn, ttl: Optional[float] = None) -> Optional[bytes]:
        """Optimistic read-compute-CAS, retried until no other writer came in between."""
        k = self.prefix + key
        px = str(_ttl_ms(ttl) or 0)
        for _ in range(_MAX_CAS_RETRIES):
            old = self._cmd("GET", k)
            new = fn(old)
            if old is None and new is None:
                return None
            if self._eval_cas(k, "1" if old is not None else "0", old or b"",
                              "del" if new is None else "set", new or b"", px):
                return new
            self._retries += 1
        raise StoreUnavailable(f"backend 'redis': update of {key!r} lost {_MAX_CAS_RETRIES} races in a row")

    def _eval_cas(self, key: bytes, *args: Any) -> bool:
        """EVALSHA of the CAS script, loading it once per server (NOSCRIPT after a restart)."""
        try:
            return bool(self._cmd("EVALSHA", self._cas_sha, 1, key, *args))
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, redis.exceptions.NoScriptError):
                raise
        self._cas_sha = self._cmd("SCRIPT", "LOAD", _CAS_LUA).decode()
        return bool(self._cmd("EVALSHA", self._cas_sha, 1, key, *args))

    def delete(self, key: bytes) -> bool:
        return bool(self._cmd("DEL", self.prefix + key))

    def count(self) -> int:
        if self._client is None:
            raise StoreUnavailable("backend 'redis': connect() was not called in this process")
        client = self._client
        try:
            if not self.prefix:
                return int(client.dbsize())
            return sum(1 for _ in client.scan_iter(match=self._pattern(), count=1000))
        except redis.RedisError as exc:
            raise _translate(exc) from exc

    # ---- introspection --------------------------------------------------------
    def stats(self) -> dict[str, int]:
        return {"cas_retries": self._retries}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.url, "prefix": self.prefix.decode(errors="replace"),
                "timeout": self.timeout}


def _translate(exc: Exception) -> StoreUnavailable | StoreFull:
    """redis-py error -> StoreFull (out of memory) or StoreUnavailable (anything else)."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or str(exc).startswith("OOM"):
        return StoreFull(f"redis refused the write: {exc}")
    return StoreUnavailable(f"redis: {exc}")
