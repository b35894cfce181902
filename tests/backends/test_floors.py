"""The raw-socket GET floors of bench-store read what the backend stored, on the
store's own connection, and leave that connection usable by the backend."""
from __future__ import annotations

from typing import Callable

import pytest

from backends.base import Store
from backends.memcached import decode
from harness.floors import open_floor, store_socket


@pytest.mark.parametrize("name", ["redis", "memcached"])
@pytest.mark.parametrize("shared", [True, False])
def test_floor_reads_the_stored_value_and_the_store_still_works(
        store_factory: Callable[..., Store], name: str, shared: bool) -> None:
    store = store_factory(name)
    keys = [b"plain", b"with space\x00and binary\xff"]  # the second is encoded by memcached
    for i, key in enumerate(keys):
        store.put(key, b"v%d" % i * 100)
    floor = open_floor(store, shared=shared)
    assert (floor.sock is store_socket(store)) is shared
    for _ in range(3):  # alternate like bench-store: neither client may leave bytes behind
        for i, key in enumerate(keys):
            raw = floor.get(key)
            assert (decode(raw) if name == "memcached" else raw) == b"v%d" % i * 100
            assert store.get(key) == b"v%d" % i * 100
    assert floor.get(b"absent") is None and store.get(b"absent") is None
    floor.close()
    store.put(b"after", b"x")  # a shared socket is not closed with the floor
    assert store.get(b"after") == b"x"
