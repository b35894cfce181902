"""The Store contract every shared-state backend implements, its errors, and the registry.

Lifecycle of one store in one run::

    store = backends.create("lmdb", path="/dev/shm/x", fsync=False)   # parent, unprepared
    store.prepare()            # parent, before fork: create segment / env / dir / schema
    ... fork workers ...
    store.connect()            # each worker, after fork: open handles, sockets, lock files
    store.get / add / put / update / delete / count
    store.close()              # each worker, on exit
    store.destroy()            # parent, after the run: remove what prepare() created

Keys and values are bytes; records are small (200-500 B). ``ttl`` is seconds
(int or float) or None for no expiry; an expired record counts as absent.

Expected outcomes on the hot path are return values (``add`` -> False when the
key exists, ``get`` -> None when absent). Exceptions are for the unexpected:

* :class:`ConfigError`      bad options (raised by ``create`` / ``prepare``)
* :class:`MissingDependency` the client library of the backend is not installed
* :class:`StoreUnavailable` the backend failed or is unreachable at run time;
  the SIP server answers 503 and the worker lives on
* :class:`StoreFull`        capacity exhausted (table full, value too large)

Backends do protocol work only: timing, counting and logging live in the
harness around them.
"""
from __future__ import annotations

import importlib
import inspect
import types
import typing
from typing import Any, Callable, ClassVar, Iterable, Mapping, Optional

UpdateFn = Callable[[Optional[bytes]], Optional[bytes]]


class StoreError(Exception):
    """Base of every error a store raises."""


class ConfigError(StoreError, ValueError):
    """Invalid backend name or option; the message names the option and what is allowed."""


class MissingDependency(StoreError, ImportError):
    """The backend's client library is absent; the message names the extra to install."""


class StoreUnavailable(StoreError):
    """The backend failed or could not be reached while serving a request."""


class StoreFull(StoreError):
    """No room for the record: the table is full or the value is larger than a slot."""


# name -> "module:Class"; imported only when chosen (gunicorn's workers/__init__.py).
BACKENDS: dict[str, str] = {
    "local": "backends.local:LocalStore",
    "shm": "backends.shm:ShmStore",
    "lmdb": "backends.lmdb:LmdbStore",
    "files": "backends.files:FilesStore",
    "sqlite": "backends.sqlite:SqliteStore",
    "redis": "backends.redis:RedisStore",
    "memcached": "backends.memcached:MemcachedStore",
    "ultradict": "backends.ultradict:UltraDictStore",
}


