"""TEST-ONLY: write a synthetic results folder that follows DESIGN.md's schema exactly.

Used where a real run would be too slow or cannot produce the case under test (many
backends and durability variants, a failed run, a saturated generator). Numbers are
deterministic (seeded) and plausible: ``local`` loses dialogs, fsync costs throughput.
The real-run fixture in conftest.py covers the same code on genuine output.
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
from hdrh.histogram import HdrHistogram

from harness.schema import RUN_COLUMNS, TIMESERIES_COLUMNS

HEALTH_COLUMNS = ("schedule_lag_p99_ms", "schedule_lag_max_ms", "loop_lag_max_ms")


@dataclass(frozen=True)
class Variant:
    """One configuration of the synthetic matrix and its 'true' performance."""

    backend: str
    fsync: bool = False
    eatmydata: bool = False
    cps: float = 400.0          # achieved calls/s
    latency_ms: float = 1.0     # typical INVITE latency
    cpu_us: float = 150.0       # server CPU per call
    service_us: float = 0.0     # service CPU per call
    lost_fraction: float = 0.0


DEFAULT_VARIANTS: tuple[Variant, ...] = (
    Variant("local", cps=480, latency_ms=0.6, cpu_us=120, lost_fraction=0.5),
    Variant("shm", cps=470, latency_ms=0.7, cpu_us=130),
    Variant("lmdb", cps=450, latency_ms=0.9, cpu_us=160),
    Variant("lmdb", fsync=True, cps=220, latency_ms=6.0, cpu_us=210),
    Variant("lmdb", fsync=True, eatmydata=True, cps=440, latency_ms=1.0, cpu_us=165),
    Variant("redis", cps=420, latency_ms=1.2, cpu_us=180, service_us=60),
    Variant("redis", fsync=True, cps=300, latency_ms=3.0, cpu_us=185, service_us=140),
)


def write_results(folder: Path, variants: Iterable[Variant] = DEFAULT_VARIANTS,
                  workers: Iterable[int] = (2,), repeats: int = 3, duration_s: float = 3.0,
                  rate: float = 500.0, seed: int = 7, failed: Optional[str] = None,
                  saturated: Optional[str] = None) -> Path:
    """Write runs.csv, runs.parquet, timeseries.csv, hdr/*.hgrm and manifest.json.

    ``failed``/``saturated`` name a backend whose first run is marked failed /
    generator_saturated. Returns ``folder``.
    """
    rng = random.Random(seed)
    (folder / "hdr").mkdir(parents=True, exist_ok=True)
    rows, series = [], []
    n, hgrm_cache = 0, {}
    for w in workers:
        for v in variants:
            for rep in range(repeats):
                n += 1
                run_id = f"{n:03d}-{v.backend}-w{w}-r{rep}"
                row = _run_row(rng, run_id, rep, v, w, duration_s, rate)
                if failed == v.backend and rep == 0:
                    row.update(status="failed", reason="server died during the run")
                if saturated == v.backend and rep == 0:
                    row["generator_saturated"] = True
                rows.append(row)
                series += _series(rng, run_id, row, duration_s)
                _write_hgrms(rng, folder / "hdr", run_id, v, hgrm_cache)
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS) + list(HEALTH_COLUMNS))
    runs.to_csv(folder / "runs.csv", index=False)
    runs.to_parquet(folder / "runs.parquet", index=False)
    pd.DataFrame(series, columns=list(TIMESERIES_COLUMNS)).to_csv(folder / "timeseries.csv",
                                                                   index=False)
    (folder / "manifest.json").write_text(json.dumps(_manifest(), indent=2))
    return folder


def _run_row(rng: random.Random, run_id: str, rep: int, v: Variant, workers: int,
             duration_s: float, rate: float) -> dict:
    noise = rng.uniform(0.95, 1.05)
    cps = min(rate, v.cps * noise * (1.0 if workers > 1 else 0.6))
    completed = int(cps * duration_s)
    lost = int(completed * v.lost_fraction * rng.uniform(0.9, 1.1)) if workers > 1 else 0
    lat = v.latency_ms * rng.uniform(0.9, 1.1)
    return {
        "run_id": run_id, "repeat": rep, "backend": v.backend, "fsync": v.fsync,
        "eatmydata": v.eatmydata, "workers": workers, "generator": "builtin", "mode": "open",
        "rate_target": rate, "duration_s": duration_s, "calls_attempted": completed + lost,
        "calls_completed": completed, "calls_failed": lost, "throughput_cps": round(cps, 2),
        "invite_p50_ms": lat, "invite_p90_ms": lat * 1.8, "invite_p99_ms": lat * 4,
        "invite_p999_ms": lat * 9, "invite_max_ms": lat * 15, "bye_p50_ms": lat * 0.8,
        "bye_p99_ms": lat * 3, "status_481": lost, "status_5xx": 0, "timeouts": 0,
        "lost_dialogs": lost, "cross_worker_fraction": 0.5 if workers > 1 else 0.0,
        "cpu_server_s": v.cpu_us * completed / 1e6 * noise,
        "cpu_service_s": v.service_us * completed / 1e6 * noise,
        "cpu_loadgen_s": 90 * completed / 1e6,
        "cpu_us_per_call": (v.cpu_us + v.service_us + 90) * noise,
        "store_leftover": 0 if v.backend != "local" else lost,
        "generator_saturated": False, "status": "ok", "reason": "",
        "schedule_lag_p99_ms": rng.uniform(0.1, 0.5), "schedule_lag_max_ms": rng.uniform(1, 4),
        "loop_lag_max_ms": rng.uniform(1, 3),
    }


def _series(rng: random.Random, run_id: str, row: dict, duration_s: float) -> list[dict]:
    cps, p99 = row["throughput_cps"], row["invite_p99_ms"]
    return [{"run_id": run_id, "t_s": t, "calls_completed": int(cps * rng.uniform(0.9, 1.1)),
             "calls_failed": int(row["calls_failed"] / duration_s),
             "p50_ms": row["invite_p50_ms"], "p99_ms": p99 * rng.uniform(0.7, 1.4)}
            for t in range(1, int(duration_s) + 1)]


def _write_hgrms(rng: random.Random, hdr_dir: Path, run_id: str, v: Variant,
                 cache: dict) -> None:
    """Write the run's .hgrm files. hdrh's writer is slow (it walks every bucket), so
    each variant gets two distributions per transaction, reused across its runs, and
    2 significant digits instead of the harness's 3 (the format is the same)."""
    for txn, scale in (("invite", 1.0), ("bye", 0.8)):
        key = (v, txn, len(cache) % 2)
        if key not in cache:
            hist = HdrHistogram(1, 60_000_000, 2)
            for _ in range(2000):
                hist.record_value(max(1, int(rng.lognormvariate(0, 0.6) * v.latency_ms * scale * 1000)))
            buf = io.BytesIO()
            hist.output_percentile_distribution(buf, 1000.0)  # µs recorded, ms written
            cache[key] = buf.getvalue()
        (hdr_dir / f"{run_id}.{txn}.hgrm").write_bytes(cache[key])


def _manifest() -> dict:
    return {
        "scenario": {"name": "fabricated", "description": "synthetic test data"},
        "sipstate_version": "0.1.0", "git_commit": "0" * 40, "python": "3.11.2",
        "packages": {"pandas": pd.__version__},
        "servers": {"redis": "7.0.15", "memcached": "1.6.18", "sipp": "3.6.1"},
        "host": {"cpu_model": "Synthetic CPU", "cores": 2, "kernel": "6.1.0",
                 "memory_mb": 4096},
        "filesystems": {"/tmp/sipstate-data": "tmpfs"},
        "start": "2026-12-03T21:00:00Z", "end": "2026-12-03T21:05:00Z",
    }


def scale_metric(folder: Path, backend: str, column: str, factor: float) -> None:
    """Multiply ``column`` of every run of ``backend`` by ``factor`` in runs.csv, and in
    runs.parquet when present, so the loader sees the edit whichever file it reads.
    Used to inject regressions."""
    runs = pd.read_csv(folder / "runs.csv")
    mask = runs["backend"] == backend
    runs.loc[mask, column] = runs.loc[mask, column] * factor
    runs.to_csv(folder / "runs.csv", index=False)
    parquet = folder / "runs.parquet"
    if parquet.exists():
        table = pd.read_parquet(parquet)
        table.loc[table["backend"] == backend, column] *= factor
        table.to_parquet(parquet, index=False)
