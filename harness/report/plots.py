"""The report's figures, one function each, usable from notebooks.

Contract: every function takes DataFrames as returned by ``harness.results.load`` (raw
or already passed through ``style.normalise_runs``) and returns a matplotlib Figure, or
None when the data holds nothing to plot (the caller says why). Figures are built
with the object API (no pyplot state); each has a title, axis labels with units and a
legend, and colours every backend with ``style.colour``. Only runs with status ok and
an unsaturated generator are plotted, except in the time series, which shows all.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from harness.report import style

NINES_TICKS = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
NINES_LABELS = ("0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%")
COMPONENTS = (("cpu_server_s", "server"), ("cpu_service_s", "service"),
              ("cpu_loadgen_s", "generator"))


def _ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    df = style.normalise_runs(runs) if "variant" not in runs else runs
    return df[df["ok"]]


def _panels(n: int, width_each: float, height: float, sharey: bool = True):
    fig = Figure(figsize=(max(7.0, width_each * n), height), layout="constrained")
    axes = fig.subplots(1, n, sharey=sharey, squeeze=False)[0]
    return fig, axes


def _durability_legend(modes) -> list:
    return [Patch(facecolor="white", edgecolor="black", hatch=style.HATCHES[m],
                  label=f"durability: {m}") for m in style.DURABILITY_MODES if m in set(modes)]


def plot_throughput(runs: pd.DataFrame) -> Figure | None:
    """Calls/s per backend variant, one panel per load group: bar = median of repeats,
    whisker = min..max, dots = each repeat, dashed line = target rate."""
    df = _ok_runs(runs)
    if df.empty:
        return None
    loads, variants = style.load_order(df), style.variant_order(df)
    fig, axes = _panels(len(loads), 0.55 * len(variants) + 2.5, 4.8)
    for ax, load in zip(axes, loads):
        sub = df[df["load"] == load]
        present = [v for v in variants if v in set(sub["variant"])]
        for i, var in enumerate(present):
            vals = sub.loc[sub["variant"] == var, "throughput_cps"].astype(float)
            row = sub[sub["variant"] == var].iloc[0]
            med = vals.median()
            ax.bar(i, med, color=style.colour(row["backend"]), hatch=style.HATCHES[row["durability"]],
                   edgecolor="black", linewidth=0.6, yerr=[[med - vals.min()], [vals.max() - med]],
                   capsize=4)
            ax.plot([i] * len(vals), vals, "o", color="black", markersize=3, zorder=3)
            lost = pd.to_numeric(sub.loc[sub["variant"] == var, "lost_dialogs"], errors="coerce").sum()
            if lost > 0:  # a bar of completed calls hides the calls that were lost
                ax.annotate(f"lost {lost:.0f}\ndialogs", (i, vals.max()), xytext=(0, 4),
                            textcoords="offset points", ha="center", va="bottom",
                            fontsize="small", color="darkred")
        rate = sub["rate_target"].astype(float).max()
        if sub["mode"].iloc[0] == "open" and rate > 0:
            ax.axhline(rate, color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(present)), present, rotation=40, ha="right")
        ax.set_title(load)
        ax.set_xlabel("backend (durability)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("throughput (calls/s)")
    handles = [Patch(color="#dddddd", label="bar: median of repeats"),
               Line2D([], [], color="black", marker="|", linestyle="", markersize=9,
                      label="whisker: min-max"),
               Line2D([], [], color="black", marker="o", linestyle="", markersize=3, label="one repeat"),
               Patch(facecolor="white", edgecolor="darkred", label="red text: dialogs lost"),
               Line2D([], [], color="black", linestyle="--", label="target rate")]
    handles += _durability_legend(df["durability"])
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)),
               fontsize="small")
    for ax in axes:
        ax.margins(y=0.15)
    fig.suptitle("Completed calls per second, by backend")
    return fig


def _percentile_curve(hist: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """x = 1/(1-p) (the 'nines' axis), y = ms; p=100% is dropped (x would be infinite)."""
    p = hist["percentile"].astype(float).to_numpy()
    if p.max() > 1.0:  # tolerate percent as well as fraction
        p = p / 100.0
    keep = p < 1.0
    return 1.0 / (1.0 - p[keep]), hist["value_ms"].astype(float).to_numpy()[keep]


def _median_repeat(sub: pd.DataFrame, metric: str) -> str:
    ordered = sub.sort_values(metric, kind="stable")
    return ordered["run_id"].iloc[(len(ordered) - 1) // 2]


def plot_latency(runs: pd.DataFrame, histograms: pd.DataFrame, txn: str = "invite") -> Figure | None:
    """HdrHistogram-style percentile distribution of ``txn`` latency per backend variant,
    one panel per load group: the repeat with the median p99 drawn bold, the others thin."""
    df = _ok_runs(runs)
    hist = histograms[histograms["txn"] == txn]
    df = df[df["run_id"].isin(set(hist["run_id"]))]
    if df.empty:
        return None
    loads, variants = style.load_order(df), style.variant_order(df)
    fig, axes = _panels(len(loads), 6.0, 4.8)
    by_run = dict(tuple(hist.groupby("run_id")))
    p99_col = f"{txn}_p99_ms" if f"{txn}_p99_ms" in df else "throughput_cps"
    xmax = 10.0
    for ax, load in zip(axes, loads):
        sub = df[df["load"] == load]
        for var in [v for v in variants if v in set(sub["variant"])]:
            vs = sub[sub["variant"] == var]
            bold = _median_repeat(vs, p99_col)
            first = vs.iloc[0]
            for run_id in vs["run_id"]:
                x, y = _percentile_curve(by_run[run_id])
                xmax = max(xmax, x.max(initial=10.0))
                main = run_id == bold
                ax.plot(x, y, color=style.colour(first["backend"]),
                        linestyle=style.LINESTYLES[first["durability"]],
                        linewidth=1.8 if main else 0.6, alpha=1.0 if main else 0.5,
                        label=var if main else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(load)
        ax.set_xlabel("percentile")
        ax.grid(True, which="major", alpha=0.3)
    ticks = [t for t in NINES_TICKS if t <= xmax * 1.01]
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.5, 2, 10 rather than 5x10^-1
    for ax in axes:
        ax.set_xticks(ticks, NINES_LABELS[:len(ticks)])
        ax.set_xlim(1, xmax)
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize="x-small")
    # One legend for the figure, below it: inside a panel it hid the low percentiles.
    handles, labels = _unique_handles(axes)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(7, len(labels)),
               fontsize="small", title="thick: the repeat with the median p99; thin: other repeats",
               title_fontsize="small")
    axes[0].set_ylabel(f"{txn.upper()} latency (ms, log scale)")
    fig.suptitle(f"{txn.upper()} latency by percentile (coordinated-omission corrected)")
    return fig


def _unique_handles(axes) -> tuple[list, list[str]]:
    """Legend entries of all panels, each label once, in first-seen order."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def cpu_per_call(df: pd.DataFrame) -> pd.DataFrame:
    """Median µs of CPU per *attempted* call by component, per (load, variant, backend).
    Attempted, not completed: a call whose BYE got 481 still cost its messages, and the
    unshared control completes none at 2 workers."""
    rows = []
    for (load, var), sub in df.groupby(["load", "variant"], sort=False):
        calls = sub["calls_attempted"].astype(float).replace(0, np.nan)
        row = {"load": load, "variant": var, "backend": sub["backend"].iloc[0]}
        for col, name in COMPONENTS:
            per = sub[col].astype(float).fillna(0.0) * 1e6 / calls if col in sub else 0.0
            row[name] = float(np.nanmedian(per)) if len(sub) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def plot_cpu(runs: pd.DataFrame) -> Figure | None:
    """CPU µs per attempted call, stacked server / service / generator, per variant."""
    df = _ok_runs(runs)
    if df.empty:
        return None
    table = cpu_per_call(df)
    loads, variants = style.load_order(df), style.variant_order(df)
    fig, axes = _panels(len(loads), 0.55 * len(variants) + 2.5, 4.8)
    looks = {"server": dict(alpha=1.0, hatch=""), "service": dict(alpha=0.55, hatch="//"),
             "generator": dict(alpha=0.2, hatch="..")}
    for ax, load in zip(axes, loads):
        sub = table[table["load"] == load].set_index("variant")
        present = [v for v in variants if v in sub.index]
        for i, var in enumerate(present):
            bottom = 0.0
            for _, comp in COMPONENTS:
                val = sub.at[var, comp]
                ax.bar(i, val, bottom=bottom, color=style.colour(sub.at[var, "backend"]),
                       edgecolor="black", linewidth=0.6, **looks[comp])
                bottom += val
        ax.set_xticks(range(len(present)), present, rotation=40, ha="right")
        ax.set_title(load)
        ax.set_xlabel("backend (durability)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("CPU time per attempted call (µs)")
    handles = [Patch(facecolor="#555555", edgecolor="black", label=f"{comp}", **looks[comp])
               for _, comp in COMPONENTS]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, title="component",
               fontsize="small")
    fig.suptitle("CPU cost per call, by process (median of repeats)")
    return fig


