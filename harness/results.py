"""Write and load a results folder (the schema of DESIGN.md, the contract of notebooks and compare).

Layout written by :func:`write`::

    <root>/<scenario>/<YYYYmmdd-HHMMSS>/
        manifest.json      environment and resolved scenario (see harness.manifest)
        runs.csv           one row per run: harness.schema.RUN_COLUMNS first, extra columns after
        runs.parquet       the same rows (when pandas + pyarrow are installed)
        timeseries.csv     run_id, t_s, calls_completed, calls_failed, p50_ms, p99_ms
        hdr/<run_id>.<txn>.hgrm   HdrHistogram percentile distributions, values in milliseconds
    <root>/latest -> <scenario>/<YYYYmmdd-HHMMSS>    (relative symlink, replaced atomically)

:func:`load` accepts a run folder, a ``<root>/<scenario>`` folder (its newest run),
a results root, or the ``latest`` symlink, and returns :class:`Results` with pandas
DataFrames. ``histograms`` has one row per line of every .hgrm file:
``run_id, txn, percentile, value_ms, total_count`` where ``percentile`` is in
percent (0..100, e.g. 99.9) -- the .hgrm file itself stores the fraction 0.999.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from harness.errors import InvalidInput
from harness.schema import RUN_COLUMNS, TIMESERIES_COLUMNS

RUN_FOLDER_RE = re.compile(r"^\d{8}-\d{6}(-\d+)?$")
BOOL_COLUMNS = ("fsync", "eatmydata", "generator_saturated")
TEXT_COLUMNS = ("run_id", "backend", "generator", "mode", "status", "reason")
HISTOGRAM_COLUMNS = ("run_id", "txn", "percentile", "value_ms", "total_count")


@dataclass(frozen=True)
class Results:
    """A loaded results folder: ``runs``, ``timeseries``, ``histograms`` DataFrames and the manifest."""

    path: Path
    runs: Any
    timeseries: Any
    histograms: Any
    manifest: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- writing
def new_run_folder(root: Path, scenario: str, when: Optional[float] = None) -> Path:
    """Create and return ``root/scenario/YYYYmmdd-HHMMSS`` (suffix -2, -3... if it exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when if when is not None else time.time()))
    parent = Path(root) / scenario
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise InvalidInput(f"{parent}: cannot create a new run folder")


def write(folder: Path, runs: Sequence[Mapping[str, Any]], timeseries: Iterable[Mapping[str, Any]],
          manifest: Mapping[str, Any], hdr: Optional[Mapping[str, Mapping[str, Any]]] = None,
          latest: bool = True) -> Path:
    """Write (or rewrite) every file of the run folder ``folder``; return it.

    ``runs``: rows keyed by column name (missing RUN_COLUMNS are left empty, extra keys
    become extra columns after RUN_COLUMNS). ``timeseries``: rows with TIMESERIES_COLUMNS.
    ``hdr``: run_id -> {txn: path of an .hgrm file}, copied to ``hdr/<run_id>.<txn>.hgrm``.
    ``latest``: point ``<root>/latest`` at this folder (root = folder's grandparent).
    Safe to call after every run so that an interrupted matrix keeps what it measured.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    columns = run_columns(runs)
    _write_csv(folder / "runs.csv", columns, runs)
    _write_parquet(folder / "runs.parquet", columns, runs)
    _write_csv(folder / "timeseries.csv", list(TIMESERIES_COLUMNS), list(timeseries))
    copy_histograms(folder / "hdr", hdr or {})
    _write_json(folder / "manifest.json", manifest)
    if latest:
        point_latest(folder)
    return folder


def run_columns(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """RUN_COLUMNS, then every other key in order of first appearance."""
    columns = list(RUN_COLUMNS)
    seen = set(columns)
    for row in runs:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    return columns


def copy_histograms(hdr_dir: Path, hdr: Mapping[str, Mapping[str, Any]]) -> None:
    """Copy each run's .hgrm files to ``hdr_dir/<run_id>.<txn>.hgrm`` (skips missing sources)."""
    hdr_dir.mkdir(exist_ok=True)
    for run_id, files in hdr.items():
        for txn, src in files.items():
            dest = hdr_dir / f"{run_id}.{txn}.hgrm"
            src = Path(src)
            if src.is_file() and src.resolve() != dest.resolve():
                shutil.copyfile(src, dest)


def point_latest(folder: Path) -> Path:
    """Make ``<root>/latest`` a relative symlink to ``folder`` (atomic replace); return the link."""
    folder = Path(folder)
    root = folder.parent.parent
    link = root / "latest"
    tmp = root / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.join(folder.parent.name, folder.name), tmp)
    os.replace(tmp, link)
    return link


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return value


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(columns)
        for row in rows:
            out.writerow([_cell(row.get(c)) for c in columns])
    os.replace(tmp, path)


