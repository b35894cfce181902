"""`harness run` end to end with real servers, services and load: the results schema,
Ctrl-C cleanup, failed and skipped runs. Each test runs the real `harness` CLI in a
subprocess (its own session, like a terminal's foreground job)."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from harness import procs, results
from harness.schema import RUN_COLUMNS, TIMESERIES_COLUMNS
from tests.support import ROOT, harness_cmd

DATA = Path(__file__).resolve().parent / "data"


def harness_run(*args: str, env: dict | None = None, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(harness_cmd("run", *args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def run_dirs() -> set[str]:
    return set(glob.glob("/dev/shm/sipstate-run-*")) | set(glob.glob("/var/tmp/sipstate-run-*"))


def test_ci_smoke_writes_the_full_schema(tmp_path):
    before = run_dirs()
    proc = harness_run(str(ROOT / "scenarios" / "ci_smoke.yaml"), "--only", "repeat=1", "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "medians over repeats" in proc.stdout and "CPU µs/call" in proc.stdout

    res = results.load(tmp_path / "latest")
    assert res.path.parent == (tmp_path / "ci_smoke").resolve()
    runs = res.runs.set_index("backend")
    assert list(res.runs.columns[: len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    assert sorted(runs.index) == ["lmdb", "local", "redis", "shm"]
    assert set(runs["status"]) == {"ok"}, res.runs[["run_id", "status", "reason"]]
    assert runs.loc["local", "lost_dialogs"] > 0            # the unshared control fails visibly
    for shared in ("shm", "lmdb", "redis"):
        row = runs.loc[shared]
        assert row["lost_dialogs"] == 0 and row["status_481"] == 0
        assert row["calls_completed"] > 0 and row["cpu_us_per_call"] > 0
        assert row["cross_worker_fraction"] >= 0.4
        assert row["cpu_server_s"] > 0
    assert runs.loc["lmdb", "store_leftover"] == 0 and runs.loc["redis", "store_leftover"] == 0
    assert runs.loc["redis", "cpu_service_s"] > 0 and runs.loc["lmdb", "cpu_service_s"] == 0
    assert not runs["generator_saturated"].any()

    assert list(res.timeseries.columns) == list(TIMESERIES_COLUMNS)
    assert set(res.timeseries["run_id"]) == set(res.runs["run_id"])
    invite = res.histograms[res.histograms.txn == "invite"]
    assert set(invite["run_id"]) == set(res.runs["run_id"])
    assert (res.path / "runs.parquet").is_file()

    m = res.manifest
    assert m["scenario"]["name"] == "ci_smoke" and m["interrupted"] is False
    assert m["start_time"] <= m["end_time"]
    assert len(m["git"]["commit"] or "") == 40 and m["python"]["version"]
    assert m["packages"]["pydantic"] and m["servers"]["redis"] and m["host"]["cpu_cores"] >= 1
    assert m["host"]["cpu_model"] and m["host"]["kernel"] and m["host"]["memory_mb"] > 0
    assert any(fs["fstype"] == "tmpfs" for fs in m["filesystems"].values())
    redis_run = m["runs"][runs.loc["redis", "run_id"]]
    assert redis_run["service"]["kind"] == "redis" and redis_run["service"]["version"]
    assert run_dirs() <= before                             # every run directory removed


def cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # short-lived helpers (redis-server --version) come and go
        return ""


def server_tree(runner: psutil.Process, want_service: bool, timeout: float = 60.0) -> list[psutil.Process]:
    """Descendants of the runner once the generator runs (and redis-server, if wanted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = runner.children(recursive=True)
        lines = [cmdline(k) for k in kids]
        has_load = any(" load " in f" {c} " and "--target" in c for c in lines)
        has_service = any("redis-server" in c for c in lines)
        if has_load and (has_service or not want_service):
            return kids
        time.sleep(0.1)
    raise AssertionError("the runner never got to the load phase")


@pytest.mark.parametrize("backend", ["shm", "redis"])
def test_ctrl_c_in_the_middle_leaves_nothing_behind(tmp_path, backend):
    started = time.time()
    shm_before = set(os.listdir("/dev/shm"))
    proc = subprocess.Popen(harness_cmd("run", str(DATA / "interrupt.yaml"), "--only", f"backend={backend}",
                                        "--output", str(tmp_path)),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        runner = psutil.Process(proc.pid)
        kids = server_tree(runner, want_service=(backend == "redis"))
        time.sleep(1.0)  # calls in flight, dialogs in the store
        kids = runner.children(recursive=True)
        pids = {k.pid for k in kids}
        assert len(pids) >= 4   # serve master + 2 workers + load (+ redis-server)
        held = procs.shm_entries(pids, started)
        if backend == "shm":
            assert any(os.path.basename(p).startswith("psm_") for p in held), held
        ours = {p for p in held} | {d for d in run_dirs() if os.stat(d).st_ctime >= started - 1}
        assert any("sipstate-run-" in p for p in ours)
        os.killpg(proc.pid, signal.SIGINT)    # what a terminal's Ctrl-C does to the foreground job
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    alive = [p for p in pids if procs._state(p) not in (None, "Z")]
    assert alive == [], [cmdline(psutil.Process(p)) for p in alive]
    assert not [p for p in ours if os.path.lexists(p)]
    new_shm = {n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith("sipstate-run-")}
    assert new_shm == set()
    manifest = json.loads(next(tmp_path.glob("interrupt/*/manifest.json")).read_text())
    assert manifest["interrupted"] is True and manifest["end_time"]


def test_a_failed_run_is_recorded_and_the_matrix_goes_on(tmp_path):
    proc = harness_run(str(DATA / "mixed.yaml"), "--output", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    res = results.load(tmp_path)
    rows = res.runs.set_index("backend")
    assert rows.loc["broken", "status"] == "failed"
    assert "harness serve" in rows.loc["broken", "reason"]
    good = rows.loc["lmdb"]
    assert good["status"] == "ok" and good["fsync"] and good["eatmydata"] and good["calls_completed"] > 0
    assert good["lost_dialogs"] == 0 and good["store_leftover"] == 0
    details = res.manifest["runs"][good["run_id"]]
    assert details["server"]["eatmydata_verified"] is True
    assert details["storage"] == "disk"
    assert res.manifest["filesystems"][details["run_dir"]]["fstype"] not in ("tmpfs", None)


def test_a_missing_program_skips_every_run_with_exit_3(tmp_path):
    proc = harness_run(str(DATA / "needs_redis.yaml"), "--output", str(tmp_path),
                       env={"PATH": str(tmp_path / "empty-bin")})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    row = results.load(tmp_path).runs.iloc[0]
    assert row["status"] == "skipped"
    assert "apt-get install -y redis-server" in row["reason"]


@pytest.mark.parametrize("seen,workers,status", [([1], 2, "failed"), ([1, 2], 2, "ok"), ([1], 1, "ok"),
                                                 ([], 2, "ok"), (None, 2, "ok")])
def test_a_run_answered_by_one_worker_of_several_is_failed(seen, workers, status):
    from harness.onerun import one_worker_verdict

    verdict, reason = one_worker_verdict({"workers_seen": seen}, workers)
    assert verdict == status
    assert ("no dialog crossed workers" in reason) == (status == "failed")
