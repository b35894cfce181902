"""Scenario files: YAML -> validated, frozen :class:`Scenario` -> the matrix of :class:`RunSpec`.

A scenario file (read with ``yaml.safe_load``)::

    name: invite_storm                  # [A-Za-z0-9_-]+, names the results folder
    description: one line or more
    server:  {workers: [1, 2], timeout: 10, send_100: true, send_180: true}
    backends:                           # a list of entries; each entry is either
      - name: lmdb                      #   one backend ...
        options: {map_size: 268435456}  #   (store options, as ``--opt k=v`` of harness serve)
        fsync: [true, false]            #   bool or list of bools
        eatmydata: false                #   bool or list of bools
        storage: memory                 #   memory (/dev/shm, default) | disk (disk_dir)
        label: lmdb-big                 #   optional: the "backend" column (default: name)
      - names: [local, shm, redis]      #   ... or a product over several names
        fsync: [true, false]
    load: {generator: builtin, mode: open, rate: 300, duration: 10, warmup: 2, ...}
    repeat: 1
    cpu: {server: [0], generator: [1], service: [1]}   # sched_setaffinity of each component
    output: results                     # results root (``--output`` overrides)
    disk_dir: /var/tmp                  # where ``storage: disk`` runs keep their data

Durability variants apply only where they mean something: ``fsync`` and
``eatmydata`` are meaningful for the backends in :data:`DURABLE` (and for
out-of-tree backends), and ``eatmydata`` only together with ``fsync: true``.
In a product entry (``names:``) meaningless combinations are dropped; in a
single-name entry they are an error, since the user asked for something that
cannot happen.

Every mistake raises :class:`harness.errors.InvalidInput` with one line:
``FILE: PATH: got VALUE; allowed: WHAT`` (PATH like ``backends[2].options.sync``).
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import InvalidInput
from harness.scenario_errors import format_error, reject_duplicate_keys, short, type_name

DURABLE = frozenset({"lmdb", "files", "sqlite", "redis"})
TRANSACTIONS = ("invite", "register", "options")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
SERVICE_OPTIONS = ("url", "servers")


def _as_list(value: Any) -> Any:
    """Scalars become one-element lists, so ``workers: 2`` and ``workers: [1, 2]`` both work."""
    return value if isinstance(value, (list, tuple)) else [value]


def _cpu_list(value: Any) -> Any:
    """CPU lists: ``1``, ``[0, 1]`` or ``"0-1,3"``."""
    if isinstance(value, str):
        cpus: list[Any] = []
        for part in value.split(","):
            lo, sep, hi = part.strip().partition("-")
            if not lo.isdigit() or (sep and not hi.isdigit()):
                raise ValueError(f"{value!r} is not a CPU list like 0-1,3")
            cpus.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        return cpus
    return _as_list(value)


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(Frozen):
    """Options of ``harness serve`` (workers may list several values: one matrix axis)."""

    workers: tuple[int, ...] = (2,)
    timeout: float = 10.0
    send_100: bool = True
    send_180: bool = True

    _workers_list = field_validator("workers", mode="before")(_as_list)

    @field_validator("workers")
    @classmethod
    def _check_workers(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(w < 1 or w > 256 for w in v):
            raise ValueError("worker counts between 1 and 256")
        return v

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("a number of seconds > 0")
        return v


class BackendEntry(Frozen):
    """One backend (``name``) or a product over several (``names``), with durability variants."""

    name: Optional[str] = None
    names: Optional[tuple[str, ...]] = None
    label: Optional[str] = None
    options: dict[str, Any] = {}
    fsync: tuple[bool, ...] = (False,)
    eatmydata: tuple[bool, ...] = (False,)
    storage: Literal["memory", "disk"] = "memory"

    _lists = field_validator("fsync", "eatmydata", "names", mode="before")(_as_list)

    @model_validator(mode="after")
    def _one_form(self) -> "BackendEntry":
        if (self.name is None) == (self.names is None):
            raise ValueError("exactly one of 'name' (one backend) or 'names' (a list)")
        if self.names is not None and (not self.names or self.label):
            raise ValueError("'names' must be a non-empty list and cannot have a 'label'")
        if self.label is not None and not NAME_RE.match(self.label):
            raise ValueError("a label made of letters, digits, '_' and '-'")
        if not self.fsync or not self.eatmydata:
            raise ValueError("fsync and eatmydata need at least one value")
        return self


class LoadConfig(Frozen):
    """Options of ``harness load`` (or the SIPp driver); ``rate``/``rates`` is a matrix axis."""

    generator: Literal["builtin", "sipp"] = "builtin"
    mode: Literal["open", "closed"] = "open"
    arrival: Literal["constant", "poisson"] = "constant"
    sipp_transport: Literal["tn", "t1"] = "tn"
    rate: Optional[float] = None
    rates: Optional[tuple[float, ...]] = None
    concurrency: Optional[int] = Field(None, ge=0)   # open: cap on transactions in flight (0 = none)
    duration: float = Field(10.0, gt=0)
    warmup: float = Field(2.0, ge=0)
    connections: int = Field(8, ge=1, le=10000)
    procs: int = Field(1, ge=1, le=64)
    mix: dict[str, float] = {"invite": 1.0}
    hold: float = Field(0.0, ge=0)
    cross_connection: float = Field(1.0, ge=0, le=1)
    timeout: float = Field(5.0, gt=0)

    @field_validator("rate")
    @classmethod
    def _check_rate(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and v <= 0:
            raise ValueError("calls per second > 0")
        return v

    @field_validator("rates")
    @classmethod
    def _check_rates(cls, v: Optional[tuple[float, ...]]) -> Optional[tuple[float, ...]]:
        if v is not None and (not v or any(r <= 0 for r in v)):
            raise ValueError("a non-empty list of calls per second, each > 0")
        return v

    @model_validator(mode="after")
    def _check(self) -> "LoadConfig":
        if self.rate is not None and self.rates is not None:
            raise ValueError("either 'rate' or 'rates', not both")
        if self.mode == "open" and self.rate is None and not self.rates:
            raise ValueError("mode open needs 'rate' (calls/s) or 'rates' (a list)")
        if self.mode == "closed" and not self.concurrency:
            raise ValueError("mode closed needs 'concurrency' (calls in flight, >= 1)")
        return self

    @field_validator("mix")
    @classmethod
    def _check_mix(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if k not in TRANSACTIONS]
        if bad:
            raise ValueError(f"mix key {bad[0]!r} is not a call flow; allowed: {', '.join(TRANSACTIONS)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("mix weights >= 0 with a positive sum")
        return v

    def rate_list(self) -> tuple[Optional[float], ...]:
        if self.rates:
            return self.rates
        return (self.rate,)

    def mix_arg(self) -> str:
        """The ``--mix`` argument of harness load: ``invite=1,register=0``."""
        return ",".join(f"{k}={_num(w)}" for k, w in self.mix.items())


class CpuPinning(Frozen):
    """CPU lists for each component (None: not pinned)."""

    server: Optional[tuple[int, ...]] = None
    generator: Optional[tuple[int, ...]] = None
    service: Optional[tuple[int, ...]] = None

    _lists = field_validator("server", "generator", "service", mode="before")(
        lambda v: None if v is None else _cpu_list(v))

    @field_validator("server", "generator", "service")
    @classmethod
    def _check_cpus(cls, v: Optional[tuple[int, ...]]) -> Optional[tuple[int, ...]]:
        usable = sorted(os.sched_getaffinity(0))
        if v is not None and (not v or any(c not in usable for c in v)):
            raise ValueError(f"CPUs of this machine ({', '.join(map(str, usable))})")
        return v


class Scenario(Frozen):
    name: str
    description: str = ""
    server: ServerConfig = ServerConfig()
    backends: tuple[BackendEntry, ...]
    load: LoadConfig
    repeat: int = Field(1, ge=1, le=1000)
    cpu: CpuPinning = CpuPinning()
    output: str = "results"
    disk_dir: str = "/var/tmp"

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("a name made of letters, digits, '_' and '-'")
        return v

    @field_validator("backends")
    @classmethod
    def _check_backends(cls, v: tuple[BackendEntry, ...]) -> tuple[BackendEntry, ...]:
        if not v:
            raise ValueError("a non-empty list of backends")
        return v


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix: everything the runner needs for one run."""

    index: int
    run_id: str
    repeat: int
    backend: str              # the "backend" column: the entry's label, else the store name
    store: str                # registry name or dotted path given to backends.create
    options: dict             # store options (without fsync / eatmydata)
    fsync: bool
    eatmydata: bool
    storage: str              # memory | disk
    workers: int
    rate: Optional[float]     # calls/s target (None in closed mode)
    generator: str
    server: ServerConfig
    load: LoadConfig
    cpu: CpuPinning

    def label(self) -> str:
        """Short human description for progress lines."""
        dur = ("+fsync" if self.fsync else "") + ("+eatmydata" if self.eatmydata else "")
        rate = f"{_num(self.rate)}/s" if self.rate is not None else f"c={self.load.concurrency}"
        return f"{self.backend}{dur} w{self.workers} {rate} #{self.repeat}"

    def filter_values(self) -> dict[str, Any]:
        """The values ``--only`` can select on."""
        return {"backend": self.backend, "store": self.store, "workers": self.workers,
                "fsync": self.fsync, "eatmydata": self.eatmydata, "rate": self.rate,
                "repeat": self.repeat, "generator": self.generator, "storage": self.storage}


