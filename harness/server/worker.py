"""One worker process: an asyncio loop (uvloop when importable) accepting on the
listening socket the master bound, a Framer per TCP connection, and the UAS.

Contract with the master (see master.py):

* stamps ``time.monotonic()`` into its heartbeat file every
  ``cfg.heartbeat_interval`` from the event loop itself, so a loop that is stuck
  (a store call that never returns, SIGSTOP) stops the stamps and gets killed;
* writes ``b"<slot> <pid>\\n"`` on the readiness pipe once it accepts;
* SIGTERM: stop accepting, let every connection finish the message it is in,
  flush, exit 0 (at the latest after ``cfg.graceful_timeout``);
  SIGQUIT: exit at once; SIGINT, SIGTTIN, SIGTTOU, SIGHUP: ignored (the master
  owns them).

Connections idle for ``cfg.idle_timeout`` are closed by a periodic sweep (no
per-message timer: marking a flag costs less than re-arming a timer).
"""
from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import struct
import sys
import time
from typing import Optional

from harness.server.config import EXIT_WORKER_BOOT, ServerConfig
from harness.server.uas import Uas
from harness.sip import Framer, FramingError, Limits

STAMP = struct.Struct("d")
GC_THRESHOLD = 20000


try:  # imported at module load (in the master), so forked workers start fast
    import uvloop
except ImportError:  # optional: the "fast" extra
    uvloop = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed, else the standard one."""
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


class Connection(asyncio.Protocol):
    """One TCP connection: bytes -> Framer -> UAS -> one write per read."""

    __slots__ = ("worker", "handle", "framer", "transport", "active", "idle_since")

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.handle = worker.uas.handle
        self.framer = Framer(worker.limits)
        self.transport: Optional[asyncio.Transport] = None
        self.active = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.idle_since = self.worker.now
        self.worker.conns.add(self)
        if self.worker.draining:
            transport.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.worker.conns.discard(self)
        self.worker.check_drained()

    def data_received(self, data: bytes) -> None:
        self.active = True
        try:
            messages = self.framer.feed(data)
        except FramingError as exc:
            self.reject(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a framer bug must not kill the worker
            self.worker.report(exc)
            self.transport.abort()
            return
        if messages:
            if len(messages) == 1:  # the usual case: one read, one message
                out = self.handle(messages[0])
            else:
                handle = self.handle
                out = b"".join([handle(raw) for raw in messages])
            if out:
                self.transport.write(out)
        if self.worker.draining and not self.framer.pending:
            self.transport.close()

    def reject(self, exc: FramingError) -> None:
        """The stream is unusable: answer the complete messages before the error,
        then what can be answered about the error (400), then close."""
        try:
            handle = self.handle
            out = b"".join([handle(raw) for raw in exc.messages])
            out += self.worker.uas.framing_error(exc)
        except Exception as err:  # noqa: BLE001
            self.worker.report(err)
            out = b""
        if out:
            self.transport.write(out)
        self.transport.close()

    def eof_received(self) -> bool:
        return False  # close our side too; SIP over TCP has no half-close use

    def pause_writing(self) -> None:
        # The peer does not read its responses: stop reading its requests (bounded memory).
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def close_if_idle(self, now: float, idle_timeout: float) -> None:
        if self.active:
            self.active = False
            self.idle_since = now
        elif now - self.idle_since >= idle_timeout:
            if self.transport.get_write_buffer_size():
                self.transport.abort()
            else:
                self.transport.close()


class Worker:
    """Serve until told to stop; ``run()`` returns the process exit code."""

    def __init__(self, cfg: ServerConfig, sock: socket.socket, slot: int, store,
                 hb_fd: int, ready_fd: int) -> None:
        self.cfg = cfg
        self.sock = sock
        self.slot = slot
        self.store = store
        self.hb_fd = hb_fd
        self.ready_fd = ready_fd
        self.limits = Limits(max_line=cfg.max_line, max_headers=cfg.max_headers, max_size=cfg.max_size)
        self.uas: Optional[Uas] = None
        self.conns: set[Connection] = set()
        self.draining = False
        self.now = time.monotonic()
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.server: Optional[asyncio.AbstractServer] = None
        self.done: Optional[asyncio.Future] = None
        self.errors = 0

    def run(self) -> int:
        try:
            self.store.connect()
        except Exception as exc:  # noqa: BLE001 - reported to the user, then the master stops
            print(f"harness serve: error: worker {self.slot}: store {self.cfg.backend!r} "
                  f"could not connect: {exc}", file=sys.stderr, flush=True)
            return EXIT_WORKER_BOOT
        host, port = self.sock.getsockname()[:2]
        self.uas = Uas(self.cfg, self.store, self.slot, host, port)
        self.loop = new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.serve())
        finally:
            self.store.close()
        return 0

    async def serve(self) -> None:
        loop = self.loop
        self.done = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, self.begin_drain)
        loop.add_signal_handler(signal.SIGQUIT, os._exit, 0)
        self.server = await loop.create_server(lambda: Connection(self), sock=self.sock,
                                               backlog=self.cfg.backlog)
        self.heartbeat()
        self.sweep()
        # Objects alive now live as long as the worker: keep them out of the
        # collector's scans, and collect the young generation less often (the hot
        # path allocates many short-lived objects but creates few cycles).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 50, 100)
        os.write(self.ready_fd, f"{self.slot} {os.getpid()}\n".encode())
        await self.done

    def heartbeat(self) -> None:
        self.now = time.monotonic()
        os.pwrite(self.hb_fd, STAMP.pack(self.now), 0)
        self.loop.call_later(self.cfg.heartbeat_interval, self.heartbeat)

    def sweep(self) -> None:
        """Close connections idle for longer than the idle timeout."""
        now = self.now = time.monotonic()
        idle = self.cfg.idle_timeout
        for conn in list(self.conns):
            conn.close_if_idle(now, idle)
        self.loop.call_later(min(1.0, idle / 4), self.sweep)

    def begin_drain(self) -> None:
        """SIGTERM: stop accepting; close connections as soon as no message is half read."""
        if self.draining:
            return
        self.draining = True
        self.server.close()
        for conn in list(self.conns):
            if not conn.framer.pending:
                conn.transport.close()
        self.loop.call_later(self.cfg.graceful_timeout, self.finish)
        self.check_drained()

    def check_drained(self) -> None:
        if self.draining and not self.conns:
            # Let the transports' close callbacks run before the loop stops.
            self.loop.call_soon(self.finish)

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def report(self, exc: BaseException) -> None:
        """An unexpected error while serving: count it, say it once in a while, go on."""
        self.errors += 1
        if self.errors <= 10 or self.errors % 1000 == 0:
            print(f"harness serve: worker {self.slot}: error #{self.errors}: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
