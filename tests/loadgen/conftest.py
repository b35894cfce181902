"""Fixtures: a real `harness serve` (shm, 2 workers) and a runner of `harness load`."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, harness_cmd, running_server


@pytest.fixture(scope="module")
def shm_server():
    with running_server(backend="shm", workers=2) as ready:
        yield ready


def run_load(target: dict, *args: str, out: Path, timeout: float = 90) -> tuple[dict, str]:
    """Run `harness load` as a user would; (the JSON result, stderr). Fails on exit != 0."""
    cmd = harness_cmd("load", "--target", f"{target['host']}:{target['port']}",
                      "--json", str(out), *args)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stderr


@pytest.fixture
def load(tmp_path):
    def _load(target: dict, *args: str, name: str = "r.json", timeout: float = 90):
        return run_load(target, *args, out=tmp_path / name, timeout=timeout)
    return _load
