"""The one frozen configuration object of `harness serve`, built at the CLI edge.

Everything below the CLI (master, worker, UAS) reads only this object; nothing
reads globals or environment variables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from harness.errors import InvalidInput

# Worker exit status meaning "could not start" (store.connect failed, ...):
# the master stops instead of respawning forever before it is ready.
EXIT_WORKER_BOOT = 4


@dataclass(frozen=True)
class ServerConfig:
    """How one `harness serve` runs.

    ``options`` are the backend's ``--opt k=v`` pairs as a tuple of (key, value)
    so the object stays hashable and immutable. Times are seconds.
    """

    backend: str = "local"
    options: tuple[tuple[str, str], ...] = ()
    workers: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    timeout: float = 10.0          # heartbeat age after which a worker is killed
    idle_timeout: float = 30.0     # an idle connection is closed after this
    graceful_timeout: float = 10.0  # SIGTERM: how long workers may take to finish
    send_100: bool = True
    send_180: bool = True
    backlog: int = 2048
    retry_after: int = 5           # Retry-After of the 503 sent when the store fails
    max_line: int = 8192
    max_headers: int = 100
    max_size: int = 65536

    @property
    def store_options(self) -> dict[str, str]:
        return dict(self.options)

    @property
    def heartbeat_interval(self) -> float:
        """How often a worker stamps its heartbeat: several stamps per timeout."""
        return max(0.05, min(1.0, self.timeout / 4))


def _number(name: str, raw: Any, kind: type, minimum: float, maximum: Optional[float] = None) -> Any:
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"--{name} {raw!r}: expected a {kind.__name__}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise InvalidInput(f"--{name} {raw!r}: must be at least {minimum}{upper}")
    return value


def build_config(*, backend: str, options: Mapping[str, str], workers: Any, host: str, port: Any,
                 timeout: Any = 10.0, idle_timeout: Any = 30.0, graceful_timeout: Any = 10.0,
                 send_100: bool = True, send_180: bool = True) -> ServerConfig:
    """Validate raw command-line values; InvalidInput (one line, exit 2) names the bad one."""
    if not host:
        raise InvalidInput("--host: must not be empty")
    return ServerConfig(
        backend=backend, options=tuple(sorted(options.items())),
        workers=_number("workers", workers, int, 1, 256),
        host=host, port=_number("port", port, int, 0, 65535),
        timeout=_number("timeout", timeout, float, 0.5),
        idle_timeout=_number("idle-timeout", idle_timeout, float, 0.1),
        graceful_timeout=_number("graceful-timeout", graceful_timeout, float, 0.0),
        send_100=send_100, send_180=send_180)
