"""``harness report [RESULTS_DIR]``: plots and an HTML/Markdown report of a results folder.

Modules: ``style`` (colours, labels, run normalisation), ``plots`` (one function per
figure, for notebooks too), ``tables`` and ``verdicts`` (derived tables), ``render``
(writes report.html, report.md, plots/*.png). This package module stays light (no
matplotlib import) so ``harness compare`` can reuse ``style`` cheaply.
"""
from __future__ import annotations

import argparse
from pathlib import Path



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", nargs="?", default="results/latest", type=Path,
                        metavar="RESULTS_DIR",
                        help="a folder written by `harness run` (default results/latest)")


def run(args: argparse.Namespace) -> int:
    from harness.report.render import write_report  # matplotlib only when reporting

    report = write_report(Path(args.results_dir))
    print(f"wrote {report.html} ({len(report.plots)} plots), {report.markdown}")
    for note in report.notes:
        print(f"note: {note}")
    return 0
