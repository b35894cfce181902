"""``harness report [RESULTS_DIR]``: plots and an HTML/Markdown report of a results folder.

Modules: ``style`` (colours, labels, run normalisation), ``plots`` (one function per
figure, for notebooks too), ``tables`` and ``verdicts`` (derived tables), ``render``
(writes report.html, report.md, plots/*.png). This package module stays light (no
matplotlib import) so ``harness compare`` can reuse ``style`` cheaply.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", nargs="?", default="results/latest", type=Path,
                        metavar="RESULTS_DIR",
                        help="a folder written by `harness run` (default results/latest)")


def check_folder(folder: Path) -> Path:
    """The folder resolved, or InvalidInput naming what is missing."""
    if not folder.exists():
        raise InvalidInput(f"{folder}: no such results folder (give a folder written by "
                           "`harness run`, e.g. results/latest)")
    if not (folder / "runs.csv").is_file() and not (folder / "runs.parquet").is_file():
        raise InvalidInput(f"{folder}: not a results folder (runs.csv is missing)")
    return folder.resolve()


def run(args: argparse.Namespace) -> int:
    from harness.report.render import write_report  # matplotlib only when reporting

    folder = check_folder(Path(args.results_dir))
    report = write_report(folder)
    print(f"wrote {report.html} ({len(report.plots)} plots), {report.markdown}")
    for note in report.notes:
        print(f"note: {note}")
    return 0
