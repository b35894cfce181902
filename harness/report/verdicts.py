"""Verdicts: the short answers of the report, derived from the data alone.

Contract: ``verdicts(df)`` takes runs normalised by ``style.normalise_runs`` and returns
a DataFrame with columns ``question``, ``answer``, ``evidence``; a question the data
cannot answer is left out (never guessed). Medians are over ok runs of one
(load, variant) cell; comparisons only ever happen within one load group.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (load, variant) of ok runs with medians and loss totals."""
    ok = df[df["ok"]]
    if ok.empty:
        return pd.DataFrame()
    num = ok.assign(**{c: pd.to_numeric(ok[c], errors="coerce") for c in
                       ("throughput_cps", "cpu_us_per_call", "invite_p99_ms", "lost_dialogs",
                        "calls_attempted", "workers", "cross_worker_fraction")})
    num["rate_target"] = pd.to_numeric(num["rate_target"], errors="coerce").fillna(0.0)
    agg = num.groupby(["load", "variant", "backend", "durability", "mode"], sort=False).agg(
        cps=("throughput_cps", "median"), cpu=("cpu_us_per_call", "median"),
        cpu_min=("cpu_us_per_call", "min"), cpu_max=("cpu_us_per_call", "max"),
        p99=("invite_p99_ms", "median"), p99_min=("invite_p99_ms", "min"),
        p99_max=("invite_p99_ms", "max"), lost=("lost_dialogs", "sum"),
        attempted=("calls_attempted", "sum"), workers=("workers", "max"),
        cross=("cross_worker_fraction", "median"), runs=("run_id", "count"),
        rate=("rate_target", "max"))
    return agg.reset_index()


def _main_load(cells: pd.DataFrame) -> str:
    """The load group with the most workers, then the most variants: where sharing matters."""
    ranked = cells.groupby("load").agg(w=("workers", "max"), n=("variant", "count"))
    return ranked.sort_values(["w", "n"], ascending=False).index[0]


def _best(cells: pd.DataFrame, load: str) -> list[tuple[str, str, str]]:
    here = cells[cells["load"] == load]
    safe = here[(here["lost"] == 0) & (here["backend"] != "local")]
    if safe.empty:
        return [("Fastest backend that lost nothing", "none: every shared backend lost dialogs",
                 load)]
    out = []
    fast = safe.loc[safe["cps"].idxmax()]
    rate = float(here["rate"].max()) if "rate" in here else 0.0
    if here["mode"].iloc[0] == "open" and rate > 0 and (safe["cps"] >= 0.95 * rate).all():
        # every one kept up with an open-loop schedule: calls/s cannot rank them
        out.append(("Fastest backend that lost nothing",
                    "no ranking: every lossless backend kept up with the target rate",
                    f"{safe['cps'].min():.0f}-{safe['cps'].max():.0f} calls/s for a target of "
                    f"{rate:.0f}/s ({load}); compare CPU per call and latency instead"))
    else:
        out.append(("Fastest backend that lost nothing", fast["variant"],
                    f"{fast['cps']:.0f} calls/s median of {fast['runs']} runs ({load})"))
    if safe["cpu"].notna().any():
        answer, best = _lowest(safe, "cpu")
        out.append(("Cheapest lossless backend in CPU per call", answer,
                    f"{best['cpu']:.0f} µs/call median of {best['runs']} runs ({load})"))
    if safe["p99"].notna().any():
        answer, best = _lowest(safe, "p99")
        out.append(("Lowest INVITE p99 among lossless backends", answer,
                    f"{best['p99']:.2f} ms median of {best['runs']} runs ({load})"))
    return out


def _lowest(cells: pd.DataFrame, col: str) -> tuple[str, pd.Series]:
    """The variant with the lowest median of ``col``, and the others it cannot be told
    apart from: their min-max range over repeats overlaps the winner's."""
    best = cells.loc[cells[col].idxmin()]
    rivals = cells[(cells["variant"] != best["variant"]) & (cells[f"{col}_min"] <= best[f"{col}_max"])]
    if rivals.empty:
        return best["variant"], best
    names = ", ".join(rivals.sort_values(col)["variant"])
    return f"{best['variant']} (repeats overlap with {names})", best