def durability_backends(df: pd.DataFrame) -> list[str]:
    """Backends that ran with more than one durability mode (in one load group)."""
    counts = df.groupby(["load", "backend"])["durability"].nunique()
    return sorted(set(counts[counts > 1].index.get_level_values("backend")),
                  key=lambda b: list(style.BACKEND_COLOURS).index(b)
                  if b in style.BACKEND_COLOURS else 99)


def plot_durability(runs: pd.DataFrame) -> Figure | None:
    """Cost of durability: calls/s, CPU per call and INVITE p99 per durability mode, grouped by backend,
    for the load group with the most durability variants; labels give the change
    against the same backend with durability off. None when no backend varies."""
    df = _ok_runs(runs)
    backends = durability_backends(df) if not df.empty else []
    if not backends:
        return None
    df = df[df["backend"].isin(backends)]
    load = _richest_load(df)
    df = df[df["load"] == load]
    fig = Figure(figsize=(max(14.0, 4.5 * len(backends) + 3), 5.0), layout="constrained")
    axes = fig.subplots(1, 3)
    # At a rate every mode sustains, throughput stays at the target and the price of
    # fsync shows as CPU per call and tail latency; past it, as lost throughput.
    metrics = (("throughput_cps", "throughput (calls/s)"),
               ("cpu_us_per_call", "server + service CPU per call (µs)"),
               ("invite_p99_ms", "INVITE p99 (ms)"))
    for ax, (metric, label) in zip(axes, metrics):
        _durability_bars(ax, df, backends, metric)
        ax.set_ylabel(label)
        ax.set_xlabel("backend")
        ax.set_title(label.split(" (")[0] + " (labels: change vs durability off)",
                     fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    fig.legend(handles=_durability_legend(df["durability"]), loc="outside lower center",
               ncols=4, fontsize="small")
    fig.suptitle(f"Cost of durability per backend ({load}; whiskers: min-max of repeats)")
    return fig


def _richest_load(df: pd.DataFrame) -> str:
    """The load group with the most variants; ties go to the most workers."""
    ranked = df.groupby("load").agg(n=("variant", "nunique"), w=("workers", "max"))
    return ranked.sort_values(["n", "w"], ascending=False).index[0]


def _durability_bars(ax, df: pd.DataFrame, backends: list[str], metric: str) -> None:
    width = 0.8 / len(style.DURABILITY_MODES)
    for i, backend in enumerate(backends):
        sub = df[df["backend"] == backend]
        medians = sub.groupby("durability")[metric].median()
        modes = [m for m in style.DURABILITY_MODES if m in medians.index]
        for j, mode in enumerate(modes):
            x = i + (j - (len(modes) - 1) / 2) * width
            vals = sub.loc[sub["durability"] == mode, metric].astype(float).dropna()
            med = medians[mode]
            if vals.empty or pd.isna(med):
                continue  # e.g. no CPU figure: nothing completed
            ax.bar(x, med, width=width * 0.95, color=style.colour(backend),
                   hatch=style.HATCHES[mode], edgecolor="black", linewidth=0.6,
                   yerr=[[med - vals.min()], [vals.max() - med]], capsize=3)
            if mode != "off" and "off" in medians.index and medians["off"]:
                change = (med / medians["off"] - 1) * 100
                ax.annotate(f"{change:+.0f}%", (x, vals.max()), ha="center", va="bottom",
                            fontsize="small", xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(backends)), backends)
    ax.margins(y=0.12)


