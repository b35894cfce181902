"""`harness run SCENARIO.yaml`: every run of a scenario's matrix, end to end, into results/.

    harness run SCENARIO.yaml [--output DIR] [--only key=value,...] [--dry-run]

For each :class:`harness.scenario.RunSpec` (see :mod:`harness.onerun` for one run's
steps) the runner records one row of runs.csv and rewrites the results folder, so
an interrupted matrix keeps what it measured. A run that fails is recorded with
``status=failed`` and its reason and the matrix goes on; a run whose program or
library is missing is ``skipped`` with the install command as its reason.

Exit codes (DESIGN.md): 0 every run ok (skipped runs allowed), 1 a run failed,
2 invalid input (scenario file, ``--only``), 3 every run was skipped because a
dependency is missing, 130 interrupted (Ctrl-C, SIGTERM, SIGHUP) -- and then
every process, shared-memory segment and temporary directory of the current run
has been removed.

``cpu_us_per_call`` = (``cpu_server_s`` + ``cpu_service_s``) / ``calls_completed``
x 1e6: the CPU time of the system under test (server master and workers, plus
redis-server / memcached when the backend needs one) per completed call during
the measurement window. The generator's CPU is reported apart
(``cpu_loadgen_s``) and excluded: it is the instrument, not the system.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from rich.console import Console
from rich.table import Table

from harness import manifest as env_manifest
from harness import results
from harness.errors import EXIT_FAILED, EXIT_MISSING, EXIT_OK, InvalidInput
from harness.onerun import RunContext, RunResult, execute
from harness.progress import MatrixProgress, estimate_seconds, summary_table
from harness.scenario import RunSpec, Scenario, expand, filter_specs, load_scenario, parse_only

REPO_ROOT = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO.yaml", help="scenario file (see scenarios/)")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="results root (default: the scenario's 'output', usually results/)")
    parser.add_argument("--only", metavar="KEY=VALUE,...", action="append", default=[],
                        help="run only the matching cells, e.g. backend=redis,workers=2 "
                             "(keys: backend store workers fsync eatmydata rate repeat generator storage; "
                             "a key given twice matches either value)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and exit")


def select_specs(scenario: Scenario, only: Sequence[str], path: str) -> list[RunSpec]:
    """The scenario's matrix, filtered by every ``--only``; InvalidInput if nothing is left."""
    specs = expand(scenario)
    for text in only:
        specs = filter_specs(specs, parse_only(text))
    if not specs:
        raise InvalidInput(f"--only {' '.join(only)}: matches none of the runs of {path}; "
                           f"see them with --dry-run")
    return specs


def plan_table(specs: Sequence[RunSpec], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("run_id", "backend", "fsync", "eatmydata", "storage", "workers", "rate", "generator", "repeat"):
        table.add_column(col)
    for s in specs:
        table.add_row(s.run_id, s.backend, str(s.fsync).lower(), str(s.eatmydata).lower(), s.storage,
                      str(s.workers), "-" if s.rate is None else f"{s.rate:g}", s.generator, str(s.repeat))
    return table


def run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    specs = select_specs(scenario, args.only, args.scenario)
    console = make_console()
    eta = sum(estimate_seconds(s) for s in specs)
    if args.dry_run:
        console.print(plan_table(specs, f"{scenario.name}: {len(specs)} runs, about {eta / 60:.1f} min"))
        return EXIT_OK
    root = Path(args.output or scenario.output)
    with interrupts_raise():
        rows = run_matrix(scenario, specs, root, console, Path(args.scenario))
    return exit_code(rows)


def make_console() -> Console:
    """A console for stdout; wide when not a terminal, so CI logs keep whole lines."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    return console


def exit_code(rows: Sequence[dict]) -> int:
    statuses = [r.get("status") for r in rows]
    if any(s == "failed" for s in statuses):
        return EXIT_FAILED
    if statuses and all(s == "skipped" for s in statuses):
        return EXIT_MISSING
    return EXIT_OK


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP act like Ctrl-C (KeyboardInterrupt), so every finally block runs."""
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def base_manifest(scenario: Scenario, specs: Sequence[RunSpec], path: Path, start: float) -> dict[str, Any]:
    env = env_manifest.environment(REPO_ROOT)
    return {
        "scenario": scenario.model_dump(mode="json"),
        "scenario_file": str(path),
        "command": ["harness", *sys.argv[1:]] if sys.argv and "harness" in sys.argv[0] else sys.argv,
        "runs_planned": [s.run_id for s in specs],
        "start_time": env_manifest.now_iso(start),
        "end_time": None,
        "interrupted": False,
        "cpu_us_per_call_definition": "(cpu_server_s + cpu_service_s) / calls_completed * 1e6; "
                                      "server = master + workers; generator excluded",
        **env,
        "filesystems": {},
        "runs": {},
    }


def run_matrix(scenario: Scenario, specs: Sequence[RunSpec], root: Path, console: Console,
               path: Path) -> list[dict]:
    """Run every spec, rewriting the results folder after each; returns the rows."""
    start = time.time()
    folder = results.new_run_folder(root, scenario.name, start)
    manifest = base_manifest(scenario, specs, path, start)
    ctx = RunContext(hdr_dir=folder / "hdr", disk_dir=Path(scenario.disk_dir), tty=console.is_terminal)
    rows: list[dict] = []
    series: list[dict] = []
    console.print(f"harness run {scenario.name}: {len(specs)} runs -> {folder}")
    try:
        with MatrixProgress(specs, console) as progress:
            for spec in specs:
                progress.begin(spec)
                result = execute(spec, ctx, progress.tick)
                record(result, rows, series, manifest)
                results.write(folder, rows, series, manifest)
                progress.end(spec, result.row)
    except KeyboardInterrupt:
        manifest["interrupted"] = True
        raise
    finally:
        manifest["end_time"] = env_manifest.now_iso()
        results.write(folder, rows, series, manifest)
    console.print(summary_table(rows, f"{scenario.name}: medians over repeats (ok runs)"))
    console.print(f"results: {folder}  (latest: {folder.parent.parent / 'latest'})")
    return rows


def record(result: RunResult, rows: list[dict], series: list[dict], manifest: dict) -> None:
    rows.append(result.row)
    series.extend(result.timeseries)
    manifest["runs"][result.row["run_id"]] = result.details
    for data_dir in result.data_dirs:
        manifest["filesystems"][data_dir] = env_manifest.filesystem_of(data_dir)
