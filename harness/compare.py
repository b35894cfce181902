"""``harness compare BASE NEW``: regression verdicts between two results folders.

Runs are matched by configuration (backend, fsync, eatmydata, workers, generator,
mode, rate). For each metric, a configuration is *worse* (a regression) when the
median of NEW is worse than the median of BASE by more than ``--threshold`` percent
and, when both sides have at least 5 repeats, a one-sided Mann-Whitney U test also
gives p < 0.05; with fewer repeats no such test can reach that level, so the
threshold alone decides (the table says which rule applied). Count metrics
(lost_dialogs, ...) follow a stricter rule: any increase of the mean per run is a
regression. ``--reference B`` first divides each metric of a run by the value of the
run of backend B with the same workers, load and repeat number (run next to it in
time), which cancels machine drift; counts stay absolute (a ratio of losses means
nothing). Exit 0: no regression; 1: a regression; 2: invalid input (missing files,
unknown metric or reference, runs failed or with a saturated generator, nothing
matched).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from harness import results as results_mod
from harness.errors import EXIT_FAILED, EXIT_OK, InvalidInput
from harness.report import style

MATCH_KEYS = ("backend", "fsync", "eatmydata", "workers", "generator", "mode", "rate_target")
REF_KEYS = ("workers", "generator", "mode", "rate_target", "repeat")
FORMATS = ("md", "json", "github-action-benchmark", "bencher")
MIN_REPEATS_FOR_TEST = 5
ALPHA = 0.05


@dataclass(frozen=True)
class Metric:
    """A comparable column: its unit, which direction is better, and whether it is a count
    (any increase is a regression, never divided by the reference)."""

    name: str
    unit: str
    bigger_is_better: bool = False
    count: bool = False


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("throughput_cps", "calls/s", bigger_is_better=True),
    Metric("cpu_us_per_call", "µs/call"),
    Metric("invite_p99_ms", "ms"), Metric("invite_p50_ms", "ms"), Metric("invite_p90_ms", "ms"),
    Metric("invite_p999_ms", "ms"), Metric("invite_max_ms", "ms"),
    Metric("bye_p50_ms", "ms"), Metric("bye_p99_ms", "ms"),
    Metric("lost_dialogs", "dialogs", count=True), Metric("status_481", "responses", count=True),
    Metric("status_5xx", "responses", count=True), Metric("timeouts", "calls", count=True),
    Metric("calls_failed", "calls", count=True), Metric("store_leftover", "keys", count=True),
)}
DEFAULT_METRICS = ("throughput_cps", "cpu_us_per_call", "invite_p99_ms", "lost_dialogs")


@dataclass(frozen=True)
class Settings:
    """Everything one comparison depends on (built once from the command line)."""

    base: Path
    new: Path
    threshold_pct: float = 10.0
    metrics: tuple[str, ...] = DEFAULT_METRICS
    reference: Optional[str] = None
    ignore: tuple[tuple[str, str], ...] = ()   # (backend, metric) pairs shown but not judged
    fmt: str = "md"
    output: Optional[Path] = None


@dataclass(frozen=True)
class Row:
    """One (configuration, metric) verdict."""

    config: str
    backend: str
    metric: str
    unit: str
    base_median: float
    new_median: float
    change_pct: float
    n_base: int
    n_new: int
    rule: str
    p_value: float
    verdict: str            # better | worse | same | not comparable | ignored | reference
    new_min: float = math.nan
    new_max: float = math.nan
    bigger_is_better: bool = False


# --------------------------------------------------------------------------- input
def load_side(path: Path, side: str) -> pd.DataFrame:
    """Runs of one side, normalised; InvalidInput when unreadable or holding bad runs."""
    runs = style.normalise_runs(results_mod.load(path).runs)
    bad = runs[(runs["status"] == "failed") | runs["generator_saturated"]]
    if not bad.empty:
        names = [f"{r.run_id} ({r.variant}: "
                 f"{'failed: ' + r.reason if r.status == 'failed' else 'generator saturated'})"
                 for r in bad.itertuples()]
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        raise InvalidInput(f"{side} {path}: runs not usable for comparison: "
                           f"{'; '.join(names[:5])}{more}")
    # NaN never equals NaN: give match keys concrete values so both sides meet
    runs["generator"] = runs["generator"].fillna("builtin")
    runs["rate_target"] = pd.to_numeric(runs["rate_target"], errors="coerce").fillna(0.0)
    runs["workers"] = pd.to_numeric(runs["workers"], errors="coerce").fillna(0).astype(int)
    return runs[runs["status"] == "ok"].copy()


def relative_to(runs: pd.DataFrame, reference: str, metrics: Sequence[Metric], side: str) -> pd.DataFrame:
    """Divide every non-count metric by the same repeat's reference-backend run (its
    durability 'off' variant when there are several); rows without one get NaN."""
    refs = runs[runs["backend"] == reference]
    if refs.empty:
        raise InvalidInput(f"--reference {reference}: no ok run of backend {reference!r} in "
                           f"{side}; backends there: {', '.join(sorted(set(runs['backend'])))}")
    refs = refs.sort_values("durability", key=lambda s: s != "off").drop_duplicates(list(REF_KEYS))
    cols = [m.name for m in metrics if not m.count and m.name in runs]
    for col in cols:
        values = pd.to_numeric(refs[col], errors="coerce")
        if not (values > 0).any():  # e.g. `local` completes no call when dialogs cross workers
            raise InvalidInput(f"--reference {reference}: {col} is 0 or empty in every "
                               f"{reference} run of {side}; choose a backend with a non-zero {col}")
    merged = runs.merge(refs[list(REF_KEYS) + cols], on=list(REF_KEYS), how="left",
                        suffixes=("", "__ref"))
    for col in cols:
        denom = pd.to_numeric(merged[f"{col}__ref"], errors="coerce").replace(0, math.nan)
        merged[col] = pd.to_numeric(merged[col], errors="coerce") / denom
    return merged.drop(columns=[f"{c}__ref" for c in cols])


# --------------------------------------------------------------------------- judging
def judge(metric: Metric, base: Sequence[float], new: Sequence[float], threshold_pct: float
          ) -> tuple[str, str, float, float]:
    """(verdict, rule, change %, p) for one metric of one configuration."""
    b = [float(x) for x in base if not pd.isna(x)]
    n = [float(x) for x in new if not pd.isna(x)]
    if not b or not n:
        return "not comparable", "no value on one side", math.nan, math.nan
    if metric.count:
        mb, mn = sum(b) / len(b), sum(n) / len(n)
        change = (mn / mb - 1) * 100 if mb else (math.inf if mn else 0.0)
        verdict = "worse" if mn > mb else ("better" if mn < mb else "same")
        return verdict, "any increase of the mean", change, math.nan
    mb, mn = float(pd.Series(b).median()), float(pd.Series(n).median())
    if mb == 0:
        return "not comparable", "base median is 0", math.nan, math.nan
    change = (mn / mb - 1) * 100
    worse_by = -change if metric.bigger_is_better else change
    tested = len(b) >= MIN_REPEATS_FOR_TEST and len(n) >= MIN_REPEATS_FOR_TEST
    if not tested:  # too few repeats for any test to reach ALPHA: the threshold decides
        rule, p_worse, p_better = f"threshold only (n<{MIN_REPEATS_FOR_TEST})", math.nan, math.nan
    else:
        rule = f"threshold + Mann-Whitney p<{ALPHA}"
        p_worse, p_better = _mann_whitney(metric, b, n)
    if worse_by > threshold_pct and (not tested or p_worse < ALPHA):
        return "worse", rule, change, p_worse
    if -worse_by > threshold_pct and (not tested or p_better < ALPHA):
        return "better", rule, change, p_better
    return "same", rule, change, p_worse if worse_by > 0 else p_better


def _mann_whitney(metric: Metric, base: list[float], new: list[float]) -> tuple[float, float]:
    """One-sided p-values that NEW is worse, and that NEW is better, than BASE."""
    from scipy.stats import mannwhitneyu

    worse_alt = "less" if metric.bigger_is_better else "greater"
    better_alt = "greater" if metric.bigger_is_better else "less"
    p_worse = mannwhitneyu(new, base, alternative=worse_alt).pvalue
    p_better = mannwhitneyu(new, base, alternative=better_alt).pvalue
    return (1.0 if math.isnan(p_worse) else float(p_worse),
            1.0 if math.isnan(p_better) else float(p_better))


def compare(base: pd.DataFrame, new: pd.DataFrame, settings: Settings) -> list[Row]:
    """Every (configuration, metric) row, configurations in report order."""
    metrics = [METRICS[m] for m in settings.metrics]
    if settings.reference:
        base = relative_to(base, settings.reference, metrics, "BASE")
        new = relative_to(new, settings.reference, metrics, "NEW")
    keys = list(MATCH_KEYS)
    b_groups = {k: g for k, g in base.groupby(keys, dropna=False, sort=False)}
    n_groups = {k: g for k, g in new.groupby(keys, dropna=False, sort=False)}
    order = style.variant_order(pd.concat([base, new]))
    cells = sorted(set(b_groups) | set(n_groups), key=lambda k: _cell_order(k, b_groups, n_groups, order))
    rows = []
    for key in cells:
        b, n = b_groups.get(key), n_groups.get(key)
        sample = b if b is not None else n
        for metric in metrics:
            rows.append(_row(metric, sample, b, n, settings))
    return rows


def _cell_order(key, b_groups, n_groups, order):
    g = b_groups.get(key) if key in b_groups else n_groups[key]
    variant = g["variant"].iloc[0]
    return (float(g["workers"].iloc[0]), str(g["load"].iloc[0]),
            order.index(variant) if variant in order else len(order))


def _values(group: Optional[pd.DataFrame], col: str) -> list[float]:
    if group is None or col not in group:
        return []
    return list(pd.to_numeric(group[col], errors="coerce"))


def _row(metric: Metric, sample: pd.DataFrame, b, n, settings: Settings) -> Row:
    backend = sample["backend"].iloc[0]
    config = f"{sample['variant'].iloc[0]}, {sample['load'].iloc[0]}"
    bv, nv = _values(b, metric.name), _values(n, metric.name)
    verdict, rule, change, p = judge(metric, bv, nv, settings.threshold_pct)
    relative = settings.reference and not metric.count
    if relative and backend == settings.reference:
        verdict, rule = "reference", "the reference (ratio 1 by definition)"
    elif (backend, metric.name) in settings.ignore or ("*", metric.name) in settings.ignore:
        verdict = "ignored"
    clean_n = [x for x in nv if not pd.isna(x)]
    unit = f"ratio to {settings.reference}" if relative else metric.unit
    return Row(config, backend, metric.name, unit, _median(bv), _median(nv), change,
               len([x for x in bv if not pd.isna(x)]), len(clean_n), rule, p, verdict,
               min(clean_n) if clean_n else math.nan, max(clean_n) if clean_n else math.nan,
               metric.bigger_is_better)


def _median(values: list[float]) -> float:
    clean = [x for x in values if not pd.isna(x)]
    return float(pd.Series(clean).median()) if clean else math.nan


# --------------------------------------------------------------------------- output
def _fmt(x: float) -> str:
    if pd.isna(x):
        return ""
    if math.isinf(x):
        return "+inf"
    return f"{x:.4g}" if abs(x) < 1000 else f"{x:.0f}"


def format_markdown(rows: Sequence[Row], settings: Settings) -> str:
    """The verdict table, then one line per regression naming backend and metric."""
    ref = (f"; metrics divided by the same repeat's `{settings.reference}` run "
           "(counts stay absolute)" if settings.reference else "")
    out = [f"## harness compare: {settings.base} -> {settings.new}", "",
           f"Threshold {settings.threshold_pct:g}% on medians; Mann-Whitney U (one-sided, "
           f"p<{ALPHA}) only with >= {MIN_REPEATS_FOR_TEST} repeats per side, else the threshold "
           f"alone decides; any increase of a count is a regression{ref}.", "",
           "| configuration | metric | unit | base | new | change | n base/new | rule | p | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        change = "" if pd.isna(r.change_pct) else ("+inf" if math.isinf(r.change_pct)
                                                   else f"{r.change_pct:+.1f}%")
        verdict = f"**{r.verdict.upper()}**" if r.verdict == "worse" else r.verdict
        out.append(f"| {r.config} | {r.metric} | {r.unit} | {_fmt(r.base_median)} | "
                   f"{_fmt(r.new_median)} | {change} | {r.n_base}/{r.n_new} | {r.rule} | "
                   f"{_fmt(r.p_value)} | {verdict} |")
    counts = {v: sum(r.verdict == v for r in rows) for v in
              ("better", "worse", "same", "not comparable", "ignored", "reference")}
    out += ["", "Summary: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)]
    for r in (r for r in rows if r.verdict == "worse"):
        out.append(f"REGRESSION: {r.backend} ({r.config}): {r.metric} "
                   f"{_fmt(r.base_median)} -> {_fmt(r.new_median)} {r.unit} "
                   f"({'+inf' if math.isinf(r.change_pct) else f'{r.change_pct:+.1f}%'}; {r.rule})")
    return "\n".join(out) + "\n"


def _clean(value):
    return None if isinstance(value, float) and (math.isnan(value) or math.isinf(value)) else value


def format_json(rows: Sequence[Row], settings: Settings) -> str:
    data = {"base": str(settings.base), "new": str(settings.new),
            "threshold_pct": settings.threshold_pct, "reference": settings.reference,
            "metrics": list(settings.metrics),
            "rows": [{k: _clean(v) for k, v in asdict(r).items()} for r in rows],
            "regressions": [{"backend": r.backend, "config": r.config, "metric": r.metric,
                             "change_pct": _clean(r.change_pct)}
                            for r in rows if r.verdict == "worse"]}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _bench_name(r: Row) -> str:
    return f"{r.config} / {r.metric}"


def format_github_action_benchmark(rows: Sequence[Row], settings: Settings) -> str:
    """NEW's medians as github-action-benchmark 'custom' entries, split by direction:
    ``{"customBiggerIsBetter": [...], "customSmallerIsBetter": [...]}``; feed each list
    to the action with the tool of the same name (e.g. ``jq .customBiggerIsBetter``)."""
    out: dict[str, list] = {"customBiggerIsBetter": [], "customSmallerIsBetter": []}
    for r in rows:
        if pd.isna(r.new_median) or r.verdict == "reference":
            continue
        key = "customBiggerIsBetter" if r.bigger_is_better else "customSmallerIsBetter"
        out[key].append({"name": _bench_name(r), "unit": r.unit, "value": round(r.new_median, 6),
                         "range": f"{_fmt(r.new_min)}..{_fmt(r.new_max)}",
                         "extra": f"n={r.n_new}; vs base {_fmt(r.base_median)}: {r.verdict}"})
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


def format_bencher(rows: Sequence[Row], settings: Settings) -> str:
    """NEW's medians in Bencher Metric Format: {benchmark: {measure: {value, lower_value,
    upper_value}}}, benchmark = configuration, measure = metric (kebab case), bounds =
    min and max of the repeats."""
    out: dict[str, dict] = {}
    for r in rows:
        if pd.isna(r.new_median) or r.verdict == "reference":
            continue
        measure = r.metric.replace("_", "-") + (f"-per-{settings.reference}"
                                                if r.unit.startswith("ratio") else "")
        out.setdefault(r.config, {})[measure] = {
            "value": r.new_median, "lower_value": r.new_min, "upper_value": r.new_max}
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


FORMATTERS = {"md": format_markdown, "json": format_json,
              "github-action-benchmark": format_github_action_benchmark, "bencher": format_bencher}


# --------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", type=Path, metavar="BASE", help="baseline results folder")
    parser.add_argument("new", type=Path, metavar="NEW", help="results folder to judge")
    parser.add_argument("--threshold", type=float, default=10.0, metavar="PCT",
                        help="a median worse by more than PCT percent is a regression (default 10)")
    parser.add_argument("--metric", action="append", metavar="NAME",
                        help=f"metric to judge, repeatable (default {' '.join(DEFAULT_METRICS)}); "
                             f"known: {', '.join(METRICS)}")
    parser.add_argument("--reference", metavar="BACKEND",
                        help="divide each metric by the same repeat's run of BACKEND first")
    parser.add_argument("--ignore", action="append", default=[], metavar="BACKEND:METRIC",
                        help="show but do not judge METRIC of BACKEND ('*' for every backend)")
    parser.add_argument("--format", choices=FORMATS, default="md", dest="fmt",
                        help="output format (default md)")
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="write the chosen format to FILE and the Markdown table to stdout")


def settings_from(args: argparse.Namespace) -> Settings:
    """Validate the command line into Settings (InvalidInput naming the bad value)."""
    metrics = tuple(dict.fromkeys(args.metric or DEFAULT_METRICS))
    for name in metrics:
        if name not in METRICS:
            raise InvalidInput(f"--metric {name}: unknown metric; allowed: {', '.join(METRICS)}")
    if not (args.threshold >= 0 and math.isfinite(args.threshold)):
        raise InvalidInput(f"--threshold {args.threshold}: must be a percentage >= 0")
    ignore = []
    for item in args.ignore:
        backend, sep, metric = item.partition(":")
        if not sep or not backend or metric not in METRICS:
            raise InvalidInput(f"--ignore {item}: expected BACKEND:METRIC with METRIC one of "
                               f"{', '.join(METRICS)}")
        ignore.append((backend, metric))
    return Settings(args.base, args.new, args.threshold, metrics, args.reference, tuple(ignore),
                    args.fmt, args.output)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    base = load_side(settings.base, "BASE")
    new = load_side(settings.new, "NEW")
    rows = compare(base, new, settings)
    if not any(r.verdict not in ("not comparable", "reference") for r in rows):
        raise InvalidInput(f"{settings.base} and {settings.new}: no configuration ran ok on both "
                           f"sides (match keys: {', '.join(MATCH_KEYS)})")
    text = FORMATTERS[settings.fmt](rows, settings)
    if settings.output:
        settings.output.write_text(text, encoding="utf-8")
        text = format_markdown(rows, settings)
    sys.stdout.write(text)
    worse = [r for r in rows if r.verdict == "worse"]
    if worse and settings.fmt != "md":
        for r in worse:
            print(f"harness compare: regression: {r.backend} ({r.config}): {r.metric} "
                  f"{r.change_pct:+.1f}%", file=sys.stderr)
    return EXIT_FAILED if worse else EXIT_OK
