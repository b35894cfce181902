"""Running the generator in one or several processes, and the live line.

With ``procs == 1`` the generator runs in the calling process. With more, each
process is forked, connects its own pool, reports ready, and starts at one
common monotonic instant (CLOCK_MONOTONIC is system-wide on Linux) sent by the
parent; each records its own HdrHistograms and sends them, encoded, with its
counters to the parent, which merges them (harness.loadgen.result).
"""
from __future__ import annotations

import asyncio
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import Callable, Optional, TextIO

from harness.errors import HarnessError
from harness.loadgen.config import LoadConfig
from harness.loadgen.engine import Generator

START_DELAY = 0.2      # seconds between "go" and the first intended call


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else the default asyncio loop."""
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def run_one(cfg: LoadConfig, start: Callable[[], float],
            on_tick: Optional[Callable[[dict], None]]) -> dict:
    """Connect, wait for ``start()`` to give t0, run the schedule; the export dict."""
    async def main() -> dict:
        gen = Generator(cfg, on_tick)
        await gen.connect()
        return await gen.run(start())

    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main())


def run_load(cfg: LoadConfig, live: "LiveLine") -> list[dict]:
    """Run the whole generator; one export dict per generator process."""
    if cfg.procs == 1:
        def start() -> float:
            return time.monotonic() + START_DELAY
        return [run_one(cfg.share(0), start, live.update_one if live.enabled else None)]
    return _run_forked(cfg, live)


def _child(cfg: LoadConfig, pipe: Connection, live: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C
    _die_with_parent()

    def start() -> float:
        pipe.send(("ready", os.getpid()))
        msg = pipe.recv()
        if msg[0] != "go":
            raise SystemExit(0)
        return msg[1]

    def tick(data: dict) -> None:
        pipe.send(("tick", cfg.proc_index, data))

    try:
        pipe.send(("result", run_one(cfg, start, tick if live else None)))
    except BaseException as exc:  # report every failure to the parent, one line
        pipe.send(("error", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__))
    finally:
        pipe.close()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel kills this child if the parent dies first."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _run_forked(cfg: LoadConfig, live: "LiveLine") -> list[dict]:
    ctx = mp.get_context("fork")
    procs, pipes = [], []
    for i in range(cfg.procs):
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(cfg.share(i), child_end, live.enabled),
                           daemon=True)
        proc.start()
        child_end.close()
        procs.append(proc)
        pipes.append(parent_end)
    try:
        ready_timeout = (cfg.connections * 3 + 2) * cfg.timeout + 10
        _collect(pipes, procs, "ready", ready_timeout, live)
        t0 = time.monotonic() + START_DELAY
        for pipe in pipes:
            pipe.send(("go", t0))
        total = cfg.warmup + cfg.duration + cfg.hold + 2 * cfg.timeout + 30
        return list(_collect(pipes, procs, "result", total, live).values())
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(5)


def _collect(pipes: list[Connection], procs: list, kind: str, timeout: float,
             live: "LiveLine") -> dict[int, object]:
    """Wait until every child sent a ``kind`` message; ticks go to the live line."""
    got: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(pipes):
        left = deadline - time.monotonic()
        if left <= 0:
            raise HarnessError(f"generator processes sent no {kind} within {timeout:.0f} s")
        for pipe in wait([p for i, p in enumerate(pipes) if i not in got], min(left, 1.0)):
            i = pipes.index(pipe)  # type: ignore[arg-type]
            try:
                msg = pipe.recv()  # type: ignore[union-attr]
            except EOFError:
                raise HarnessError(f"generator process {i} died "
                                   f"(exit code {procs[i].exitcode})") from None
            if msg[0] == "error":
                raise HarnessError(f"generator process {i}: {msg[1]}")
            if msg[0] == "tick":
                live.update_part(msg[1], msg[2], len(pipes))
            elif msg[0] == kind:
                got[i] = msg[1]
    return got


class LiveLine:
    """Once a second on a terminal: elapsed, calls/s, p99, errors. Silent otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, enabled: Optional[bool] = None) -> None:
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.parts: dict[int, dict] = {}
        self.shown = False

    def update_one(self, tick: dict) -> None:
        self._show(tick["t"], tick["done"], tick["failed"], tick["p99_ms"], tick["warmup"])

    def update_part(self, index: int, tick: dict, nparts: int) -> None:
        """A tick of process ``index``; prints when every process has sent this second's."""
        self.parts[index] = tick
        if len(self.parts) == nparts:
            ticks = list(self.parts.values())
            p99s = [t["p99_ms"] for t in ticks if t["p99_ms"] is not None]
            self._show(max(t["t"] for t in ticks), sum(t["done"] for t in ticks),
                       sum(t["failed"] for t in ticks), max(p99s) if p99s else None,
                       any(t["warmup"] for t in ticks))
            self.parts.clear()

    def _show(self, t: float, done: int, failed: int, p99: Optional[float], warmup: bool) -> None:
        p99_text = f"{p99:8.2f} ms" if p99 is not None else "       - ms"
        phase = " (warmup)" if warmup else ""
        self.stream.write(f"\r{t:6.0f} s  {done:7d} calls/s  p99 {p99_text}  "
                          f"errors {failed:6d}{phase}   ")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
