"""Shared vocabulary of the report: one colour per backend, one hatch / line style per
durability mode, labels for configurations and load groups, and the run table
normalised once so every plot and table reads the same columns.

Contract: ``colour(backend)`` is a pure function of the name, so a backend has the
same colour in every plot of every report (known names are fixed, others are
derived from a CRC of the name).
"""
from __future__ import annotations

import zlib

import pandas as pd

# Fixed so reports stay comparable; `local` is grey because it is the unshared control.
BACKEND_COLOURS: dict[str, str] = {
    "local": "#7f7f7f", "shm": "#1f77b4", "lmdb": "#ff7f0e", "files": "#8c564b",
    "sqlite": "#9467bd", "redis": "#d62728", "memcached": "#2ca02c", "ultradict": "#bcbd22",
}
_SPARE_COLOURS = ("#17becf", "#e377c2", "#393b79", "#637939", "#8c6d31", "#843c39")

DURABILITY_MODES = ("off", "fsync", "fsync+eatmydata", "eatmydata")
HATCHES = {"off": "", "fsync": "//", "fsync+eatmydata": "xx", "eatmydata": ".."}
LINESTYLES = {"off": "-", "fsync": "--", "fsync+eatmydata": ":", "eatmydata": "-."}

# Columns that identify one cell of the matrix (compare matches on these too).
CONFIG_KEYS = ("backend", "fsync", "eatmydata", "workers", "mode", "rate_target")


def colour(backend: str) -> str:
    """The backend's colour: fixed for known names, stable hash for others."""
    if backend in BACKEND_COLOURS:
        return BACKEND_COLOURS[backend]
    return _SPARE_COLOURS[zlib.crc32(backend.encode()) % len(_SPARE_COLOURS)]


def to_bool(value) -> bool:
    """Read a flag column that may hold bools, 0/1, 'True'/'false' strings or NaN."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return False
    return bool(value)


def durability(fsync, eatmydata) -> str:
    """One of DURABILITY_MODES for a run's two flags."""
    f, e = to_bool(fsync), to_bool(eatmydata)
    if f and e:
        return "fsync+eatmydata"
    return "fsync" if f else ("eatmydata" if e else "off")


def variant_label(backend: str, mode: str) -> str:
    """'lmdb' for the default durability, else 'lmdb fsync' and so on."""
    return backend if mode == "off" else f"{backend} {mode}"


def load_label(workers, mode, rate) -> str:
    """Human label of a load group: '2 workers, open 500/s'."""
    w = int(workers) if pd.notna(workers) else "?"
    rate_txt = f" {float(rate):g}/s" if pd.notna(rate) and float(rate) > 0 else ""
    mode_txt = mode if isinstance(mode, str) and mode else "open"
    return f"{w} worker{'s' if w != 1 else ''}, {mode_txt}{rate_txt}"


def normalise_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy of runs.csv with typed flags and the derived columns the report uses:
    ``durability``, ``variant``, ``load``, ``ok`` (status ok and generator not saturated)."""
    df = runs.copy()
    for col in ("fsync", "eatmydata", "generator_saturated"):
        df[col] = df[col].map(to_bool) if col in df else False
    df["status"] = df["status"].fillna("ok").astype(str)
    df["reason"] = df["reason"].fillna("").astype(str) if "reason" in df else ""
    df["mode"] = df["mode"].fillna("open").astype(str)
    df["durability"] = [durability(f, e) for f, e in zip(df["fsync"], df["eatmydata"])]
    df["variant"] = [variant_label(b, m) for b, m in zip(df["backend"], df["durability"])]
    df["load"] = [load_label(w, m, r) for w, m, r in zip(df["workers"], df["mode"],
                                                        df["rate_target"])]
    df["ok"] = (df["status"] == "ok") & ~df["generator_saturated"]
    return df


def variant_order(df: pd.DataFrame) -> list[str]:
    """Variants in a stable order: backends as in BACKEND_COLOURS, then durability modes."""
    known = list(BACKEND_COLOURS)
    pairs = df[["backend", "durability", "variant"]].drop_duplicates()
    key = [(known.index(b) if b in known else len(known), b, DURABILITY_MODES.index(d)
            if d in DURABILITY_MODES else 9) for b, d in zip(pairs["backend"], pairs["durability"])]
    return [v for _, v in sorted(zip(key, pairs["variant"]))]


def load_order(df: pd.DataFrame) -> list[str]:
    """Load groups ordered by workers, then rate."""
    groups = df[["workers", "rate_target", "load"]].drop_duplicates()
    groups = groups.sort_values(["workers", "rate_target"], na_position="last")
    return list(dict.fromkeys(groups["load"]))
