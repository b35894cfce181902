"""`harness compare`: exit codes, the regression rules, --reference and the export formats."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.compare import METRICS, judge
from tests.report import fabricate
from tests.report.conftest import run_harness


def edit_runs(folder, backend, column, fn, repeats=None):
    """Apply ``fn`` to ``column`` of ``backend``'s runs in runs.csv and runs.parquet."""
    for name in ("runs.csv", "runs.parquet"):
        path = folder / name
        if not path.exists():
            continue
        df = pd.read_csv(path) if name.endswith("csv") else pd.read_parquet(path)
        mask = df["backend"] == backend
        if repeats is not None:
            mask &= df["repeat"].isin(repeats)
        df.loc[mask, column] = df.loc[mask, column].map(fn)
        df.to_csv(path, index=False) if name.endswith("csv") else df.to_parquet(path, index=False)


# ------------------------------------------------------------------ real results
def test_real_run_compared_with_itself_exits_0(real_results):
    proc = run_harness("compare", str(real_results), str(real_results))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REGRESSION" not in proc.stdout
    assert "| lmdb, 2 workers" in proc.stdout and "| local, 2 workers" in proc.stdout


def test_real_run_with_lmdb_throughput_cut_40pct_exits_1_naming_it(real_results, copy_of):
    new = copy_of(real_results)
    edit_runs(new, "lmdb", "throughput_cps", lambda v: v * 0.6)
    proc = run_harness("compare", str(real_results), str(new))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REGRESSION")]
    assert len(lines) == 1 and "lmdb" in lines[0] and "throughput_cps" in lines[0], proc.stdout
    assert "-40.0%" in lines[0]


def test_real_run_reference_cancels_a_uniformly_slower_machine(real_results, copy_of):
    new = copy_of(real_results)
    for backend in ("local", "shm", "lmdb"):  # everything 30% slower: noise, not a change
        edit_runs(new, backend, "throughput_cps", lambda v: v * 0.7)
    plain = run_harness("compare", str(real_results), str(new), "--metric", "throughput_cps")
    assert plain.returncode == 1
    rel = run_harness("compare", str(real_results), str(new), "--metric", "throughput_cps",
                      "--reference", "shm")
    assert rel.returncode == 0, rel.stdout + rel.stderr
    assert "ratio to shm" in rel.stdout and "| reference |" in rel.stdout


def test_real_run_reference_without_completed_calls_is_refused(real_results):
    # at 2 workers the unshared control completes no call: nothing to divide by
    proc = run_harness("compare", str(real_results), str(real_results), "--reference", "local")
    assert proc.returncode == 2 and "--reference local: throughput_cps is 0" in proc.stderr


# ------------------------------------------------------------------ rules on synthetic data
def test_a_lost_dialog_on_a_shared_backend_is_a_regression(fabricated, copy_of):
    new = copy_of(fabricated)
    edit_runs(new, "shm", "lost_dialogs", lambda v: v + 1, repeats=[0])
    proc = run_harness("compare", str(fabricated), str(new))
    assert proc.returncode == 1
    assert any("shm" in ln and "lost_dialogs" in ln for ln in proc.stdout.splitlines()
               if ln.startswith("REGRESSION")), proc.stdout


def test_more_losses_in_the_unshared_control_are_a_regression_too(fabricated, copy_of):
    new = copy_of(fabricated)
    edit_runs(new, "local", "lost_dialogs", lambda v: v + 5)
    proc = run_harness("compare", str(fabricated), str(new), "--metric", "lost_dialogs")
    assert proc.returncode == 1 and "REGRESSION: local" in proc.stdout
    ignored = run_harness("compare", str(fabricated), str(new), "--metric", "lost_dialogs",
                          "--ignore", "local:lost_dialogs")
    assert ignored.returncode == 0 and "ignored" in ignored.stdout


def test_with_five_repeats_the_mann_whitney_test_is_used(tmp_path):
    base = fabricate.write_results(tmp_path / "base", repeats=5, seed=1)
    new = fabricate.write_results(tmp_path / "new", repeats=5, seed=2)
    fabricate.scale_metric(new, "redis", "invite_p99_ms", 1.5)
    proc = run_harness("compare", str(base), str(new), "--format", "json",
                       "--ignore", "local:lost_dialogs")  # random by construction
    data = json.loads(proc.stdout)
    rows = {(r["config"].split(",")[0], r["metric"]): r for r in data["rows"]}
    p99 = rows[("redis", "invite_p99_ms")]
    assert p99["verdict"] == "worse" and p99["p_value"] < 0.05 and "Mann-Whitney" in p99["rule"]
    assert proc.returncode == 1
    assert {(r["backend"], r["metric"]) for r in data["regressions"]} == {("redis", "invite_p99_ms")}


