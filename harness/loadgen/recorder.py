"""What one generator process measures, and its picklable export for the parent.

Only calls whose *intended* start lies in the measurement window are recorded;
warmup calls run but leave no trace here. Latencies are kept twice: from the
intended send time (coordinated-omission corrected) and from the actual send time.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

from harness import metrics

TXNS: tuple[str, ...] = ("invite", "bye", "register", "options")


class Recorder:
    """Counters and HdrHistograms of one generator process (not thread-safe; one loop)."""

    def __init__(self) -> None:
        self.corrected = {t: metrics.new_histogram() for t in TXNS}
        self.uncorrected = {t: metrics.new_histogram() for t in TXNS}
        self.lag = metrics.new_histogram()     # scheduler lateness, every measured start
        self.waits = metrics.new_histogram()   # waits for a transaction slot, when any
        self.series = metrics.TimeSeries()
        self.counts: Counter = Counter()     # attempted, completed, failed, lost_dialogs, ...
        self.outcomes: Counter = Counter()   # completed, timeout, conn_error, status_NNN, ...
        self.statuses: Counter = Counter()   # final non-2xx status codes seen
        self.cross = [0, 0]                  # dialogs answered by >= 2 workers, with known workers
        self.workers: set[int] = set()
        self.loop_lag_max = 0.0

    def latency(self, txn: str, intended: float, sent: float, now: float) -> None:
        metrics.record_us(self.corrected[txn], now - intended)
        metrics.record_us(self.uncorrected[txn], now - sent)

    def schedule_lag(self, seconds: float) -> None:
        metrics.record_us(self.lag, seconds)

    def slot_wait(self, seconds: float) -> None:
        metrics.record_us(self.waits, seconds)

    def status(self, code: int) -> None:
        self.statuses[code] += 1

    def dialog_workers(self, first: Optional[int], second: Optional[int]) -> None:
        if first is not None and second is not None:
            self.cross[1] += 1
            if first != second:
                self.cross[0] += 1

    def export(self, extra: dict) -> dict:
        """A picklable summary; ``extra`` adds CPU and timing figures of the process."""
        return {
            "hist": {t: metrics.encode(h) for t, h in self.corrected.items()
                     if h.get_total_count()},
            "hist_uncorrected": {t: metrics.encode(h) for t, h in self.uncorrected.items()
                                 if h.get_total_count()},
            "lag": metrics.encode(self.lag) if self.lag.get_total_count() else None,
            "waits": metrics.encode(self.waits) if self.waits.get_total_count() else None,
            "timeseries": self.series.export(),
            "counts": dict(self.counts),
            "outcomes": dict(self.outcomes),
            "statuses": dict(self.statuses),
            "cross": list(self.cross),
            "workers": sorted(self.workers),
            "loop_lag_max": self.loop_lag_max,
            **extra,
        }