def _losses(cells: pd.DataFrame, load: str) -> list[tuple[str, str, str]]:
    here = cells[cells["load"] == load]
    out = []
    for _, c in here[here["backend"] == "local"].iterrows():
        pct = 100.0 * c["lost"] / c["attempted"] if c["attempted"] else np.nan
        answer = (f"lost {c['lost']:.0f} dialogs ({pct:.1f}% of calls)" if c["lost"]
                  else "lost nothing: the cross-worker check did not bite")
        out.append(("Unshared control `local`", answer,
                    f"{c['runs']} runs, cross-worker fraction {c['cross']:.2f} ({load})"))
    shared = here[(here["backend"] != "local") & (here["lost"] > 0)]
    names = ", ".join(f"{v} ({n:.0f})" for v, n in zip(shared["variant"], shared["lost"]))
    out.append(("Shared backends that lost dialogs", names or "none",
                f"{(here['backend'] != 'local').sum()} shared variants checked ({load})"))
    return out


def _durability(cells: pd.DataFrame) -> list[tuple[str, str, str]]:
    out = []
    for (load, backend), sub in cells.groupby(["load", "backend"], sort=False):
        modes = sub.set_index("durability")
        if "off" not in modes.index:
            continue
        off = modes.loc["off"]
        if "fsync" in modes.index:
            on = modes.loc["fsync"]
            out.append((f"Price of fsync for {backend}",
                        f"{_pct(on['cps'], off['cps'])} calls/s, {_pct(on['cpu'], off['cpu'])} CPU/call",
                        f"INVITE p99 {off['p99']:.2f} -> {on['p99']:.2f} ms ({load})"))
            if "fsync+eatmydata" in modes.index and on["cps"] < off["cps"]:
                eat = modes.loc["fsync+eatmydata"]
                back = 100.0 * (eat["cps"] - on["cps"]) / (off["cps"] - on["cps"])
                out.append((f"eatmydata on {backend}",
                            f"recovers {back:.0f}% of the calls/s lost to fsync",
                            f"{on['cps']:.0f} -> {eat['cps']:.0f} calls/s, off {off['cps']:.0f} ({load})"))
    return out


def _pct(new: float, old: float) -> str:
    if not old or pd.isna(old) or pd.isna(new):
        return "n/a"
    return f"{100.0 * (new / old - 1):+.0f}%"


def _scaling(cells: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Gain from more workers per variant, when the matrix has several worker counts."""
    if cells["workers"].nunique() < 2:
        return []
    parts = []
    for var, sub in cells.groupby("variant", sort=False):
        if sub["workers"].nunique() > 1:
            lo, hi = sub.loc[sub["workers"].idxmin()], sub.loc[sub["workers"].idxmax()]
            if lo["cps"]:
                parts.append(f"{var} x{hi['cps'] / lo['cps']:.2f}")
    lo_w, hi_w = int(cells["workers"].min()), int(cells["workers"].max())
    return [(f"Throughput gain from {lo_w} to {hi_w} workers", "; ".join(parts) or "n/a",
             "ratio of median calls/s")]


def _exclusions(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    bad = df[~df["ok"]]
    failed = int((bad["status"] == "failed").sum())
    skipped = int((bad["status"] == "skipped").sum())
    saturated = int(((bad["status"] == "ok") & bad["generator_saturated"]).sum())
    answer = f"{len(bad)} of {len(df)} runs" if len(bad) else "none"
    return [("Runs excluded from the figures", answer,
             f"failed {failed}, skipped {skipped}, generator saturated {saturated}")]


def verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """The verdict table (question, answer, evidence) computed from ``df``."""
    rows = _exclusions(df)
    cells = _cells(df)
    if not cells.empty:
        load = _main_load(cells)
        rows = _best(cells, load) + _losses(cells, load) + _durability(cells) + \
            _scaling(cells) + rows
    return pd.DataFrame(rows, columns=["question", "answer", "evidence"])
