"""The Store contract, written once and run against every backend in backends.base.BACKENDS.

Stores come from the fixture ``store_factory`` in tests/backends/conftest.py (owned by
SERVICES): ``factory(name, **options)`` returns a *prepared and connected* store, closed
and destroyed after the test; for redis / memcached it points the store at a real
redis-server / memcached that conftest starts on a free port.

Decision on the 64 KiB value for ``shm``: the default slot (1 KiB) cannot hold it,
so the default store raises StoreFull naming ``slot_size``; a store configured with
``slot_size=72 KiB`` stores and returns it. Both are asserted.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, Optional

import pytest

import backends
from backends.base import BACKENDS, ConfigError, MissingDependency, Store, StoreFull, resolve

NAMES = sorted(BACKENDS)
OURS = ("shm", "lmdb", "files", "sqlite")
# Client library each optional backend imports, and so the extra named when it is missing.
LIBRARIES = {"lmdb": "lmdb", "redis": "redis", "memcached": "pymemcache", "ultradict": "UltraDict"}
StoreFactory = Callable[..., Store]


@pytest.fixture(params=NAMES)
def store(request: pytest.FixtureRequest, store_factory: StoreFactory) -> Store:
    return store_factory(request.param)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# ---- semantics of every method ---------------------------------------------------
def test_get_of_an_absent_key_is_none(store: Store) -> None:
    assert store.get(b"absent") is None
    assert store.count() == 0


def test_add_creates_once_and_keeps_the_first_value(store: Store) -> None:
    assert store.add(b"dlg:1", b"first") is True
    assert store.add(b"dlg:1", b"second") is False
    assert store.get(b"dlg:1") == b"first"
    assert store.count() == 1


def test_put_overwrites_unconditionally(store: Store) -> None:
    store.put(b"k", b"one")
    store.put(b"k", b"two")
    assert store.get(b"k") == b"two"
    assert store.add(b"k", b"three") is False
    assert store.count() == 1


def test_update_creates_modifies_and_deletes(store: Store) -> None:
    seen: list[Optional[bytes]] = []

    def bump(old: Optional[bytes]) -> bytes:
        seen.append(old)
        return b"1" if old is None else str(int(old) + 1).encode()

    assert store.update(b"n", bump) == b"1"
    assert store.update(b"n", bump) == b"2"
    assert store.get(b"n") == b"2"
    assert seen[0] is None and seen[-1] == b"1"
    assert store.update(b"n", lambda old: None) is None     # None deletes
    assert store.get(b"n") is None and store.count() == 0
    assert store.update(b"never", lambda old: None) is None  # absent stays absent
    assert store.get(b"never") is None


def test_update_fn_that_raises_leaves_the_value(store: Store) -> None:
    store.put(b"k", b"kept")

    def boom(old: Optional[bytes]) -> bytes:
        raise RuntimeError("fn failed")

    with pytest.raises(RuntimeError, match="fn failed"):
        store.update(b"k", boom)
    assert store.get(b"k") == b"kept"
    assert store.update(b"k", lambda old: old + b"!") == b"kept!"   # and the key is not locked


def test_delete_reports_whether_the_key_existed(store: Store) -> None:
    store.put(b"k", b"v")
    assert store.delete(b"k") is True
    assert store.delete(b"k") is False
    assert store.get(b"k") is None
    assert store.add(b"k", b"again") is True


def test_count_and_bulk_helpers(store: Store) -> None:
    items = {b"key-%d" % i: b"value-%d" % i for i in range(50)}
    store.put_many(items)
    assert store.count() == 50
    got = store.get_many([b"key-0", b"key-49", b"missing"])
    assert got == {b"key-0": b"value-0", b"key-49": b"value-49", b"missing": None}
    assert store.delete_many([b"key-%d" % i for i in range(10)] + [b"missing"]) == 10
    assert store.count() == 40


# ---- expiry ------------------------------------------------------------------------
def test_expired_records_count_as_absent(store: Store) -> None:
    store.put(b"short", b"v", ttl=0.2)
    store.put(b"long", b"v", ttl=60)
    assert store.add(b"short-add", b"v", ttl=0.2) is True
    assert store.update(b"short-upd", lambda old: b"v", ttl=0.2) == b"v"
    assert store.get(b"short") == b"v" and store.count() == 4
    # Poll: memcached keeps whole seconds, so its expiry may take up to ~2 s.
    assert wait_until(lambda: store.get(b"short") is None, timeout=4.0), "ttl=0.2 never expired"
    assert wait_until(lambda: store.get(b"short-add") is None and store.get(b"short-upd") is None, 2.0)
    assert store.get(b"long") == b"v"
    assert store.count() == 1
    assert store.delete(b"short") is False                      # expired: did not exist
    assert store.update(b"short-upd", lambda old: old) is None  # fn saw None, stays absent
    assert store.add(b"short", b"new") is True                   # expired key can be created again
    assert store.get(b"short") == b"new"


def test_put_without_ttl_clears_an_earlier_ttl(store: Store) -> None:
    store.put(b"k", b"v", ttl=0.2)
    store.put(b"k", b"forever")
    time.sleep(0.3)
    assert store.get(b"k") == b"forever"


# ---- binary data and sizes -----------------------------------------------------------
def test_binary_keys_and_values_round_trip(store: Store) -> None:
    every_byte = bytes(range(256))
    keys = [every_byte, b"\x00", b"\xff\x00 \r\n:", b"a", b"A", b"a\x00", b"../../etc/passwd", b"k" * 200]
    for i, key in enumerate(keys):
        assert store.add(key, every_byte + bytes([i])) is True, key
    for i, key in enumerate(keys):
        assert store.get(key) == every_byte + bytes([i]), key
    assert store.count() == len(keys)
    assert store.get(every_byte[:-1]) is None
    assert store.update(b"\x00", lambda old: old[::-1]) == (every_byte + b"\x01")[::-1]
    assert store.delete(every_byte) is True and store.count() == len(keys) - 1


def test_empty_value_is_a_value_not_absence(store: Store) -> None:
    assert store.add(b"empty", b"") is True
    assert store.get(b"empty") == b""
    assert store.add(b"empty", b"x") is False


@pytest.mark.parametrize("name", NAMES)
def test_a_64_kib_value(name: str, store_factory: StoreFactory) -> None:
    """Every backend stores a 64 KiB value; shm needs a slot that big (see module docstring)."""
    value = os.urandom(64 * 1024)
    options = {"slots": 256, "stripes": 4, "slot_size": 72 * 1024} if name == "shm" else {}
    store = store_factory(name, **options)
    store.put(b"big", value)
    assert store.get(b"big") == value
    assert store.update(b"big", lambda old: old[:-1] + b"!") == value[:-1] + b"!"


def test_shm_default_slot_refuses_64_kib_clearly(store_factory: StoreFactory) -> None:
    store = store_factory("shm")
    with pytest.raises(StoreFull, match=r"exceeds the 992 bytes a slot holds; raise option 'slot_size'"):
        store.put(b"big", b"x" * 65536)
    with pytest.raises(StoreFull):
        store.update(b"k", lambda old: b"x" * 65536)
    assert store.get(b"big") is None and store.count() == 0


def test_shm_full_table_is_a_clear_error(store_factory: StoreFactory) -> None:
    store = store_factory("shm", slots=16, stripes=1, slot_size=64)
    for i in range(16):
        store.put(b"%d" % i, b"v")
    with pytest.raises(StoreFull, match=r"stripe 0 is full .*raise option 'slots'"):
        store.add(b"one-more", b"v")
    assert store.delete(b"3") and store.add(b"one-more", b"v")   # a tombstone is reused
    assert store.count() == 16


# ---- options -------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_one_clear_error(name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        backends.create(name, colour="blue")
    msg = str(exc.value)
    assert f"backend {name!r}: unknown option 'colour'; allowed:" in msg and "fsync" in msg and "\n" not in msg


@pytest.mark.parametrize("name", NAMES)
def test_badly_typed_fsync_is_one_clear_error(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"backend '{name}' option 'fsync': 'maybe' is not a valid bool$"):
        backends.create(name, fsync="maybe")


BAD_OPTIONS = [
    ("shm", {"slots": "100", "stripes": "64"}, "option 'slots'"),
    ("shm", {"slot_size": "100"}, "option 'slot_size'"),
    ("shm", {"slot_size": "32"}, "option 'slot_size'"),
    ("shm", {"stripes": "0"}, "option 'stripes'"),
    ("shm", {"slots": "many"}, "option 'slots': 'many' is not a valid int"),
    ("lmdb", {"map_size": "1000"}, "option 'map_size'"),
    ("lmdb", {"max_readers": "0"}, "option 'max_readers'"),
    ("lmdb", {"writemap": "sometimes"}, "option 'writemap'"),
    ("lmdb", {"path": "/etc/hostname"}, "option 'path'"),
    ("files", {"stripes": "0"}, "option 'stripes'"),
    ("files", {"path": "/etc/hostname"}, "option 'path'"),
    ("sqlite", {"busy_timeout_ms": "-1"}, "option 'busy_timeout_ms'"),
    ("sqlite", {"path": "/etc"}, "option 'path'"),
]


@pytest.mark.parametrize("name,options,fragment", BAD_OPTIONS,
                         ids=[f"{n}-{'-'.join(o)}" for n, o, _ in BAD_OPTIONS])
def test_bad_option_is_one_clear_error(name: str, options: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        backends.create(name, **options)
    msg = str(exc.value)
    assert fragment in msg and f"backend '{name}'" in msg and "\n" not in msg
    assert "allowed" in msg or "is not a valid" in msg


def test_files_refuses_a_directory_others_can_read(tmp_path) -> None:
    shared_dir = tmp_path / "open"
    shared_dir.mkdir(mode=0o755)
    shared_dir.chmod(0o755)
    store = backends.create("files", path=str(shared_dir))
    with pytest.raises(ConfigError, match=r"has mode 755; allowed: .*chmod 700"):
        store.prepare()


@pytest.mark.parametrize("name,library", sorted(LIBRARIES.items()))
def test_missing_library_names_the_extra(name: str, library: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in [m for m in sys.modules if m == library or m.startswith(library + ".")]:
        monkeypatch.setitem(sys.modules, module, None)      # makes `import library[.sub]` fail
    monkeypatch.setitem(sys.modules, library, None)
    monkeypatch.delitem(sys.modules, f"backends.{name}", raising=False)
    with pytest.raises(MissingDependency) as exc:
        backends.create(name)
    msg = str(exc.value)
    assert f"pip install 'sipstate[{name}]'" in msg and "\n" not in msg


# ---- lifecycle, introspection and safe defaults ------------------------------------------
def test_describe_is_json_and_names_the_backend(store: Store) -> None:
    info = store.describe()
    json.dumps(info)
    assert info["backend"] == store.name and info["fsync"] is False
    assert all(isinstance(p, str) for p in store.data_paths())
    assert all(isinstance(v, int) for v in store.stats().values())


@pytest.mark.parametrize("name", OURS)
def test_private_data_is_0700_and_0600_and_destroy_removes_it(name: str) -> None:
    store = backends.create(name)
    store.prepare()
    store.connect()
    store.put(b"k", b"v")
    created = _created_paths(store)
    try:
        for path in created:
            mode = os.stat(path).st_mode & 0o777
            assert mode == (0o700 if os.path.isdir(path) else 0o600), (path, oct(mode))
            if os.path.isdir(path):
                for entry in os.scandir(path):
                    if entry.is_file(follow_symlinks=False):
                        assert entry.stat().st_mode & 0o077 == 0, entry.path
    finally:
        store.close()
        store.destroy()
    assert not any(os.path.exists(p) for p in created)


def _created_paths(store: Store) -> list[str]:
    if store.name == "shm":
        return [f"/dev/shm/{store.segment_name}", store._dir]  # type: ignore[attr-defined]
    if store.name == "sqlite":
        return [os.path.dirname(store.path)]  # type: ignore[attr-defined]
    return [store.path]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["lmdb", "files", "sqlite"])
def test_a_named_path_is_used_and_kept(name: str, tmp_path) -> None:
    target = tmp_path / "state" / ("db.sqlite" if name == "sqlite" else "env")
    store = backends.create(name, path=str(target))
    store.prepare()
    store.connect()
    store.put(b"k", b"v")
    assert store.data_paths() and str(tmp_path) in store.data_paths()[0]
    store.close()
    again = backends.create(name, path=str(target))   # a second store on the same data sees it
    again.prepare()
    again.connect()
    assert again.get(b"k") == b"v"
    again.close()
    again.destroy()
    assert target.exists() or target.parent.exists()


def test_fsync_option_reaches_each_backends_knob() -> None:
    assert backends.create("lmdb", fsync=True).sync is True
    assert backends.create("lmdb", fsync=True, sync=False).sync is False
    assert backends.create("sqlite", fsync=True).describe()["synchronous"] == "FULL"
    assert backends.create("sqlite").describe()["synchronous"] == "OFF"
    assert backends.create("files", fsync="true").fsync is True
    assert backends.create("shm", eatmydata="yes").describe()["eatmydata"] is True


def test_stdlib_backends_need_no_extra() -> None:
    for name in ("local", "shm", "files", "sqlite"):
        assert resolve(name).extra is None


@pytest.mark.parametrize("name", OURS)
def test_sweep_removes_only_expired_records(name: str, store_factory: StoreFactory) -> None:
    store = store_factory(name)
    for i in range(20):
        store.put(b"short-%d" % i, b"v", ttl=0.1)
    store.put(b"long", b"v", ttl=60)
    store.put(b"forever", b"v")
    time.sleep(0.25)
    assert store.sweep() == 20  # type: ignore[attr-defined]
    assert store.sweep() == 0  # type: ignore[attr-defined]
    assert store.count() == 2 and store.get(b"long") == b"v"


def test_shm_table_matches_a_dict_under_random_operations(store_factory: StoreFactory) -> None:
    """A tiny table (2 stripes of 32 slots) under thousands of random add/put/update/delete:
    probing, tombstones and their reclamation never lose or invent a key."""
    import random
    rng = random.Random(7)
    store = store_factory("shm", slots=64, stripes=2, slot_size=64)
    model: dict[bytes, bytes] = {}
    for step in range(6000):
        key = b"k%d" % rng.randrange(40)
        value = b"%d" % step
        op = rng.choice(("add", "put", "update", "delete", "get"))
        if op == "add":
            assert store.add(key, value) == (key not in model)
            model.setdefault(key, value)
        elif op == "put":
            store.put(key, value)
            model[key] = value
        elif op == "update":
            new = None if rng.random() < 0.3 else value
            assert store.update(key, lambda old: new) == new
            model.pop(key, None) if new is None else model.__setitem__(key, new)
        elif op == "delete":
            assert store.delete(key) == (model.pop(key, None) is not None)
        assert store.get(key) == model.get(key), (step, op, key)
    assert store.count() == len(model)
    assert {k: store.get(k) for k in model} == model


@pytest.mark.parametrize("name", OURS)
def test_operations_with_fsync_on(name: str, store_factory: StoreFactory) -> None:
    store = store_factory(name, fsync=True)
    assert store.describe()["fsync"] is True
    assert store.add(b"k", b"v") is True
    assert store.update(b"k", lambda old: old + b"2") == b"v2"
    store.put(b"j", b"w", ttl=30)
    assert store.delete(b"k") is True and store.get(b"j") == b"w" and store.count() == 1


def test_shm_segment_is_out_of_the_resource_trackers_reach() -> None:
    """The creator exits without destroy(): a tracked segment would be unlinked (with a
    'leaked shared_memory' warning) by the tracker; ours must survive for the workers."""
    code = ("import backends; s = backends.create('shm', slots=64, stripes=1); s.prepare(); "
            "print(s.segment_name, s._dir)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60)
    name, lock_dir = proc.stdout.split()
    try:   # capture_output waited for the tracker too: it shares the stderr pipe
        assert os.path.exists(f"/dev/shm/{name}"), proc.stderr
        assert "leaked" not in proc.stderr and proc.returncode == 0, proc.stderr
    finally:
        os.unlink(f"/dev/shm/{name}")
        shutil.rmtree(lock_dir)
