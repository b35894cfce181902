"""The connection pool reaches both workers of a 2-worker server every time, however
the kernel's accept races fall (the cross-worker check depends on it)."""
from __future__ import annotations

import asyncio

from harness.loadgen.config import LoadConfig
from harness.loadgen.engine import Generator


async def _workers_seen(host: str, port: int, connections: int) -> set:
    gen = Generator(LoadConfig(host=host, port=port, connections=connections))
    await gen.connect()
    try:
        return gen.pool.workers()
    finally:
        gen.pool.closing = True
        for conn in list(gen.pool.conns):
            conn.transport.close()


def test_every_pool_reaches_both_workers(shm_server):
    host, port = shm_server["host"], shm_server["port"]
    for connections in [2, 4] * 15:
        seen = asyncio.run(_workers_seen(host, port, connections))
        assert len(seen) == 2, f"all {connections} connections on worker(s) {seen}"