@pytest.mark.parametrize("base,new,expect", [
    ([100, 101, 99], [85, 86, 84], "worse"),       # n<5: -15% > 10%, threshold alone
    ([100, 101, 99], [95, 96, 94], "same"),        # -5% within threshold
    ([100, 101, 99], [120, 119, 121], "better"),
    # n>=5, median 12% worse but the samples overlap: the test does not confirm it
    ([100, 70, 130, 95, 105], [88, 60, 140, 80, 92], "same"),
    ([100, 101, 99, 102, 98], [80, 81, 79, 82, 78], "worse"),
])
def test_judge_throughput(base, new, expect):
    verdict, rule, _, p = judge(METRICS["throughput_cps"], base, new, 10.0)
    assert verdict == expect, (rule, p)
    assert ("threshold only" in rule) == (len(base) < 5)


def test_judge_directions_and_counts():
    assert judge(METRICS["invite_p99_ms"], [2, 2, 2], [3, 3, 3], 10)[0] == "worse"
    assert judge(METRICS["cpu_us_per_call"], [200, 200], [150, 150], 10)[0] == "better"
    assert judge(METRICS["lost_dialogs"], [0, 0, 0], [0, 1, 0], 10)[0] == "worse"
    assert judge(METRICS["lost_dialogs"], [0, 0], [0, 0], 10)[0] == "same"
    assert judge(METRICS["throughput_cps"], [], [1.0], 10)[0] == "not comparable"


# ------------------------------------------------------------------ invalid input -> 2
def test_missing_folder_exits_2(fabricated, tmp_path):
    proc = run_harness("compare", str(fabricated), str(tmp_path / "nope"))
    assert proc.returncode == 2 and "nope" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("kind", ["failed", "saturated"])
def test_failed_or_saturated_runs_exit_2_and_are_named(tmp_path, kind):
    base = fabricate.write_results(tmp_path / "base")
    new = fabricate.write_results(tmp_path / "new", **{kind: "lmdb"})
    proc = run_harness("compare", str(base), str(new))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "NEW" in proc.stderr and "-lmdb-" in proc.stderr
    assert ("failed" if kind == "failed" else "generator saturated") in proc.stderr


@pytest.mark.parametrize("args,needle", [
    (["--metric", "speed"], "--metric speed"),
    (["--reference", "nosuch"], "--reference nosuch"),
    (["--ignore", "local"], "--ignore local"),
    (["--threshold", "-5"], "--threshold"),
])
def test_bad_options_exit_2_with_one_line(fabricated, args, needle):
    proc = run_harness("compare", str(fabricated), str(fabricated), *args)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_nothing_in_common_exits_2(tmp_path):
    base = fabricate.write_results(tmp_path / "base", workers=(1,))
    new = fabricate.write_results(tmp_path / "new", workers=(2,))
    proc = run_harness("compare", str(base), str(new))
    assert proc.returncode == 2 and "no configuration ran ok on both sides" in proc.stderr


# ------------------------------------------------------------------ exports
def test_github_action_benchmark_export(fabricated, tmp_path):
    out = tmp_path / "gab.json"
    proc = run_harness("compare", str(fabricated), str(fabricated), "--format",
                       "github-action-benchmark", "--output", str(out))
    assert proc.returncode == 0 and "| configuration |" in proc.stdout  # table still printed
    data = json.loads(out.read_text())
    bigger, smaller = data["customBiggerIsBetter"], data["customSmallerIsBetter"]
    assert {e["name"].split(" / ")[1] for e in bigger} == {"throughput_cps"}
    assert {e["name"].split(" / ")[1] for e in smaller} == {"cpu_us_per_call", "invite_p99_ms",
                                                            "lost_dialogs"}
    for entry in bigger + smaller:
        assert isinstance(entry["value"], (int, float)) and entry["unit"] and entry["name"]


def test_bencher_export(fabricated):
    proc = run_harness("compare", str(fabricated), str(fabricated), "--format", "bencher",
                       "--reference", "shm")
    data = json.loads(proc.stdout)
    lmdb = data["lmdb fsync, 2 workers, open 500/s"]
    assert set(lmdb) == {"throughput-cps-per-shm", "cpu-us-per-call-per-shm",
                         "invite-p99-ms-per-shm", "lost-dialogs"}
    m = lmdb["throughput-cps-per-shm"]
    assert m["lower_value"] <= m["value"] <= m["upper_value"] and 0.3 < m["value"] < 0.7
    assert "shm, 2 workers, open 500/s" in data  # its lost_dialogs stays; its ratios do not
    assert set(data["shm, 2 workers, open 500/s"]) == {"lost-dialogs"}
