"""A pool of persistent TCP connections to the server under test.

The kernel hands each accepted connection to one worker of the pre-fork server,
and a connection stays with that worker. The pool learns each connection's
worker from the ``Server`` header of its first answer, so that ACK and BYE can be
sent on a connection that belongs to *another* worker than the INVITE's. Since
all connections can land on one worker, ``open_all`` opens extra connections
(bounded) until at least two workers are represented, when the server has two.

Connections are opened in bursts, not one after another: a worker that just
answered is awake and wins the accept race against one asleep in epoll, so
serial connects tend to pile onto one worker (measured here: 9 of 30 serial
rounds of 4 connects all on one worker of two, 18 of 30 with 10 ms between
connects; a run of the unshared control once lost nothing because every
connection of a 12-connect serial search landed on the same worker).
"""
from __future__ import annotations

import asyncio
import random
from typing import Awaitable, Callable, Optional

from harness.errors import HarnessError
from harness.loadgen import messages

RECONNECT_DELAY = 0.2
MAX_BURST = 16


class Conn(asyncio.Protocol):
    """One connection: frames responses and hands them to the generator."""

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.buf = bytearray()
        self.transport: Optional[asyncio.Transport] = None
        self.worker: Optional[int] = None
        self.via = b""
        self.retired = False   # closed on purpose: no reconnect

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        host, port = transport.get_extra_info("sockname")[:2]
        self.via = b"%s:%d" % (host.encode(), port)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        try:
            responses = messages.read_responses(buf)
        except messages.BadStream:
            self.pool.bad_stream(self)
            return
        handle = self.pool.on_response
        for resp in responses:
            handle(self, resp)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.pool.lost(self)

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Pool:
    """Connections of one generator process; not shared between processes."""

    def __init__(self, host: str, port: int, size: int, rng: random.Random, timeout: float,
                 on_response: Callable, on_lost: Callable[[Conn], None]) -> None:
        self.host, self.port, self.size = host, port, size
        self.rng, self.timeout = rng, timeout
        self.on_response, self.on_lost = on_response, on_lost
        self.conns: list[Conn] = []
        self.cross_for: dict[Optional[int], list[Conn]] = {}
        self.closing = False
        self.rr = 0
        self.reconnects = 0
        self.bad_streams = 0

    async def open_all(self, probe: Callable[[Conn], Awaitable[None]]) -> None:
        """Open ``size`` connections, learn their workers, seek worker diversity."""
        await self._open_burst(self.size, probe)
        burst = 2
        while self.size >= 2 and len(self.workers()) == 1 and burst <= MAX_BURST:
            crowded = self.workers()
            extras = await self._open_burst(burst, probe)
            fresh = next((c for c in extras if c.worker not in crowded and c.worker is not None), None)
            for extra in extras:
                if extra is not fresh:
                    self._retire(extra)
            if fresh is not None:  # a new worker: it replaces one connection of the crowded one
                self._retire(next(c for c in self.conns if c is not fresh))
            burst *= 2
        self.rebuild()

    async def _open_burst(self, n: int, probe: Callable[[Conn], Awaitable[None]]) -> list[Conn]:
        """Open ``n`` connections at once, then probe each; return them."""
        conns = await asyncio.gather(*(self._open() for _ in range(n)))
        for conn in conns:
            await probe(conn)
        return list(conns)

    async def _open(self) -> Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Conn(self), self.host, self.port), self.timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise HarnessError(f"cannot connect to {self.host}:{self.port}: "
                               f"{exc or 'timed out'}") from None
        self.conns.append(conn)
        return conn

    def _retire(self, conn: Conn) -> None:
        conn.retired = True
        if conn in self.conns:
            self.conns.remove(conn)
        if conn.transport is not None:
            conn.transport.close()

    def workers(self, exclude: Optional[Conn] = None) -> set[int]:
        return {c.worker for c in self.conns if c.worker is not None and c is not exclude}

    def rebuild(self) -> None:
        """Recompute, per worker, the connections that belong to other known workers."""
        known = [c for c in self.conns if c.worker is not None]
        self.cross_for = {w: [c for c in known if c.worker != w] for w in self.workers()}
        self.cross_for[None] = known

    def learn(self, conn: Conn, worker: int) -> None:
        conn.worker = worker
        self.rebuild()

    def pick(self) -> Optional[Conn]:
        """Round robin over live connections (None when there is none)."""
        conns = self.conns
        if not conns:
            return None
        self.rr = (self.rr + 1) % len(conns)
        return conns[self.rr]

    def other(self, conn: Conn, worker: Optional[int]) -> Optional[Conn]:
        """A connection of another worker than ``worker``, else another connection."""
        cands = self.cross_for.get(worker)
        if cands:
            pick = cands[int(self.rng.random() * len(cands))]
            if pick is not conn or len(cands) == 1:
                return pick
        conns = self.conns
        n = len(conns)
        if n == 0:
            return None
        i = int(self.rng.random() * n)
        return conns[(i + 1) % n] if conns[i] is conn and n > 1 else conns[i]

    def bad_stream(self, conn: Conn) -> None:
        self.bad_streams += 1
        if conn.transport is not None:
            conn.transport.abort()

    def lost(self, conn: Conn) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
            self.rebuild()
        if conn.retired:
            return
        self.on_lost(conn)
        if not self.closing:
            asyncio.get_running_loop().call_later(RECONNECT_DELAY, self._reconnect)

    def _reconnect(self) -> None:
        if not self.closing:
            asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        try:
            await self._open()
            self.reconnects += 1
            self.rebuild()
        except HarnessError:
            if not self.closing:
                asyncio.get_running_loop().call_later(RECONNECT_DELAY, self._reconnect)

    def close(self) -> None:
        self.closing = True
        for conn in list(self.conns):
            self._retire(conn)