def calls_per_second(series: pd.DataFrame) -> pd.Series:
    """calls_completed of each interval divided by the interval's length in seconds."""
    t = series["t_s"].astype(float).to_numpy()
    dt = np.diff(t, prepend=0.0)
    if len(dt) > 1:
        dt[0] = dt[0] if dt[0] > 0 else np.median(dt[1:])
    dt[dt <= 0] = 1.0
    return pd.Series(series["calls_completed"].astype(float).to_numpy() / dt, index=series.index)


def plot_timeseries(runs: pd.DataFrame, timeseries: pd.DataFrame, max_runs: int = 64) -> Figure | None:
    """Small multiples, one panel per run (the first ``max_runs``, the title says so):
    calls/s (backend colour, left axis) and INVITE p99 (black dashed, right axis) over
    the measured seconds. Shared scales across panels."""
    df = style.normalise_runs(runs) if "variant" not in runs else runs
    df = df[df["run_id"].isin(set(timeseries["run_id"]))]
    total, df = len(df), df.head(max_runs)
    if df.empty:
        return None
    ncols = min(4, len(df))
    nrows = math.ceil(len(df) / ncols)
    fig = Figure(figsize=(3.4 * ncols + 0.6, 2.3 * nrows + 1.0), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    groups = dict(tuple(timeseries.groupby("run_id")))
    p99_top = float(timeseries["p99_ms"].astype(float).max()) * 1.1 or 1.0
    twins = [_run_panel(ax, run, groups[run["run_id"]].sort_values("t_s"), p99_top)
             for ax, (_, run) in zip(axes, df.iterrows())]
    _label_grid(axes, twins, ncols)
    handles = [Line2D([], [], color=style.colour(b), label=f"calls/s: {b}")
               for b in dict.fromkeys(df["backend"])]
    handles.append(Line2D([], [], color="black", linestyle="--", label="INVITE p99 (ms)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)),
               fontsize="small")
    shown = f" (first {len(df)} of {total} runs)" if total > len(df) else ""
    fig.suptitle(f"Per-second throughput and INVITE p99, one panel per run{shown}")
    return fig


def _run_panel(ax, run: pd.Series, ts: pd.DataFrame, p99_top: float):
    """Draw one run's panel; return its right-hand (p99) axis."""
    rate = calls_per_second(ts)
    ax.plot(ts["t_s"], rate, color=style.colour(run["backend"]), linewidth=1.5)
    if not rate.any():  # say it, or an empty panel looks like a plotting bug
        ax.text(0.5, 0.5, f"no call completed\n({int(ts['calls_failed'].sum())} failed)",
                transform=ax.transAxes, ha="center", va="center", fontsize="small")
    twin = ax.twinx()
    twin.plot(ts["t_s"], ts["p99_ms"], color="black", linestyle="--", linewidth=0.9)
    twin.set_ylim(0, p99_top)
    flag = "" if run["ok"] else f" [{run['status'] if run['status'] != 'ok' else 'saturated'}]"
    ax.set_title(f"{run['variant']} r{run['repeat']}, {run['workers']}w{flag}", fontsize="small")
    ax.grid(alpha=0.3)
    return twin


def _label_grid(axes, twins: list, ncols: int) -> None:
    """Axis labels on the outer panels only; unused panels hidden."""
    n = len(twins)
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[:n:ncols]:
        ax.set_ylabel("throughput (calls/s)")
    for i, twin in enumerate(twins):  # right-axis labels only on the last panel of a row
        if i % ncols == ncols - 1 or i == n - 1:
            twin.set_ylabel("p99 (ms)")
        else:
            twin.tick_params(labelright=False)
    for ax in axes[max(0, n - ncols):n]:
        ax.set_xlabel("time (s)")
    axes[0].set_ylim(bottom=0)


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (for files, HTML embedding and notebook display)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot_side_by_side(base_runs: pd.DataFrame, new_runs: pd.DataFrame,
                      metric: str = "throughput_cps", unit: str = "calls/s",
                      labels: tuple[str, str] = ("base", "new")) -> Figure | None:
    """Two results folders side by side: per (load, variant) the median of ``metric`` of
    each side (base plain, new hatched, same backend colour), whiskers min..max."""
    sides = [_ok_runs(base_runs), _ok_runs(new_runs)]
    both = pd.concat(sides)
    if both.empty or metric not in both:
        return None
    cells = [(load, var) for load in style.load_order(both)
             for var in style.variant_order(both[both["load"] == load])]
    fig = Figure(figsize=(max(7.0, 0.9 * len(cells) + 3), 4.8), layout="constrained")
    ax = fig.subplots()
    for i, (load, var) in enumerate(cells):
        for j, side in enumerate(sides):
            vals = pd.to_numeric(side.loc[(side["load"] == load) & (side["variant"] == var), metric],
                                 errors="coerce").dropna()
            if vals.empty:
                continue
            backend = both.loc[both["variant"] == var, "backend"].iloc[0]
            med = vals.median()
            ax.bar(i + (j - 0.5) * 0.4, med, width=0.38, color=style.colour(backend),
                   hatch="" if j == 0 else "//", edgecolor="black", linewidth=0.6,
                   yerr=[[med - vals.min()], [vals.max() - med]], capsize=3)
    several = len({c[0] for c in cells}) > 1
    ax.set_xticks(range(len(cells)), [f"{v}\n{l}" if several else v for l, v in cells],
                  rotation=30, ha="right")
    ax.set_ylabel(f"{metric} ({unit})")
    ax.set_xlabel("backend (durability)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=[Patch(facecolor="white", edgecolor="black", label=labels[0]),
                       Patch(facecolor="white", edgecolor="black", hatch="//", label=labels[1])],
              title="results folder", fontsize="small")
    ax.set_title(f"{metric}: {labels[0]} vs {labels[1]} (median, whiskers min-max)")
    return fig