def _num(x: Optional[float]) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


# --------------------------------------------------------------------------- reading
def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario file; InvalidInput (one line) on any mistake."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
        reject_duplicate_keys(path, yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(f"{path}: {where}not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected a mapping of keys (name, backends, load, ...), "
                           f"got {type(data).__name__}")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(format_error(path, data, exc, Scenario)) from None
    check_backends(path, scenario)
    return scenario


def check_backends(path: Path, scenario: Scenario) -> None:
    """Backend names and options, checked with the registry (``backends.create``)."""
    from backends.base import BACKENDS, ConfigError, MissingDependency, create

    for i, entry in enumerate(scenario.backends):
        for name in entry.names or (entry.name,):
            where = f"backends[{i}]" + (f".names[{entry.names.index(name)}]" if entry.names else ".name")
            if name not in BACKENDS and ":" not in name:
                raise InvalidInput(f"{path}: {where}: got {name!r}; allowed: "
                                   f"{', '.join(BACKENDS)}, or a dotted path module:Class")
            for key in ("fsync", "eatmydata"):
                if key in entry.options:
                    raise InvalidInput(f"{path}: backends[{i}].options.{key}: got {entry.options[key]!r}; "
                                       f"allowed: set '{key}' next to 'options', not inside")
            try:
                create(name, **entry.options)
            except MissingDependency:
                continue  # reported per run as skipped, with the install command
            except (ConfigError, ValueError, TypeError) as exc:
                raise InvalidInput(_option_error(path, i, name, entry, str(exc))) from None
        _check_durability(path, i, entry)


def _option_error(path: Path, i: int, name: str, entry: BackendEntry, message: str) -> str:
    """``FILE: backends[i].options.KEY: got V; <the registry's message>; allowed: <type>``."""
    from backends.base import option_types, resolve

    match = re.search(r"option '([^']+)'", message)
    key = match.group(1) if match else None
    where = f"backends[{i}].options" + (f".{key}" if key else "")
    got = f"got {short(entry.options[key])}; " if key in entry.options else ""
    if "allowed" not in message:
        accepted = option_types(resolve(name))
        if key in accepted:
            message += f"; allowed: {type_name(accepted[key][0])}"
        else:
            message += f"; allowed: {', '.join(sorted(accepted))}"
    return f"{path}: {where}: {got}{message}"


def _check_durability(path: Path, i: int, entry: BackendEntry) -> None:
    """A single-name entry asking for a durability variant that cannot happen is an error."""
    if entry.name is None:
        return
    if not is_durable(entry.name) and (any(entry.fsync) or any(entry.eatmydata)):
        key = "fsync" if any(entry.fsync) else "eatmydata"
        raise InvalidInput(f"{path}: backends[{i}].{key}: got true; allowed: false, because backend "
                           f"{entry.name!r} keeps no data on disk (durable backends: {', '.join(sorted(DURABLE))})")
    if any(entry.eatmydata) and not any(entry.fsync):
        raise InvalidInput(f"{path}: backends[{i}].eatmydata: got true; allowed: false unless fsync "
                           f"includes true (eatmydata only removes fsync calls)")


def is_durable(name: str) -> bool:
    """Whether fsync / eatmydata change anything for backend ``name``."""
    return name in DURABLE or ":" in name or ("." in name and name not in DURABLE)


# --------------------------------------------------------------------------- the matrix
def durability_variants(name: str, entry: BackendEntry) -> list[tuple[bool, bool]]:
    """(fsync, eatmydata) pairs of ``entry`` that mean something for backend ``name``."""
    if not is_durable(name):
        return [(False, False)]
    pairs = [(f, e) for f in entry.fsync for e in entry.eatmydata if f or not e]
    return list(dict.fromkeys(pairs)) or [(False, False)]


def expand(scenario: Scenario) -> list[RunSpec]:
    """Every run of the scenario. Repeats are the outer loop so that each repeat sweeps
    the whole matrix once (slow drift of a shared machine spreads over all cells)."""
    cells = []
    for entry in scenario.backends:
        for name in entry.names or (entry.name,):
            for fsync, emd in durability_variants(name, entry):
                for workers in scenario.server.workers:
                    for rate in scenario.load.rate_list():
                        cells.append((entry, name, fsync, emd, workers, rate))
    specs = []
    for repeat in range(1, scenario.repeat + 1):
        for entry, name, fsync, emd, workers, rate in cells:
            index = len(specs) + 1
            backend = entry.label or name
            specs.append(RunSpec(
                index=index, run_id=make_run_id(index, backend, fsync, emd, workers, rate, repeat),
                repeat=repeat, backend=backend, store=name, options=dict(entry.options), fsync=fsync,
                eatmydata=emd, storage=entry.storage, workers=workers, rate=rate,
                generator=scenario.load.generator, server=scenario.server, load=scenario.load,
                cpu=scenario.cpu))
    return specs


def make_run_id(index: int, backend: str, fsync: bool, emd: bool, workers: int,
                rate: Optional[float], repeat: int) -> str:
    """``007-lmdb-fsync-w2-300cps-r1``: unique, readable, no dots (hgrm file names split on dots)."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", backend)
    dur = ("-fsync" if fsync else "") + ("-eatmydata" if emd else "")
    load = f"{_num(rate).replace('.', 'p')}cps" if rate is not None else "closed"
    return f"{index:03d}-{safe}{dur}-w{workers}-{load}-r{repeat}"


def parse_only(text: str) -> dict[str, list[str]]:
    """``backend=redis,workers=2`` -> {key: [values]}; a key given twice means either value."""
    allowed = ("backend", "store", "workers", "fsync", "eatmydata", "rate", "repeat", "generator", "storage")
    out: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in allowed or not value.strip():
            raise InvalidInput(f"--only {part!r}: expected key=value with key one of {', '.join(allowed)}")
        out.setdefault(key, []).append(value.strip())
    if not out:
        raise InvalidInput("--only: expected key=value[,key=value...]")
    return out


def _matches(actual: Any, wanted: str, key: str) -> bool:
    if isinstance(actual, bool):
        low = wanted.lower()
        if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise InvalidInput(f"--only {key}={wanted}: allowed: true or false")
        return actual == (low in ("true", "1", "yes", "on"))
    if isinstance(actual, (int, float)) or key in ("rate", "workers", "repeat"):
        try:
            return actual is not None and float(actual) == float(wanted)
        except ValueError:
            raise InvalidInput(f"--only {key}={wanted}: allowed: a number") from None
    return str(actual) == wanted


def filter_specs(specs: list[RunSpec], only: dict[str, list[str]]) -> list[RunSpec]:
    """The specs matching every key of ``only`` (any of its values)."""
    return [s for s in specs
            if all(any(_matches(s.filter_values()[k], v, k) for v in vals) for k, vals in only.items())]
