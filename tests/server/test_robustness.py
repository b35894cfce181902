"""Hostile input: random bytes, a 10 MB header line, Content-Length 2^63, a body that
never arrives, 1,000 idle connections. Memory stays bounded, nothing dies, idle
connections are closed after the idle timeout."""
from __future__ import annotations

import os
import random
import resource
import socket
import time

import pytest

from tests.server.helpers import rss_kb, wait_workers, worker_pids
from tests.server.sipclient import Conn, Dialog, options_ok, request
from tests.support import running_server

IDLE = 2.0
RSS_GROWTH_LIMIT_KB = 40 * 1024   # generous: the point is "not 10 MB per connection"


@pytest.fixture(scope="module")
def server():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # the server inherits this limit; 1,000 connections need fds on both sides
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    with running_server("lmdb", workers=2, extra=["--idle-timeout", str(IDLE)]) as srv:
        srv["workers_at_start"] = wait_workers(srv["pid"], 2)
        for _ in range(20):  # warm both workers up before taking the RSS baseline
            options_ok(srv["port"])
        srv["rss_at_start"] = {p: rss_kb(p) for p in srv["workers_at_start"]}
        yield srv
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def assert_healthy(srv) -> None:
    assert options_ok(srv["port"])
    assert worker_pids(srv["pid"]) == srv["workers_at_start"], "a worker died"
    for pid, base in srv["rss_at_start"].items():
        grown = rss_kb(pid) - base
        assert grown < RSS_GROWTH_LIMIT_KB, f"worker {pid} grew by {grown} KiB"


def send_until_closed(port: int, chunks, timeout: float = 10.0) -> bytes:
    """Send the chunks until the server closes; whatever it answered."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    try:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # already reset by the server
            return received
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return received


def test_random_bytes(server):
    rng = random.Random(4475)
    for i in range(20):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 20000)))
        answer = send_until_closed(server["port"], [blob])
        assert not answer or answer.startswith(b"SIP/2.0 400"), answer[:80]
    assert_healthy(server)


def test_ten_megabyte_header_line(server):
    head = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nX-Huge: "
    filler = b"a" * (1 << 20)
    t0 = time.monotonic()
    answer = send_until_closed(server["port"], [head] + [filler] * 10)
    assert not answer or answer.startswith(b"SIP/2.0 400")
    assert time.monotonic() - t0 < 30
    assert_healthy(server)


def test_content_length_two_to_the_63(server):
    port = server["port"]
    raw = request("INVITE", Dialog(), port).replace(b"Content-Length: 0", b"Content-Length: 9223372036854775808")
    answer = send_until_closed(port, [raw, b"x" * 100000])
    assert answer.startswith(b"SIP/2.0 400") or answer == b""
    assert b"SIP/2.0 2" not in answer
    assert_healthy(server)


def test_body_that_never_arrives_is_closed_by_the_idle_timeout(server):
    port = server["port"]
    raw = request("INVITE", Dialog(), port).replace(b"Content-Length: 0", b"Content-Length: 500")
    with Conn(port) as conn:
        conn.send(raw + b"v=0\r\n")
        assert not conn.is_closed(IDLE / 4)
        t0 = time.monotonic()
        assert conn.is_closed(IDLE * 4)
        assert time.monotonic() - t0 < IDLE * 4
    assert_healthy(server)


def test_thousand_idle_connections(server):
    port = server["port"]
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(1000)]
    try:
        # Half of them have said something once; the rest never speak.
        for s in socks[::2]:
            s.sendall(b"\r\n\r\n")
        assert options_ok(port), "the server must keep serving with 1,000 connections open"
        assert_healthy(server)
        time.sleep(IDLE + 1.0)
        deadline = time.monotonic() + IDLE * 4
        open_left = list(socks)
        while open_left and time.monotonic() < deadline:
            still = []
            for s in open_left:
                s.settimeout(0.01)
                try:
                    if s.recv(1) != b"":
                        still.append(s)
                except (socket.timeout, BlockingIOError):
                    still.append(s)
                except ConnectionResetError:
                    pass
            open_left = still
            time.sleep(0.1)
        assert not open_left, f"{len(open_left)} idle connections were not closed"
    finally:
        for s in socks:
            s.close()
    assert_healthy(server)