class Store:
    """Small base class: subclasses implement the single-key methods.

    Subclass contract:

    * ``__init__`` takes keyword-only options with type annotations and defaults;
      every backend accepts ``fsync`` and ``eatmydata`` (handled here).
      ``create()`` coerces string options (from ``--opt k=v`` or YAML) using those
      annotations, and rejects unknown options with :class:`ConfigError`.
    * ``shared`` tells whether separate processes see one another's writes.
    * ``service`` names the server process the backend needs (``"redis"``,
      ``"memcached"``) when the user gave no ``url`` / ``servers``; None otherwise.
    """

    name: ClassVar[str] = "?"
    shared: ClassVar[bool] = True
    service: ClassVar[Optional[str]] = None
    # Extra providing the client library, named in MissingDependency messages.
    extra: ClassVar[Optional[str]] = None

    def __init__(self, *, fsync: bool = False, eatmydata: bool = False) -> None:
        self.fsync = bool(fsync)
        self.eatmydata = bool(eatmydata)

    # ---- lifecycle -------------------------------------------------------
    def prepare(self) -> None:
        """In the parent before fork: create what the workers will open."""

    def connect(self) -> None:
        """In each worker after fork: open handles, connections, lock files."""

    def close(self) -> None:
        """In each worker: release what connect() opened. Idempotent."""

    def destroy(self) -> None:
        """In the parent after the run: remove what prepare() created. Idempotent."""

    # ---- single-key operations (subclasses implement) ---------------------
    def get(self, key: bytes) -> Optional[bytes]:
        """The value, or None if absent or expired."""
        raise NotImplementedError

    def add(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> bool:
        """Atomically create ``key`` if absent (or expired). True if this call created it."""
        raise NotImplementedError

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        """Unconditional write."""
        raise NotImplementedError

    def update(self, key: bytes, fn: UpdateFn, ttl: Optional[float] = None) -> Optional[bytes]:
        """Atomic read-modify-write: ``new = fn(old or None)``; None deletes. Returns new.

        ``fn`` may be called more than once (optimistic backends retry), so it
        must be a pure function of its argument.
        """
        raise NotImplementedError

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True if it existed (and had not expired)."""
        raise NotImplementedError

    def count(self) -> int:
        """Number of live keys (for audits; may be slow)."""
        raise NotImplementedError

    # ---- bulk helpers, built on the single-key methods ---------------------
    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, Optional[bytes]]:
        return {k: self.get(k) for k in keys}

    def put_many(self, items: Mapping[bytes, bytes], ttl: Optional[float] = None) -> None:
        for k, v in items.items():
            self.put(k, v, ttl)

    def delete_many(self, keys: Iterable[bytes]) -> int:
        return sum(1 for k in keys if self.delete(k))

    # ---- introspection ----------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Backend-specific counters (repairs, retries, ...) for results; {} by default."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Resolved options, for the manifest. Subclasses extend."""
        return {"backend": self.name, "fsync": self.fsync, "eatmydata": self.eatmydata,
                "shared": self.shared}

    def data_paths(self) -> list[str]:
        """Directories/files holding data, so the manifest can record their filesystem."""
        return []

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve(name: str) -> type[Store]:
    """The Store class for a registered name or a dotted path ``pkg.mod:Class``."""
    target = BACKENDS.get(name)
    if target is None:
        if ":" not in name and "." not in name:
            allowed = ", ".join(sorted(BACKENDS))
            raise ConfigError(f"unknown backend {name!r}; allowed: {allowed}, or a dotted path module:Class")
        target = name
    if ":" in target:
        modname, _, clsname = target.partition(":")
    else:
        modname, _, clsname = target.rpartition(".")
    try:
        module = importlib.import_module(modname)
    except MissingDependency:
        raise
    except ImportError as exc:
        if name in BACKENDS and exc.name != modname:
            raise MissingDependency(f"backend {name!r} needs a library that is not installed ({exc.name or exc}); "
                                    f"install it with: pip install 'sipstate[{name}]'") from exc
        raise ConfigError(f"cannot import backend module {modname!r}: {exc}") from exc
    cls = getattr(module, clsname, None)
    if not (isinstance(cls, type) and issubclass(cls, Store)):
        raise ConfigError(f"{target!r} is not a backends.base.Store subclass")
    return cls


def option_types(cls: type[Store]) -> dict[str, tuple[Any, Any]]:
    """Keyword options the class accepts: name -> (annotation, default), base class included."""
    out: dict[str, tuple[Any, Any]] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" not in vars(klass) or not issubclass(klass, Store):
            continue
        hints = typing.get_type_hints(klass.__init__)
        for pname, param in inspect.signature(klass.__init__).parameters.items():
            if param.kind is param.KEYWORD_ONLY:
                out[pname] = (hints.get(pname, str), param.default)
    return out


def _coerce(name: str, backend: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        return _coerce(name, backend, value, args[0])
    if not isinstance(value, str):
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if origin is list and isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        if annotation in (int, float, bool, str) and not isinstance(value, annotation):
            raise ConfigError(f"backend {backend!r} option {name!r}: {value!r} is not a {annotation.__name__}")
        return value
    try:
        if annotation is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            return int(value.replace("_", ""), 0)
        if annotation is float:
            return float(value)
        if origin is list:
            return [v.strip() for v in value.split(",") if v.strip()]
    except ValueError:
        kind = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"backend {backend!r} option {name!r}: {value!r} is not a valid {kind}") from None
    return value


def create(name: str, **options: Any) -> Store:
    """An unprepared Store of backend ``name``; string options are coerced to the declared types."""
    cls = resolve(name)
    accepted = option_types(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = ", ".join(sorted(accepted))
        raise ConfigError(f"backend {name!r}: unknown option {unknown[0]!r}; allowed: {allowed}")
    kwargs = {k: _coerce(k, name, v, accepted[k][0]) for k, v in options.items()}
    return cls(**kwargs)


def parse_opts(pairs: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` from the command line -> dict; ConfigError on a pair without '='."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--opt {pair!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out