def _write_parquet(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """runs.parquet mirrors runs.csv; skipped (file removed) when pandas/pyarrow are absent."""
    try:
        import pandas as pd
        import pyarrow  # noqa: F401  -- pandas needs it for parquet
    except ImportError:
        return
    frame = pd.DataFrame([{c: _cell(r.get(c)) for c in columns} for r in rows], columns=list(columns))
    frame = _typed_runs(frame.replace({"": None}))
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- loading
def resolve_folder(path: Path | str) -> Path:
    """The run folder that ``path`` designates (run folder, scenario folder, root, or latest)."""
    p = Path(path)
    if not p.exists():
        raise InvalidInput(f"{p}: no such results folder")
    p = p.resolve()
    if (p / "runs.csv").is_file():
        return p
    if (p / "latest").exists():
        return resolve_folder(p / "latest")
    runs = sorted(d for d in p.iterdir() if d.is_dir() and RUN_FOLDER_RE.match(d.name)
                  and (d / "runs.csv").is_file())
    if runs:
        return max(runs, key=_folder_order)
    raise InvalidInput(f"{p}: not a results folder (no runs.csv, no latest link, no YYYYmmdd-HHMMSS run folders)")


def _folder_order(d: Path) -> tuple[str, int]:
    """Sort key of ``YYYYmmdd-HHMMSS[-N]``: the stamp, then N (1 when absent)."""
    return (d.name[:15], int(d.name[16:] or 1))


def load(path: Path | str = "results/latest") -> Results:
    """Load a results folder into DataFrames (see the module docstring)."""
    import pandas as pd

    folder = resolve_folder(path)
    try:
        runs = pd.read_csv(folder / "runs.csv", keep_default_na=True, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{folder / 'runs.csv'}: unreadable CSV: {exc}") from None
    missing = [c for c in ("run_id", "backend", "status") if c not in runs.columns]
    if missing:
        raise InvalidInput(f"{folder / 'runs.csv'}: missing column {missing[0]!r}; "
                           f"expected the columns of harness.schema.RUN_COLUMNS")
    runs = _typed_runs(runs)
    return Results(path=folder, runs=runs, timeseries=_load_timeseries(folder),
                   histograms=load_histograms(folder / "hdr"), manifest=load_manifest(folder))


def _typed_runs(runs: Any) -> Any:
    """Booleans as pandas' nullable boolean, text as str/None, every other RUN_COLUMN numeric."""
    import pandas as pd

    for col in RUN_COLUMNS:
        if col not in runs.columns:
            runs[col] = None
    for col in BOOL_COLUMNS:
        runs[col] = runs[col].map(_to_bool).astype("boolean")
    for col in TEXT_COLUMNS:
        runs[col] = runs[col].astype(object).where(runs[col].notna(), None)
        runs[col] = runs[col].map(lambda v: v if v is None else str(v))
    for col in RUN_COLUMNS:
        if col not in BOOL_COLUMNS and col not in TEXT_COLUMNS:
            runs[col] = pd.to_numeric(runs[col], errors="coerce")
    return runs


def _to_bool(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        low = value.strip().lower()
        return {"true": True, "1": True, "false": False, "0": False}.get(low)
    return bool(value)


def _load_timeseries(folder: Path) -> Any:
    import pandas as pd

    path = folder / "timeseries.csv"
    if not path.is_file():
        return pd.DataFrame(columns=list(TIMESERIES_COLUMNS))
    frame = pd.read_csv(path)
    frame["run_id"] = frame["run_id"].astype(str)
    return frame


def load_manifest(folder: Path) -> dict:
    """``folder``'s manifest.json, or {} when it has none; InvalidInput when unreadable."""
    path = folder / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"{path}: not valid JSON: {exc}") from None


def parse_hgrm(text: str) -> list[tuple[float, float, int]]:
    """(percentile in percent, value_ms, total_count) per data line of an .hgrm text."""
    rows: list[tuple[float, float, int]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) not in (3, 4) or line.lstrip().startswith("#"):
            continue
        try:
            value, fraction, count = float(parts[0]), float(parts[1]), int(float(parts[2]))
        except ValueError:
            continue  # the header line
        rows.append((fraction * 100.0, value, count))
    return rows


def load_histograms(hdr_dir: Path) -> Any:
    """DataFrame of every ``<run_id>.<txn>.hgrm`` under ``hdr_dir`` (HISTOGRAM_COLUMNS)."""
    import pandas as pd

    records = []
    if hdr_dir.is_dir():
        for path in sorted(hdr_dir.glob("*.hgrm")):
            run_id, _, txn = path.name[: -len(".hgrm")].rpartition(".")
            if not run_id:
                continue
            for pct, value, count in parse_hgrm(path.read_text(errors="replace")):
                records.append((run_id, txn, pct, value, count))
    return pd.DataFrame.from_records(records, columns=list(HISTOGRAM_COLUMNS))
