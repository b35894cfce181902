"""The report's tables: summary, correctness, generator health, excluded runs,
environment, and the verdicts. Every value is computed from the results folder;
nothing here is hand-written prose about a particular outcome.

Contract: each function takes runs normalised by ``style.normalise_runs`` (the manifest
for ``environment``) and returns a DataFrame ready to print (may be empty).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from harness.report import style

HEALTH_COLUMNS = ("schedule_lag_p99_ms", "schedule_lag_max_ms", "loop_lag_max_ms",
                  "cpu_loadgen_s", "invite_p99_uncorrected_ms")


def _groups(df: pd.DataFrame):
    """(load, variant, frame) in report order."""
    for load in style.load_order(df):
        sub = df[df["load"] == load]
        for var in style.variant_order(sub):
            yield load, var, sub[sub["variant"] == var]


def _num(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame:
        return pd.Series([np.nan] * len(frame), index=frame.index, dtype=float)
    return pd.to_numeric(frame[col], errors="coerce")


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Median over ok runs per (load, variant): calls/s, INVITE p50/p99, CPU µs/call, lost."""
    rows = []
    for load, var, sub in _groups(df):
        ok = sub[sub["ok"]]
        rows.append({"load": load, "backend": var, "ok runs": f"{len(ok)}/{len(sub)}",
                     "calls/s": _num(ok, "throughput_cps").median(),
                     "INVITE p50 ms": _num(ok, "invite_p50_ms").median(),
                     "INVITE p99 ms": _num(ok, "invite_p99_ms").median(),
                     "CPU µs/call": _num(ok, "cpu_us_per_call").median(),
                     "lost dialogs (sum)": _num(ok, "lost_dialogs").sum()})
    return pd.DataFrame(rows)


def correctness(df: pd.DataFrame) -> pd.DataFrame:
    """Totals over ok runs per (load, variant): lost dialogs, 481s, 5xx, timeouts,
    leftover keys, and the median fraction of dialogs that crossed workers."""
    rows = []
    for load, var, sub in _groups(df):
        ok = sub[sub["ok"]]
        attempted = _num(ok, "calls_attempted").sum()
        lost = _num(ok, "lost_dialogs").sum()
        rows.append({"load": load, "backend": var, "calls attempted": attempted,
                     "lost dialogs": lost,
                     "lost %": 100.0 * lost / attempted if attempted else np.nan,
                     "481 responses": _num(ok, "status_481").sum(),
                     "5xx responses": _num(ok, "status_5xx").sum(),
                     "timeouts": _num(ok, "timeouts").sum(),
                     "cross-worker fraction": _num(ok, "cross_worker_fraction").median(),
                     "leftover keys": _num(ok, "store_leftover").sum()})
    return pd.DataFrame(rows)


def health(df: pd.DataFrame) -> pd.DataFrame:
    """Worst value over all runs per (load, variant) of each generator-health field present,
    and how many runs the generator marked saturated."""
    present = [c for c in HEALTH_COLUMNS if c in df]
    rows = []
    for load, var, sub in _groups(df):
        row = {"load": load, "backend": var}
        row.update({f"max {c}": _num(sub, c).max() for c in present})
        row["saturated runs"] = int(sub["generator_saturated"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def excluded(df: pd.DataFrame) -> pd.DataFrame:
    """Runs left out of the plots: failed, skipped or with a saturated generator."""
    bad = df[~df["ok"]]
    why = np.where(bad["status"] != "ok", bad["status"], "generator saturated")
    return pd.DataFrame({"run": bad["run_id"], "backend": bad["variant"], "load": bad["load"],
                         "status": why, "reason": bad["reason"]})


def environment(manifest: dict) -> pd.DataFrame:
    """The manifest flattened to dotted keys, except the resolved scenario (shown apart)."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list):
            rows.append((prefix, ", ".join(json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                                           for v in value)))
        else:
            rows.append((prefix, "" if value is None else str(value)))

    walk("", {k: v for k, v in manifest.items() if k != "scenario"})
    scenario = manifest.get("scenario")
    if isinstance(scenario, dict):
        rows.insert(0, ("scenario", str(scenario.get("name", ""))))
    return pd.DataFrame(rows, columns=["field", "value"])
