"""The notebooks: committed clean, and both execute headless on a real results folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.support import ROOT

NOTEBOOKS = ROOT / "notebooks"


@pytest.mark.parametrize("name", ["report", "compare"])
def test_notebook_is_committed_without_outputs_and_has_a_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "harness.results import load" in "".join(c.source for c in code)


def execute(name: str, out_dir: Path, env: dict) -> nbformat.NotebookNode:
    """Run ``jupyter nbconvert --to notebook --execute`` into ``out_dir``; return the result."""
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
           str(NOTEBOOKS / f"{name}.ipynb"), "--output-dir", str(out_dir),
           "--ExecutePreprocessor.timeout=180"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return nbformat.read(out_dir / f"{name}.ipynb", as_version=4)


def outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def test_report_notebook_executes_on_a_real_run(real_results, tmp_path):
    nb = execute("report", tmp_path, {"SIPSTATE_RESULTS": str(real_results)})
    outs = outputs(nb)
    assert not [o for o in outs if o.output_type == "error"]
    images = [o for o in outs if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    printed = "".join(o.get("text", "") for o in outs)
    assert str(real_results) in printed  # it read the folder named by the environment


def test_compare_notebook_executes_on_two_folders(real_results, copy_of, tmp_path):
    from tests.report.test_compare import edit_runs

    new = copy_of(real_results)
    edit_runs(new, "lmdb", "throughput_cps", lambda v: v * 0.6)
    nb = execute("compare", tmp_path, {"SIPSTATE_BASE": str(real_results), "SIPSTATE_NEW": str(new)})
    outs = outputs(nb)
    assert not [o for o in outs if o.output_type == "error"]
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outs)
    assert "REGRESSION: lmdb" in markdown and "throughput_cps" in markdown
    assert len([o for o in outs if "image/png" in o.get("data", {})]) >= 4


def test_report_notebook_takes_a_papermill_parameter_over_the_environment(fabricated, tmp_path):
    out = tmp_path / "out.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOKS / "report.ipynb"), str(out),
           "-p", "results_dir", str(fabricated), "--kernel", "python3"]
    env = {**os.environ, "SIPSTATE_RESULTS": str(tmp_path / "not-this-one")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = "".join(o.get("text", "") for o in outputs(nbformat.read(out, as_version=4)))
    assert f"{fabricated}: 21 runs" in printed
