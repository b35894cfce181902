"""harness.pool: several results folders of one scenario become one with more repeats,
which harness.results and harness compare read like any run folder."""
from __future__ import annotations

import json

import pytest

from harness import results
from harness.errors import InvalidInput
from harness.pool import main, pool
from tests.report.conftest import run_harness


def test_pooled_folder_has_every_run_renamed_with_its_histograms_and_series(real_results, tmp_path):
    one = results.load(real_results)
    dest = pool([real_results, real_results, real_results], tmp_path / "pooled")
    both = results.load(dest)
    assert len(both.runs) == 3 * len(one.runs)
    assert both.runs["run_id"].is_unique
    assert set(both.runs["run_id"]) == {f"s{k}-{r}" for k in (1, 2, 3) for r in one.runs["run_id"]}
    # each source's repeat r becomes offset + r: sources stay apart, a repeat stays together
    per_repeat = both.runs.groupby("repeat")["run_id"].apply(lambda ids: {i.split("-", 1)[0] for i in ids})
    assert sorted(both.runs["repeat"].unique()) == [1, 2, 3] and all(len(s) == 1 for s in per_repeat)
    assert set(both.histograms["run_id"]) == {f"s{k}-{r}" for k in (1, 2, 3)
                                              for r in one.histograms["run_id"].unique()}
    assert len(both.timeseries) == 3 * len(one.timeseries)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert len(manifest["pooled_from"]) == 3 and set(manifest["runs"]) == set(both.runs["run_id"])
    for info in manifest["runs"].values():
        assert all((dest / path).is_file() for path in info.get("hdr", {}).values())
    assert not (tmp_path / "latest").exists(), "pool must not move a latest link"


def test_pooled_baseline_compares_clean_with_reference(real_results, tmp_path):
    dest = pool([real_results, real_results], tmp_path / "pooled")
    proc = run_harness("compare", str(dest), str(real_results), "--reference", "shm")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("| lmdb") and "cpu_us_per_call" in ln)
    assert "| 2/1 |" in row and "same" in row, row  # matched per repeat against shm on both sides


def test_different_scenarios_or_nothing_are_refused(real_results, fabricated, tmp_path, capsys):
    with pytest.raises(InvalidInput, match="different scenarios"):
        pool([real_results, fabricated], tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert main([str(tmp_path / "y"), str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "absent" in err and err.startswith("harness.pool:")
