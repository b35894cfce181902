"""Measurement primitives shared by the load generator and the runner.

* HdrHistograms of latencies in microseconds (1 µs .. 60 s, 3 significant
  digits), their compressed encoding for shipping between processes, merging,
  percentiles in milliseconds, and ``.hgrm`` percentile-distribution files
  (the text format of HdrHistogram's ``outputPercentileDistribution``, values
  in ms) with a reader for them.
* A per-second time series (completed, failed, and a latency histogram per
  second) that merges across processes.
* CPU accounting from /proc: ``cpu_seconds(pid)`` and ``own_cpu_seconds()``.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
# The percentiles that become result fields, as (suffix, percentile).
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in µs: 1 µs .. 60 s, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_us(hist: HdrHistogram, seconds: float) -> None:
    """Record a latency given in seconds; clamps into the histogram's range."""
    us = int(seconds * 1e6)
    hist.record_value(LOWEST_US if us < LOWEST_US else HIGHEST_US if us > HIGHEST_US else us)


def encode(hist: HdrHistogram) -> bytes:
    """The compressed, base64 HdrHistogram encoding (what ``merge`` accepts)."""
    return hist.encode()


def decode(data: bytes | str) -> HdrHistogram:
    """Inverse of :func:`encode`."""
    return HdrHistogram.decode(data.encode() if isinstance(data, str) else data)


def merge(parts: Iterable[HdrHistogram | bytes | str]) -> HdrHistogram:
    """One histogram holding every value of ``parts`` (histograms or encodings)."""
    total = new_histogram()
    for part in parts:
        total.add(part if isinstance(part, HdrHistogram) else decode(part))
    return total


def percentiles_ms(hist: HdrHistogram) -> dict[str, Optional[float]]:
    """{"p50", "p90", "p99", "p999", "max"} in ms; all None when the histogram is empty."""
    if hist.get_total_count() == 0:
        return {name: None for name, _ in PERCENTILES} | {"max": None}
    out: dict[str, Optional[float]] = {
        name: hist.get_value_at_percentile(p) / 1000.0 for name, p in PERCENTILES}
    out["max"] = hist.get_max_value() / 1000.0
    return out


def write_hgrm(hist: HdrHistogram, path: Path) -> Path:
    """Write the percentile distribution of ``hist`` (values in ms) to ``path``."""
    buf = io.BytesIO()
    hist.output_percentile_distribution(buf, 1000.0, ticks_per_half_distance=5)
    path.write_bytes(buf.getvalue())
    return path


@dataclass(frozen=True)
class HgrmRow:
    """One line of an .hgrm file: value (ms) at a percentile (0..1), cumulative count."""

    value_ms: float
    percentile: float
    total_count: int


def read_hgrm(path: Path) -> list[HgrmRow]:
    """Parse an .hgrm file; raises ValueError naming the file and line on bad content."""
    rows: list[HgrmRow] = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.split()
        if not fields or line.startswith("#") or fields[0] == "Value":
            continue
        try:
            rows.append(HgrmRow(float(fields[0]), float(fields[1]), int(fields[2])))
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{lineno}: not an hgrm row: {line!r}") from None
    if not rows:
        raise ValueError(f"{path}: no percentile rows")
    return rows


class TimeSeries:
    """Per-second buckets: completed, failed, and a latency histogram per second.

    Seconds are counted from the start of the measurement window. ``export`` gives
    a picklable form that ``merge_exports`` combines across processes.
    """

    def __init__(self) -> None:
        self.buckets: dict[int, list] = {}

    def _bucket(self, second: int) -> list:
        bucket = self.buckets.get(second)
        if bucket is None:
            bucket = self.buckets[second] = [0, 0, new_histogram()]
        return bucket

    def completed(self, second: int, latency_s: Optional[float], count: int = 1) -> None:
        """Count ``count`` completions in ``second`` and record a latency (if given)."""
        bucket = self._bucket(second)
        bucket[0] += count
        if latency_s is not None:
            record_us(bucket[2], latency_s)

    def failed(self, second: int) -> None:
        self._bucket(second)[1] += 1

    def export(self) -> dict[int, tuple[int, int, bytes]]:
        return {s: (b[0], b[1], encode(b[2])) for s, b in self.buckets.items()}

    @staticmethod
    def merge_exports(exports: Iterable[Mapping[int, tuple]]) -> list[dict]:
        """Rows {t_s, calls_completed, calls_failed, p50_ms, p99_ms}, one per second, sorted."""
        merged: dict[int, list] = {}
        for export in exports:
            for second, (done, failed, enc) in export.items():
                row = merged.setdefault(int(second), [0, 0, []])
                row[0] += done
                row[1] += failed
                row[2].append(enc)
        rows = []
        for second in range(min(merged, default=0), max(merged, default=-1) + 1):
            done, failed, encs = merged.get(second, (0, 0, []))
            pct = percentiles_ms(merge(encs))
            rows.append({"t_s": second, "calls_completed": done, "calls_failed": failed,
                         "p50_ms": pct["p50"], "p99_ms": pct["p99"]})
        return rows


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` from /proc/PID/stat (children not included).

    Raises ProcessLookupError when the process is gone.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def own_cpu_seconds() -> float:
    """User + system CPU of the calling process (all its threads, not its children)."""
    t = os.times()
    return t.user + t.system
