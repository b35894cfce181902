"""The load generator's frozen configuration, built once at the CLI edge.

Rates and concurrency are totals for the whole generator; ``share(i)`` gives the
part of generator process ``i``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

from harness.errors import InvalidInput

FLOWS: tuple[str, ...] = ("invite", "register", "options")
MODES: tuple[str, ...] = ("open", "closed")
ARRIVALS: tuple[str, ...] = ("constant", "poisson")
OPEN_SLOT_S = 0.05   # default open-loop slots: this many seconds of calls at the rate


@dataclass(frozen=True)
class LoadConfig:
    """Everything one `harness load` run needs; see ``harness load --help`` for meanings."""

    host: str
    port: int
    rate: float = 100.0
    duration: float = 10.0
    warmup: float = 0.0
    connections: int = 8            # per generator process
    procs: int = 1
    mode: str = "open"
    concurrency: Optional[int] = None   # open: cap on transactions awaiting answers; closed: calls
    mix: tuple[tuple[str, float], ...] = (("invite", 1.0),)
    hold: float = 0.0
    cross_connection: float = 1.0
    timeout: float = 5.0
    arrival: str = "constant"
    seed: Optional[int] = None
    live: bool = False
    proc_index: int = 0
    start_offset: float = 0.0       # this process's phase in a constant schedule (seconds)

    def share(self, index: int) -> "LoadConfig":
        """The configuration of generator process ``index`` of ``procs``."""
        rate = self.rate / self.procs
        conc = self.total_concurrency()
        per = max(1, conc // self.procs + (1 if index < conc % self.procs else 0)) if conc else 0
        offset = index / self.rate if self.rate > 0 else 0.0
        seed = None if self.seed is None else self.seed * 1000 + index
        return replace(self, rate=rate, concurrency=per, proc_index=index,
                       start_offset=offset, seed=seed)

    def total_concurrency(self) -> int:
        """Open: transactions awaiting answers (0 = unlimited). Closed: calls in flight."""
        if self.concurrency is not None:
            return self.concurrency
        if self.mode == "open" and self.rate > 0:
            # one per connection (as wrk2), and at least 50 ms worth of calls at the rate
            per_proc = max(self.connections, math.ceil(self.rate / self.procs * OPEN_SLOT_S))
            return per_proc * self.procs
        return self.connections * self.procs

    def interval(self) -> float:
        """Mean seconds between call starts of the whole generator (inf without a rate)."""
        return 1.0 / self.rate if self.rate > 0 else math.inf


def parse_target(text: str) -> tuple[str, int]:
    """'H:P' -> (host, port); InvalidInput names --target and the allowed form."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"--target: {text!r} is not HOST:PORT (port 1..65535)")
    return host, int(port)


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """'invite=1,register=0.2' -> ((invite, 1.0), (register, 0.2)); weights >= 0, sum > 0."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        if name not in FLOWS or not sep:
            raise InvalidInput(f"--mix: {part!r}: expected FLOW=WEIGHT with FLOW one of "
                               f"{', '.join(FLOWS)}")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not value >= 0 or math.isinf(value):
            raise InvalidInput(f"--mix: {part!r}: weight must be a number >= 0")
        mix[name] = value
    if sum(mix.values()) <= 0:
        raise InvalidInput(f"--mix: {text!r}: at least one weight must be > 0")
    return tuple((k, v) for k, v in mix.items() if v > 0)


def validate(cfg: LoadConfig) -> LoadConfig:
    """Raise InvalidInput (one line naming the option) for values out of range."""
    checks = [
        ("--rate", cfg.rate, cfg.rate > 0 or (cfg.mode == "closed" and cfg.rate >= 0), "> 0"),
        ("--duration", cfg.duration, 0 < cfg.duration <= 86400, "in (0, 86400]"),
        ("--warmup", cfg.warmup, 0 <= cfg.warmup <= 3600, "in [0, 3600]"),
        ("--connections", cfg.connections, 1 <= cfg.connections <= 10000, "in [1, 10000]"),
        ("--procs", cfg.procs, 1 <= cfg.procs <= 256, "in [1, 256]"),
        ("--mode", cfg.mode, cfg.mode in MODES, "one of " + "|".join(MODES)),
        ("--arrival", cfg.arrival, cfg.arrival in ARRIVALS, "one of " + "|".join(ARRIVALS)),
        ("--hold", cfg.hold, 0 <= cfg.hold <= 3600, "in [0, 3600]"),
        ("--cross-connection", cfg.cross_connection, 0 <= cfg.cross_connection <= 1,
         "in [0, 1]"),
        ("--timeout", cfg.timeout, 0 < cfg.timeout <= 600, "in (0, 600]"),
    ]
    for option, value, ok, allowed in checks:
        if not ok or (isinstance(value, float) and math.isnan(value)):
            raise InvalidInput(f"{option}: {value!r} is not allowed; must be {allowed}")
    conc = cfg.concurrency
    if conc is not None and not (0 <= conc <= 1_000_000):
        raise InvalidInput(f"--concurrency: {conc!r} is not allowed; must be in [0, 1000000]")
    if cfg.mode == "closed" and cfg.total_concurrency() < cfg.procs:
        raise InvalidInput(f"--concurrency: {conc!r}: closed mode needs at least one call "
                           f"per generator process ({cfg.procs})")
    return cfg
