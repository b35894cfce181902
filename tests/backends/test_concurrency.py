"""Concurrency with real forked processes: atomic update and add across processes.

4 processes x 1,500 ``update`` increments of one key end at exactly 6,000 on every
shared backend; 4 processes racing ``add`` on the same 300 keys create each key
exactly once; ``local`` (per-process dicts) visibly fails both, as the control should.
Stores come from conftest's ``store_factory``, as in the contract suite.
"""
from __future__ import annotations

import json
import os
import select
import signal
import time
from typing import Any, Callable, Optional

import pytest

from backends.base import Store
from tests.backends.test_contract import NAMES

SHARED = [n for n in NAMES if n != "local"]
PROCS = 4
INCREMENTS = 1500
KEYS = 300


def fork_all(count: int, body: Callable[[int], Any], timeout: float = 90.0) -> list[Any]:
    """Fork ``count`` children that start together and run ``body(i)``; their JSON results.

    A child that raises reports the exception, which fails the test here.
    """
    go_r, go_w = os.pipe()
    children = []
    for i in range(count):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            _run_child(i, body, go_r, go_w, r, w)
        os.close(w)
        children.append((pid, r))
    os.close(go_r)
    os.write(go_w, b"g" * count)   # one byte each: release them at once
    os.close(go_w)
    return _collect(children, timeout)


def _run_child(i: int, body: Callable[[int], Any], go_r: int, go_w: int, r: int, w: int) -> None:
    code = 1
    try:
        os.close(go_w)
        os.close(r)
        os.read(go_r, 1)
        try:
            out = {"ok": body(i)}
        except BaseException as exc:  # reported to the parent, which fails the test
            out = {"error": f"child {i}: {exc!r}"}
        data = json.dumps(out).encode()
        while data:
            data = data[os.write(w, data):]
        code = 0
    finally:
        os._exit(code)


def _collect(children: list[tuple[int, int]], timeout: float) -> list[Any]:
    buffers = {r: b"" for _, r in children}
    open_fds = set(buffers)
    deadline = time.monotonic() + timeout
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_fds), [], [], 0.5)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                buffers[fd] += chunk
            else:
                open_fds.discard(fd)
                os.close(fd)
    for pid, _ in children:
        if open_fds:
            _kill_quietly(pid)
        os.waitpid(pid, 0)
    assert not open_fds, f"children still running after {timeout} s"
    results = [json.loads(buffers[r] or b'{"error": "no result (child died)"}') for _, r in children]
    errors = [res["error"] for res in results if "error" in res]
    assert not errors, errors
    return [res["ok"] for res in results]


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def increment(old: Optional[bytes]) -> bytes:
    return b"1" if old is None else str(int(old) + 1).encode()


def hammer_counter(store: Store) -> list[Optional[str]]:
    def body(i: int) -> Optional[str]:
        store.connect()   # after fork, as a worker does
        for _ in range(INCREMENTS):
            store.update(b"counter", increment)
        last = store.get(b"counter")
        return last.decode() if last is not None else None
    return fork_all(PROCS, body)


def race_adds(store: Store) -> list[list[int]]:
    def body(i: int) -> list[int]:
        store.connect()
        return [k for k in range(KEYS) if store.add(b"dlg:%d" % k, b"winner-%d" % i, ttl=300)]
    return fork_all(PROCS, body)


@pytest.mark.parametrize("name", SHARED)
def test_four_processes_update_one_key_to_exactly_6000(name: str, store_factory) -> None:
    store = store_factory(name)
    assert store.shared
    store.put(b"counter", b"0")
    last_seen = hammer_counter(store)
    assert store.get(b"counter") == b"%d" % (PROCS * INCREMENTS)
    assert all(INCREMENTS <= int(v) <= PROCS * INCREMENTS for v in last_seen), last_seen


@pytest.mark.parametrize("name", SHARED)
def test_four_processes_racing_add_create_each_key_once(name: str, store_factory) -> None:
    store = store_factory(name)
    won = race_adds(store)
    assert sum(len(w) for w in won) == KEYS, [len(w) for w in won]
    assert set().union(*won) == set(range(KEYS))
    for i, keys in enumerate(won):
        for k in keys:
            assert store.get(b"dlg:%d" % k) == b"winner-%d" % i
    assert store.count() == KEYS


def test_local_is_not_shared_and_fails_both_checks(store_factory) -> None:
    store = store_factory("local")
    assert not store.shared
    store.put(b"counter", b"0")
    last_seen = hammer_counter(store)
    # Each process counted only its own increments in its own dict.
    assert last_seen == [str(INCREMENTS)] * PROCS
    assert store.get(b"counter") != b"%d" % (PROCS * INCREMENTS)
    won = race_adds(store)
    assert sum(len(w) for w in won) == PROCS * KEYS   # every process "created" every key
    assert store.count() != KEYS
