"""Pool several results folders of one scenario into one folder with more repeats.

    python -m harness.pool DEST SOURCE [SOURCE ...]

Why: a regression baseline measured in one sitting carries that sitting's machine
state. On the shared 2-core VM, the ratio redis/shm of CPU per call in ci_smoke
was 1.42 in one sitting and 1.5-1.9 in ten later ones, so a one-sitting baseline
raised false alarms against runs that were fine. Pooling sittings gives `harness
compare` a baseline median over many repeats taken at different times.

The pooled folder keeps the schema of DESIGN.md: run ids become ``s<K>-<run_id>``
(K = the source's position, from 1), repeats are renumbered so that each source's
repeat r becomes ``offset + r`` (runs of one repeat of one source stay together,
which ``compare --reference`` relies on), histograms and the time series follow
their run. The manifest is the first source's, with ``runs`` re-keyed and
``pooled_from`` listing every source (folder, start and end time, git commit).
"""
from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from harness import results
from harness.errors import HarnessError, InvalidInput


def pool(sources: Sequence[Path | str], dest: Path | str) -> Path:
    """Write the pooled folder ``dest`` (replaced if it exists) from ``sources``; return it."""
    if not sources:
        raise InvalidInput("give at least one results folder to pool")
    folders = [results.resolve_folder(s) for s in sources]
    manifests = [results.load_manifest(f) for f in folders]
    names = {m.get("scenario", {}).get("name") for m in manifests}
    if len(names) != 1:
        raise InvalidInput(f"the folders hold different scenarios ({sorted(map(str, names))}); "
                           "only runs of one scenario can be pooled")
    runs, series, hdr, offset = [], [], {}, 0
    for k, folder in enumerate(folders, 1):
        rows = _read_csv(folder / "runs.csv")
        renamed = {row["run_id"]: f"s{k}-{row['run_id']}" for row in rows}
        for row in rows:
            runs.append({**row, "run_id": renamed[row["run_id"]],
                         "repeat": offset + int(row["repeat"] or 0)})
        offset += max((int(row["repeat"] or 0) for row in rows), default=0)
        for row in _read_csv(folder / "timeseries.csv"):
            if row["run_id"] in renamed:
                series.append({**row, "run_id": renamed[row["run_id"]]})
        for path in sorted((folder / "hdr").glob("*.hgrm")):
            run_id, _, txn = path.name.removesuffix(".hgrm").rpartition(".")
            if run_id in renamed:
                hdr.setdefault(renamed[run_id], {})[txn] = path
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    return results.write(dest, runs, series, _pooled_manifest(folders, manifests), hdr, latest=False)


def _pooled_manifest(folders: list[Path], manifests: list[dict]) -> dict[str, Any]:
    pooled = dict(manifests[0])
    pooled["runs"] = {f"s{k}-{run_id}": {**info, "hdr": {t: f"hdr/s{k}-{Path(p).name}"
                                                            for t, p in info.get("hdr", {}).items()}}
                      for k, m in enumerate(manifests, 1) for run_id, info in m.get("runs", {}).items()}
    pooled["runs_planned"] = [f"s{k}-{r}" for k, m in enumerate(manifests, 1) for r in m.get("runs_planned", [])]
    pooled["end_time"] = manifests[-1].get("end_time")
    pooled["pooled_from"] = [{"folder": str(f), "start_time": m.get("start_time"),
                              "end_time": m.get("end_time"), "git": m.get("git")}
                             for f, m in zip(folders, manifests)]
    return pooled


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m harness.pool DEST SOURCE [SOURCE ...]", file=sys.stderr)
        return 2
    try:
        dest = pool(argv[1:], argv[0])
    except HarnessError as exc:
        print(f"harness.pool: {exc}", file=sys.stderr)
        return 2
    print(f"pooled {len(argv) - 1} folders into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
