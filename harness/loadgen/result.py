"""Merging the exports of generator processes into the result of `harness load`.

The result holds every name of ``harness.schema.LOAD_FIELDS`` plus: the
uncorrected latency percentiles (``invite_p99_uncorrected_ms`` ...), generator
health (``schedule_lag_p99_ms``, ``schedule_lag_max_ms``, ``loop_lag_max_ms``,
``cpu_loadgen_s``, ``saturation_reasons``), waits for a transaction slot
(``slot_wait_p99_ms``, ``slot_wait_max_ms``: back-pressure of a slow server, not a
generator fault), ``timeseries`` and ``hdr``.

Saturation rule (issue 4, item 7): the generator is saturated when the p99 of its
schedule lag exceeds 10 ms or 10 % of the interval between the calls of one
generator process, whichever is larger (the smaller would be below the event
loop's 1 ms timer resolution at any rate above 100 calls/s), or when its CPU
time exceeds 90 % of the cores it can use (one per process) in the window, or
when its measured CPU per call times the target rate exceeds 90 % of those cores
(a rate beyond what it can produce, even while a slow server throttles it).
Schedule lag is the generator's own lateness: when it got to a start minus the
intended time. A start that then waits for a transaction slot waits for the
server; that wait is reported apart (slot_wait_*) and is inside the corrected
latency.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional

from harness import metrics
from harness.loadgen.config import LoadConfig
from harness.schema import LOAD_FIELDS

LAG_FLOOR_S = 0.010
LAG_INTERVAL_SHARE = 0.10
CPU_SHARE = 0.90
HGRM_TXNS: tuple[str, ...] = ("invite", "bye", "register")


def _sum_counters(dicts: Iterable[dict]) -> Counter:
    total: Counter = Counter()
    for d in dicts:
        total.update(d)
    return total


def _merge_txn(exports: list[dict], key: str) -> dict[str, metrics.HdrHistogram]:
    txns = sorted({t for e in exports for t in e[key]})
    return {t: metrics.merge(e[key][t] for e in exports if t in e[key]) for t in txns}


def latency_fields(hist: dict, prefix: str, suffix: str = "") -> dict[str, Optional[float]]:
    """{prefix}_p50{suffix}_ms ... from the txn histogram (None when absent or empty)."""
    h = hist.get(prefix)
    pct = metrics.percentiles_ms(h) if h is not None else metrics.percentiles_ms(
        metrics.new_histogram())
    return {f"{prefix}_{name}{suffix}_ms": _round(value) for name, value in pct.items()}


def _round(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None else round(value, digits)


def saturation(cfg: LoadConfig, lag_p99_s: Optional[float], cpu_share: Optional[float],
               skipped: int, cpu_per_call_s: Optional[float] = None) -> list[str]:
    """Reasons why the generator itself could not keep its schedule (empty: it could).

    Waits for a transaction slot are not among them: they happen because the server
    answers slowly, and they are inside the corrected latency.
    """
    reasons = []
    cores = min(cfg.procs, os.cpu_count() or 1)
    per_proc_interval = cfg.procs / cfg.rate if cfg.rate > 0 else float("inf")
    limit = max(LAG_FLOOR_S, LAG_INTERVAL_SHARE * per_proc_interval)
    if cfg.mode == "open" and lag_p99_s is not None and lag_p99_s > limit:
        reasons.append(f"schedule lag p99 {lag_p99_s * 1000:.1f} ms > {limit * 1000:.1f} ms")
    if cpu_share is not None and cpu_share > CPU_SHARE:
        reasons.append(f"generator CPU {cpu_share:.0%} of its cores > {CPU_SHARE:.0%}")
    if cfg.mode == "open" and cpu_per_call_s and cfg.rate * cpu_per_call_s > CPU_SHARE * cores:
        # the target rate would need more CPU than the generator has, even had the
        # server answered at once (it may have throttled the generator instead)
        reasons.append(f"at {cpu_per_call_s * 1e6:.0f} us of CPU per call, {cfg.rate:g} "
                       f"calls/s need {cfg.rate * cpu_per_call_s:.1f} cores; the generator "
                       f"has {cores}")
    if skipped:
        reasons.append(f"{skipped} scheduled calls were never started")
    return reasons


def summarize(cfg: LoadConfig, exports: list[dict]) -> dict:
    """One result dict (JSON-ready, without ``hdr``) from the per-process exports."""
    counts = _sum_counters(e["counts"] for e in exports)
    corrected = _merge_txn(exports, "hist")
    uncorrected = _merge_txn(exports, "hist_uncorrected")
    lag = metrics.merge(e["lag"] for e in exports if e["lag"])
    lag_pct = metrics.percentiles_ms(lag)
    cross, known = (sum(e["cross"][i] for e in exports) for i in (0, 1))
    cores = min(cfg.procs, os.cpu_count() or 1)
    wall = max((e["wall_window"] for e in exports), default=0.0)
    cpu_window = sum(e["cpu_window"] for e in exports)
    cpu_share = cpu_window / (wall * cores) if wall > 0 else None
    skipped = sum(e["skipped"] for e in exports)
    waits = metrics.percentiles_ms(metrics.merge(e["waits"] for e in exports if e["waits"]))
    completed = counts["completed"]
    cpu = sum(e["cpu_measured"] for e in exports)
    reasons = saturation(cfg, None if lag_pct["p99"] is None else lag_pct["p99"] / 1000,
                         cpu_share, skipped, cpu / completed if completed else None)
    statuses = _sum_counters(e["statuses"] for e in exports)
    result = {
        "generator": "builtin", "mode": cfg.mode, "rate_target": cfg.rate,
        "duration_s": cfg.duration, "calls_attempted": counts["attempted"],
        "calls_completed": completed, "calls_failed": counts["failed"],
        "throughput_cps": round(completed / cfg.duration, 3),
        **{k: v for k, v in latency_fields(corrected, "invite").items()},
        "bye_p50_ms": latency_fields(corrected, "bye")["bye_p50_ms"],
        "bye_p99_ms": latency_fields(corrected, "bye")["bye_p99_ms"],
        "status_481": statuses.get(481, 0),
        "status_5xx": sum(n for code, n in statuses.items() if 500 <= code < 600),
        "timeouts": counts["timeouts"], "lost_dialogs": counts["lost_dialogs"],
        "cross_worker_fraction": round(cross / known, 4) if known else None,
        "cpu_loadgen_s": round(cpu, 4), "generator_saturated": bool(reasons),
    }
    inv = corrected.get("invite")
    result["invite_mean_ms"] = _round(inv.get_mean_value() / 1000) if inv else None
    result.update(latency_fields(uncorrected, "invite", "_uncorrected"))
    result.update(latency_fields(uncorrected, "bye", "_uncorrected"))
    result.update(latency_fields(corrected, "register"))
    result.update({
        "schedule_lag_p99_ms": _round(lag_pct["p99"]), "schedule_lag_max_ms": _round(lag_pct["max"]),
        "slot_wait_p99_ms": _round(waits["p99"]), "slot_wait_max_ms": _round(waits["max"]),
        "loop_lag_max_ms": round(max(e["loop_lag_max"] for e in exports) * 1000, 3),
        "cpu_loadgen_window_s": round(cpu_window, 4),
        "cpu_loadgen_total_s": round(sum(e["cpu_total"] for e in exports), 4),
        "cpu_loadgen_share": _round(cpu_share, 4),
        "cpu_us_per_call_loadgen": round(cpu * 1e6 / completed, 1) if completed else None,
        "saturation_reasons": reasons, "calls_skipped": skipped,
        "backlog_max": max(e["backlog_max"] for e in exports),
        "outcomes": dict(_sum_counters(e["outcomes"] for e in exports)),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "unmatched_responses": counts["unmatched_responses"],
        "late_dialogs_closed": counts["late_dialogs_closed"],
        "workers_seen": sorted({w for e in exports for w in e["workers"]}),
        "reconnects": sum(e["reconnects"] for e in exports),
        "procs": cfg.procs, "connections": cfg.connections, "warmup_s": cfg.warmup,
        "arrival": cfg.arrival, "hold_s": cfg.hold, "cross_connection": cfg.cross_connection,
        "concurrency": cfg.total_concurrency(), "target": f"{cfg.host}:{cfg.port}",
        "mix": dict(cfg.mix),
        "timeseries": metrics.TimeSeries.merge_exports(e["timeseries"] for e in exports),
    })
    result["_histograms"] = corrected   # removed by write_hdr; not JSON
    return result


def write_hdr(result: dict, hdr_dir: Optional[Path], prefix: str) -> dict:
    """Write <prefix>.<txn>.hgrm for invite, bye, register; set result["hdr"] to their paths."""
    hists = result.pop("_histograms", {})
    result["hdr"] = {}
    if hdr_dir is None:
        return result
    hdr_dir.mkdir(parents=True, exist_ok=True)
    for txn in HGRM_TXNS:
        hist = hists.get(txn)
        if hist is not None and hist.get_total_count():
            path = metrics.write_hgrm(hist, hdr_dir / f"{prefix}.{txn}.hgrm")
            result["hdr"][txn] = str(path)
    return result


def check_fields(result: dict) -> None:
    """Assert the result carries every LOAD_FIELDS name (a programming error if not)."""
    missing = [f for f in LOAD_FIELDS if f not in result]
    if missing:
        raise AssertionError(f"load result lacks fields {missing}")
