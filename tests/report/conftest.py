"""Fixtures of the report/compare tests.

``real_results``: one short real ``harness run`` of tests/report/data/tiny.yaml (local, shm
and lmdb, 2 workers, ~3 s each), made once per session. ``fabricated``: a synthetic folder
with every durability variant, for cases a short real run cannot produce.
Both are read-only for tests: a test that edits data copies the folder first.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness import results
from tests.report import fabricate
from tests.support import ROOT, harness_cmd

TINY = Path(__file__).parent / "data" / "tiny.yaml"


def run_harness(*args: str, timeout: float = 120.0, env: dict | None = None,
                ) -> subprocess.CompletedProcess:
    """``python -m harness ARGS`` from the repo root; output captured as text."""
    import os

    return subprocess.run(harness_cmd(*args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def real_results(tmp_path_factory) -> Path:
    """The run folder of a real tiny run (local, shm, lmdb) (every row must be ok, or the tests cannot mean much)."""
    out = tmp_path_factory.mktemp("real")
    proc = run_harness("run", str(TINY), "--output", str(out), timeout=240)
    assert proc.returncode == 0, f"harness run failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    folder = results.resolve_folder(out)
    runs = results.load(folder).runs
    assert set(runs["backend"]) == {"local", "shm", "lmdb"}, runs[["run_id", "backend", "status"]]
    assert (runs["status"] == "ok").all(), runs[["run_id", "status", "reason"]].to_string()
    return folder


@pytest.fixture(scope="session")
def fabricated(tmp_path_factory) -> Path:
    """Synthetic folder: local, shm, lmdb (+fsync, +fsync+eatmydata), redis (+fsync); 3 repeats."""
    return fabricate.write_results(tmp_path_factory.mktemp("fab") / "run")


@pytest.fixture
def copy_of(tmp_path):
    """copy_of(folder) -> a private copy that the test may edit."""
    def make(folder: Path, name: str = "copy") -> Path:
        dest = tmp_path / name
        shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("report.*", "plots"))
        return dest
    return make
