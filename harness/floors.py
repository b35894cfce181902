"""Raw-socket clients: the cost floor of a GET against redis-server and memcached.

bench-store times the backend's ``get`` (redis-py + hiredis, pymemcache) next to
these minimal clients that send the same request for the same stored key over
one blocking socket and parse only what a GET needs. The difference between
the two is what the client library adds; the floor itself is the kernel's
loopback round trip plus the server's work.

* :class:`RespFloor` -- ``GET`` in RESP, replies parsed by ``hiredis.Reader``
  (the C parser redis-py uses), on the store's url (TCP or unix socket, SELECT db).
* :class:`MemcacheFloor` -- text protocol ``get``: reads ``VALUE <key> <flags>
  <bytes>`` + data + ``END``.

``open_floor(store)`` builds the right one for a connected redis or memcached
store and maps the Store key the same way the backend does (prefix, key encoding).
It sends on the store's own connection: the same socket, so the same server
thread (memcached gives each connection to one of its threads). On this 2-core
VM the same raw GET took 17 µs on one connection and 50 µs on another, in
alternation with the same client: with two connections the "floor" measured
where the scheduler put each server thread, not the client library.
"""
from __future__ import annotations

import socket
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse


def _connect(host: Optional[str], port: Optional[int], path: Optional[str], timeout: float) -> socket.socket:
    if path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        return sock
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class RespFloor:
    """GET over a raw socket, replies parsed by hiredis.Reader."""

    def __init__(self, url: str, prefix: bytes = b"", timeout: float = 5.0,
                 sock: Optional[socket.socket] = None) -> None:
        import hiredis
        self.reader = hiredis.Reader()
        self.prefix = prefix
        self.owned = sock is None
        if sock is not None:  # a live, selected connection of the store's
            self.sock = sock
            return
        parsed = urlparse(url)
        if parsed.scheme == "unix":
            db = int(parse_qs(parsed.query).get("db", ["0"])[0])
            self.sock = _connect(None, None, parsed.path, timeout)
        else:
            db = int((parsed.path or "/0").strip("/") or 0)
            self.sock = _connect(parsed.hostname or "127.0.0.1", parsed.port or 6379, None, timeout)
        if db:
            self.command(b"SELECT", b"%d" % db)

    def command(self, *parts: bytes) -> Any:
        msg = [b"*%d\r\n" % len(parts)]
        for part in parts:
            msg.append(b"$%d\r\n%s\r\n" % (len(part), part))
        self.sock.sendall(b"".join(msg))
        reply = self.reader.gets()
        while reply is False:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.reader.feed(chunk)
            reply = self.reader.gets()
        return reply

    def get(self, key: bytes) -> Optional[bytes]:
        k = self.prefix + key
        self.sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
        reply = self.reader.gets()
        while reply is False:
            self.reader.feed(self.sock.recv(65536))
            reply = self.reader.gets()
        return reply

    def close(self) -> None:
        if self.owned:
            self.sock.close()


class MemcacheFloor:
    """Text-protocol ``get`` over a raw socket; returns the raw stored bytes."""

    def __init__(self, server: str, mkey: Any, timeout: float = 5.0,
                 sock: Optional[socket.socket] = None) -> None:
        self.mkey = mkey
        self.buf = b""
        self.owned = sock is None
        if sock is not None:
            self.sock = sock
        elif server.startswith("unix:") or server.startswith("/"):
            self.sock = _connect(None, None, server.removeprefix("unix:"), timeout)
        else:
            host, _, port = server.rpartition(":")
            self.sock = _connect(host, int(port), None, timeout)

    def _fill(self, need: int) -> None:
        while len(self.buf) < need:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("memcached closed the connection")
            self.buf += chunk

    def get(self, key: bytes) -> Optional[bytes]:
        self.sock.sendall(b"get %s\r\n" % self.mkey(key))
        self._fill(5)
        while b"\r\n" not in self.buf:
            self._fill(len(self.buf) + 1)
        line, _, rest = self.buf.partition(b"\r\n")
        if line == b"END":
            self.buf = rest
            return None
        size = int(line.rsplit(b" ", 1)[1])
        self.buf = rest
        self._fill(size + 7)  # data, \r\n, END\r\n
        value, self.buf = self.buf[:size], self.buf[size + 7:]
        return value

    def close(self) -> None:
        if self.owned:
            self.sock.close()


def open_floor(store: Any, shared: bool = True) -> Any:
    """The raw client for a redis or memcached store (same server, same key mapping).

    ``shared`` (default): on the store's own live socket, so library and floor
    are alternated over one connection; otherwise on a connection of its own."""
    if store.name == "redis":
        sock = store_socket(store) if shared else None
        return RespFloor(store.url, store.prefix, store.timeout, sock=sock)
    if store.name == "memcached":
        if len(store.servers) != 1:
            raise ValueError("the memcached floor needs exactly one server")
        sock = store_socket(store) if shared else None
        return MemcacheFloor(store.servers[0], store.mkey, store.timeout, sock=sock)
    raise ValueError(f"no raw-socket floor for backend {store.name!r}")


def store_socket(store: Any) -> Optional[socket.socket]:
    """The connected socket under a redis or memcached store's client, or None.

    Safe to share because requests on it are strictly sequential: after each
    complete reply neither client has bytes left in its buffer."""
    client = getattr(store, "_client", None)
    if client is None:
        return None
    if store.name == "redis":
        conn = client.connection  # single_connection_client: always this one
        if conn._sock is None:
            conn.connect()
        return conn._sock
    return getattr(client, "sock", None)
