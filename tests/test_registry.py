"""The backend registry and option coercion of backends/base.py."""
from __future__ import annotations

import sys
import types

import pytest

import backends
from backends.base import BACKENDS, ConfigError, MissingDependency, Store, create, parse_opts, resolve


def test_every_registered_name_resolves_to_a_store_subclass():
    for name in BACKENDS:
        try:
            cls = resolve(name)
        except MissingDependency:
            continue  # an optional client library may be absent; its message is tested below
        assert issubclass(cls, Store)


def test_unknown_backend_names_the_allowed_ones():
    with pytest.raises(ConfigError) as exc:
        create("nosuch")
    assert "nosuch" in str(exc.value) and "lmdb" in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_option_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"backend 'local': unknown option 'colour'; allowed: eatmydata, fsync"):
        create("local", colour="red")


@pytest.mark.parametrize("raw,expected", [("true", True), ("off", False), ("1", True), ("No", False)])
def test_bool_options_are_coerced_from_strings(raw, expected):
    assert create("local", fsync=raw).fsync is expected


def test_bad_bool_option_names_option_and_value():
    with pytest.raises(ConfigError, match=r"option 'fsync': 'maybe' is not a valid bool"):
        create("local", fsync="maybe")


class _Typed(Store):
    name = "typed"

    def __init__(self, *, size: int = 1, ratio: float = 0.5, servers: list[str] | None = None,
                 path: str | None = None, fsync: bool = False, eatmydata: bool = False) -> None:
        super().__init__(fsync=fsync, eatmydata=eatmydata)
        self.size, self.ratio, self.servers, self.path = size, ratio, servers, path


def _install_typed(monkeypatch) -> str:
    mod = types.ModuleType("sipstate_test_typed")
    mod.Typed = _Typed
    monkeypatch.setitem(sys.modules, "sipstate_test_typed", mod)
    return "sipstate_test_typed:Typed"


def test_out_of_tree_backend_by_dotted_path_with_typed_options(monkeypatch):
    dotted = _install_typed(monkeypatch)
    store = create(dotted, size="0x10", ratio="2", servers="a:1, b:2", path="none")
    assert (store.size, store.ratio, store.servers, store.path) == (16, 2.0, ["a:1", "b:2"], None)
    assert create(dotted, size=3, ratio=1).ratio == 1.0


def test_bad_int_option(monkeypatch):
    dotted = _install_typed(monkeypatch)
    with pytest.raises(ConfigError, match=r"option 'size': 'big' is not a valid int"):
        create(dotted, size="big")


def test_dotted_path_that_is_not_a_store(monkeypatch):
    monkeypatch.setitem(sys.modules, "sipstate_test_notstore", types.ModuleType("x"))
    with pytest.raises(ConfigError, match="not a backends.base.Store subclass"):
        resolve("sipstate_test_notstore:Nothing")


def test_missing_client_library_names_the_extra(monkeypatch):
    mod_name = "sipstate_test_needs_lib"
    monkeypatch.setitem(BACKENDS, "needslib", f"{mod_name}:X")

    def failing_import(name, *a, **k):
        raise ModuleNotFoundError("No module named 'fancyclient'", name="fancyclient")

    monkeypatch.setattr(backends.base.importlib, "import_module", failing_import)
    with pytest.raises(MissingDependency, match=r"pip install 'sipstate\[needslib\]'"):
        resolve("needslib")


def test_parse_opts():
    assert parse_opts(["a=1", "path=/x=y"]) == {"a": "1", "path": "/x=y"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_opts(["novalue"])


def test_local_is_not_shared_and_honours_ttl():
    store = create("local")
    store.prepare()
    store.connect()
    assert store.shared is False
    assert store.add(b"k", b"v", ttl=0.05) is True
    assert store.add(b"k", b"w") is False
    import time
    time.sleep(0.08)
    assert store.get(b"k") is None and store.add(b"k", b"w") is True
    assert store.update(b"k", lambda old: None) is None and store.count() == 0
