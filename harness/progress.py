"""What `harness run` shows while it works: a progress bar over the matrix with an ETA,
the load generator's live line of the current run, one line per finished run, and a
summary table at the end (backend x durability x workers: medians over repeats).

On a terminal the bar and live line are a rich Live display refreshed by hand from the
runner's loop (no refresh thread: the runner forks children with a preexec hook, which
must not race with other threads). Elsewhere (pipes, CI logs) only plain lines are printed.
"""
from __future__ import annotations

import re
import statistics
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from harness.scenario import RunSpec

STARTUP_OVERHEAD_S = 3.0   # services, server fork, OPTIONS probe, audit, stop: a rough constant
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def estimate_seconds(spec: RunSpec) -> float:
    """Expected wall time of one run, for the ETA."""
    return spec.load.warmup + spec.load.duration + spec.load.hold + STARTUP_OVERHEAD_S


def clean_live_line(raw: str) -> str:
    """The last complete status line of a terminal stream (carriage returns, ANSI codes removed)."""
    text = ANSI_RE.sub("", raw)
    parts = [p.strip() for p in re.split(r"[\r\n]+", text) if p.strip()]
    return parts[-1] if parts else ""


class MatrixProgress:
    """Progress of one matrix; use as a context manager around the runs."""

    def __init__(self, specs: Sequence[RunSpec], console: Console) -> None:
        self.console = console
        self.tty = console.is_terminal
        self.total = len(specs)
        self.estimates = {s.run_id: estimate_seconds(s) for s in specs}
        self.done_s = 0.0
        self.done = 0
        self.current: Optional[RunSpec] = None
        self.started = 0.0
        self.live_text = Text("")
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[runs]}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=console, auto_refresh=False)
        self.task = self.bar.add_task("matrix", total=sum(self.estimates.values()) or 1.0,
                                      runs=f"0/{self.total}")
        self.live: Optional[Live] = None

    def __enter__(self) -> "MatrixProgress":
        if self.tty:
            self.live = Live(Group(self.bar, self.live_text), console=self.console, auto_refresh=False,
                             redirect_stdout=False, redirect_stderr=False)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def begin(self, spec: RunSpec) -> None:
        self.current = spec
        self.started = time.monotonic()
        self.live_text.plain = ""
        self.bar.update(self.task, description=f"run {self.done + 1}/{self.total} {spec.label()}")
        if not self.tty:
            self.console.print(f"[{self.done + 1}/{self.total}] {spec.run_id}: {spec.label()} ...",
                               highlight=False)
        self.refresh()

    def tick(self, live_line: Optional[str] = None) -> None:
        """Advance the bar by elapsed time (capped at the run's estimate) and show ``live_line``."""
        if self.current is None:
            return
        if live_line:
            self.live_text.plain = "  " + live_line
        est = self.estimates.get(self.current.run_id, 0.0)
        elapsed = min(time.monotonic() - self.started, 0.98 * est)
        self.bar.update(self.task, completed=self.done_s + elapsed)
        self.refresh()

    def end(self, spec: RunSpec, row: Mapping[str, Any]) -> None:
        self.done += 1
        self.done_s += self.estimates.get(spec.run_id, 0.0)
        self.current = None
        self.live_text.plain = ""
        self.bar.update(self.task, completed=self.done_s, runs=f"{self.done}/{self.total}")
        self.console.print(describe_row(row), highlight=False)
        self.refresh()

    def refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def describe_row(row: Mapping[str, Any]) -> str:
    """One line per finished run."""
    head = f"  {row.get('status', '?'):7s} {row.get('run_id')}"
    if row.get("status") != "ok":
        return f"{head}: {row.get('reason') or ''}"
    return (f"{head}: {_fmt(row.get('throughput_cps'))} calls/s, invite p50 {_fmt(row.get('invite_p50_ms'), 2)} ms"
            f" p99 {_fmt(row.get('invite_p99_ms'), 2)} ms, lost {_fmt(row.get('lost_dialogs'))},"
            f" 481s {_fmt(row.get('status_481'))}, cross-worker {_fmt(row.get('cross_worker_fraction'), 2)},"
            f" CPU {_fmt(row.get('cpu_us_per_call'), 0)} µs/call, leftover {_fmt(row.get('store_leftover'))}")


def _median(rows: Iterable[Mapping[str, Any]], key: str) -> Optional[float]:
    values = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and r.get(key) == r.get(key)]
    return statistics.median(values) if values else None


def _max(rows: Iterable[Mapping[str, Any]], key: str) -> Optional[float]:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return max(values) if values else None


def summary_table(rows: Sequence[Mapping[str, Any]], title: str) -> Table:
    """Backend (with durability) x workers x rate: medians of ok runs, worst loss."""
    table = Table(title=title, title_justify="left")
    for col, justify in (("backend", "left"), ("workers", "right"), ("rate", "right"), ("ok/runs", "right"),
                         ("calls/s", "right"), ("p50 ms", "right"), ("p99 ms", "right"),
                         ("lost (max)", "right"), ("x-worker", "right"), ("CPU µs/call", "right"),
                         ("leftover (max)", "right")):
        table.add_column(col, justify=justify)
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        durability = ("+fsync" if row.get("fsync") else "") + ("+eatmydata" if row.get("eatmydata") else "")
        key = (f"{row.get('backend')}{durability}", row.get("workers"), row.get("rate_target"))
        groups.setdefault(key, []).append(row)
    for (backend, workers, rate), group in groups.items():
        ok = [r for r in group if r.get("status") == "ok"]
        table.add_row(backend, str(workers), _fmt(rate, 0), f"{len(ok)}/{len(group)}",
                      _fmt(_median(ok, "throughput_cps")), _fmt(_median(ok, "invite_p50_ms"), 2),
                      _fmt(_median(ok, "invite_p99_ms"), 2), _fmt(_max(ok, "lost_dialogs")),
                      _fmt(_median(ok, "cross_worker_fraction"), 2), _fmt(_median(ok, "cpu_us_per_call"), 0),
                      _fmt(_max(ok, "store_leftover")))
    return table
