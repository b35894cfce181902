"""harness.metrics: HdrHistogram merging, .hgrm files, time series, CPU accounting."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from harness import metrics


def _values(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(-7, 1.2) for _ in range(n)]  # seconds, ~1 ms median


def test_merge_of_parts_equals_one_histogram_of_all_values():
    values = _values(20_000, 1)
    whole = metrics.new_histogram()
    parts = [metrics.new_histogram() for _ in range(3)]
    for i, v in enumerate(values):
        metrics.record_us(whole, v)
        metrics.record_us(parts[i % 3], v)
    merged = metrics.merge(metrics.encode(p) for p in parts)  # as shipped between processes
    assert merged.get_total_count() == len(values)
    assert metrics.percentiles_ms(merged) == metrics.percentiles_ms(whole)
    # and the percentiles are right to 3 significant digits
    exact = sorted(values)
    p99 = exact[int(0.99 * len(exact)) - 1] * 1000
    assert metrics.percentiles_ms(merged)["p99"] == pytest.approx(p99, rel=2e-3)


def test_merge_of_nothing_is_empty_and_percentiles_are_none():
    empty = metrics.merge([])
    assert empty.get_total_count() == 0
    assert set(metrics.percentiles_ms(empty).values()) == {None}


def test_record_clamps_out_of_range_values():
    h = metrics.new_histogram()
    metrics.record_us(h, 0.0)
    metrics.record_us(h, 3600.0)        # an hour: beyond the 60 s ceiling
    assert h.get_total_count() == 2
    assert h.get_max_value() >= 59_000_000


def test_hgrm_file_round_trip(tmp_path):
    h = metrics.new_histogram()
    for v in _values(5_000, 2):
        metrics.record_us(h, v)
    path = metrics.write_hgrm(h, tmp_path / "run.invite.hgrm")
    rows = metrics.read_hgrm(path)
    assert rows[0].percentile == 0.0 and rows[-1].percentile == 1.0
    assert rows[-1].total_count == 5_000
    assert [r.value_ms for r in rows] == sorted(r.value_ms for r in rows)
    below = [r for r in rows if r.percentile <= 0.5][-1]
    above = next(r for r in rows if r.percentile >= 0.5)
    assert below.value_ms <= metrics.percentiles_ms(h)["p50"] <= above.value_ms
    assert rows[-1].value_ms == pytest.approx(metrics.percentiles_ms(h)["max"], rel=1e-3)


def test_read_hgrm_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.hgrm"
    bad.write_text("Value Percentile\n\nnot numbers at all\n")
    with pytest.raises(ValueError, match="bad.hgrm:3"):
        metrics.read_hgrm(bad)


def test_timeseries_merges_seconds_across_processes():
    a, b = metrics.TimeSeries(), metrics.TimeSeries()
    for _ in range(10):
        a.completed(0, 0.001)
    b.completed(0, 0.100)
    b.failed(2)
    rows = metrics.TimeSeries.merge_exports([a.export(), b.export()])
    assert [r["t_s"] for r in rows] == [0, 1, 2]          # the empty second is listed
    assert rows[0]["calls_completed"] == 11 and rows[0]["calls_failed"] == 0
    assert rows[0]["p50_ms"] == pytest.approx(1.0, rel=0.01)
    assert rows[0]["p99_ms"] == pytest.approx(100.0, rel=0.01)
    assert rows[1] == {"t_s": 1, "calls_completed": 0, "calls_failed": 0,
                       "p50_ms": None, "p99_ms": None}
    assert rows[2]["calls_failed"] == 1


def test_cpu_seconds_of_a_busy_child_and_of_a_gone_one():
    proc = subprocess.Popen([sys.executable, "-c",
                             "import time\nt=time.process_time()\n"
                             "while time.process_time()-t<0.3: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while metrics.cpu_seconds(proc.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.25 <= metrics.cpu_seconds(proc.pid) < 5
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(ProcessLookupError):
        metrics.cpu_seconds(proc.pid)
    assert metrics.own_cpu_seconds() > 0
    assert metrics.cpu_seconds(os.getpid()) > 0
