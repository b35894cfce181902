"""Write report.html (self-contained: every plot a base64 PNG), report.md and plots/*.png
for one results folder.

Contract: ``write_report(folder)`` reads the folder only through
``harness.results.load``, overwrites the three outputs inside it and returns a
``Report`` naming what it wrote. A plot with no data is skipped with a note in both
documents, never drawn empty.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import matplotlib

matplotlib.use("Agg")  # headless: the report is written to files, never shown

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from harness import results as results_mod  # noqa: E402
from harness.report import plots, style, tables, verdicts  # noqa: E402

DPI = 110


@dataclass(frozen=True)
class Section:
    """One plot of the report: file stem, heading, and why it is missing if it is."""

    name: str
    title: str
    figure: Optional[Figure]
    note: str = ""


@dataclass
class Report:
    html: Path
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_sections(res) -> list[Section]:
    """Every figure of the report, in reading order."""
    runs = style.normalise_runs(res.runs)
    specs: list[tuple[str, str, Callable[[], Optional[Figure]], str]] = [
        ("throughput", "Throughput", lambda: plots.plot_throughput(runs),
         "no successful run to plot"),
        ("latency_invite", "INVITE latency distribution",
         lambda: plots.plot_latency(runs, res.histograms, "invite"), "no INVITE histograms"),
        ("latency_bye", "BYE latency distribution",
         lambda: plots.plot_latency(runs, res.histograms, "bye"), "no BYE histograms"),
        ("cpu", "CPU per call", lambda: plots.plot_cpu(runs), "no successful run to plot"),
        ("durability", "Cost of durability", lambda: plots.plot_durability(runs),
         "no backend ran with more than one durability mode (fsync on/off, eatmydata), "
         "so there is no cost of durability to show"),
        ("timeseries", "Time series per run", lambda: plots.plot_timeseries(runs, res.timeseries),
         "no time series in this folder"),
    ]
    return [Section(name, title, make(), note) for name, title, make, note in specs]


def _fmt(value) -> str:
    if isinstance(value, float):
        if pd.isna(value):
            return ""
        return f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.3g}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    if df.empty:
        return "_(none)_\n"
    cells = [[_fmt(v).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([head, sep] + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"


def html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(none)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_tables(res) -> list[tuple[str, pd.DataFrame]]:
    runs = style.normalise_runs(res.runs)
    return [("Verdicts", verdicts.verdicts(runs)), ("Summary (medians of ok runs)", tables.summary(runs)),
            ("Correctness", tables.correctness(runs)), ("Generator health", tables.health(runs)),
            ("Runs excluded", tables.excluded(runs)), ("Environment", tables.environment(res.manifest))]


CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee}.note{color:#555;font-style:italic}"""


def write_report(folder: Path) -> Report:
    """Render the report of ``folder`` into the run folder it designates; see the module
    contract. Raises harness.errors.InvalidInput for a missing or malformed folder."""
    res = results_mod.load(folder)  # also resolves a results root, scenario folder or latest
    folder = Path(res.path)
    title = _title(res.manifest, folder)
    sections, tabs = build_sections(res), build_tables(res)
    plot_dir = folder / "plots"
    plot_dir.mkdir(exist_ok=True)
    report = Report(folder / "report.html", folder / "report.md")
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    md = [f"# {title}\n"]
    for name, table in tabs[:2]:
        h.append(f"<h2>{name}</h2>{html_table(table)}")
        md.append(f"## {name}\n\n{markdown_table(table)}")
    for sec in sections:
        h.append(f"<h2>{html.escape(sec.title)}</h2>")
        md.append(f"## {sec.title}\n")
        if sec.figure is None:
            report.notes.append(f"{sec.title}: {sec.note}")
            h.append(f"<p class='note'>Not plotted: {html.escape(sec.note)}.</p>")
            md.append(f"_Not plotted: {sec.note}._\n")
            continue
        data = plots.figure_png(sec.figure, DPI)
        path = plot_dir / f"{sec.name}.png"
        path.write_bytes(data)
        report.plots.append(path)
        h.append(f"<img alt='{html.escape(sec.title)}' src='data:image/png;base64,"
                 f"{base64.b64encode(data).decode()}'>")
        md.append(f"![{sec.title}](plots/{sec.name}.png)\n")
    for name, table in tabs[2:]:
        h.append(f"<h2>{name}</h2>{html_table(table)}")
        md.append(f"## {name}\n\n{markdown_table(table)}")
    h.append("</body></html>")
    report.html.write_text("\n".join(h), encoding="utf-8")
    report.markdown.write_text("\n".join(md), encoding="utf-8")
    return report


def _title(manifest: dict, folder: Path) -> str:
    scenario = manifest.get("scenario") if isinstance(manifest, dict) else None
    name = scenario.get("name") if isinstance(scenario, dict) else None
    return f"sipstate report: {name or folder.name} ({folder.name})"
