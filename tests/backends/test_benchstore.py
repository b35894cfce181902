"""``harness bench-store``: in-process runs for local and lmdb, CLI runs for redis (own
service and raw-socket floor) and for lmdb under eatmydata, and bad input."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import psutil
import pytest

from harness import benchstore
from harness.errors import EXIT_INVALID, InvalidInput
from tests.support import ROOT, harness_cmd

PHASES = ["get", "add", "put", "update", "delete"]
ROW_KEYS = {"ops", "ops_per_s", "p50_us", "p99_us", "p999_us", "max_us", "mean_us"}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    benchstore.add_arguments(parser)
    return parser.parse_args(list(argv))


def check_report(report: dict, procs: int, ops: int, phases: list[str]) -> None:
    assert list(report["ops"]) == phases
    for name in phases:
        total, rows = report["ops"][name]["total"], report["ops"][name]["per_process"]
        assert set(total) == ROW_KEYS and len(rows) == procs
        assert [r["process"] for r in rows] == list(range(procs))
        assert total["ops"] == sum(r["ops"] for r in rows) == procs * ops, name
        assert 0 < total["p50_us"] <= total["p99_us"] <= total["p999_us"] <= total["max_us"]
        assert total["ops_per_s"] > 0


@pytest.mark.parametrize("backend,procs", [("local", 1), ("lmdb", 2)])
def test_in_process_run_writes_valid_json(backend: str, procs: int, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = parse("--backend", backend, "--procs", str(procs), "--ops", "300", "--keys", "50",
                 "--value-size", "64", "--json", str(out))
    assert benchstore.run(args) == 0
    report = json.loads(out.read_text())
    assert report["backend"] == backend and report["procs"] == procs and report["value_size"] == 64
    check_report(report, procs, 300, PHASES)
    assert report["service"] is None and report["floor"] == {}
    table = capsys.readouterr().out
    assert f"bench-store {backend}: {procs} process(es)" in table and "p99.9 µs" in table
    for name in PHASES:
        assert f"\n{name}" in table


def test_seconds_mode_runs_each_phase_for_about_that_long(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert benchstore.run(parse("--backend", "local", "--seconds", "0.2", "--keys", "10",
                                "--json", str(out))) == 0
    report = json.loads(out.read_text())
    for name in ("get", "put", "update"):
        total = report["ops"][name]["total"]
        # ops/s is measured over the phase's own duration: ops / rate ~ 0.2 s
        assert 0.15 < total["ops"] / total["ops_per_s"] < 5.0, (name, total)


def test_redis_starts_its_own_server_measures_the_floor_and_stops_it(tmp_path: Path) -> None:
    out = tmp_path / "redis.json"
    proc = subprocess.run(harness_cmd("bench-store", "--backend", "redis", "--ops", "200", "--keys", "20",
                                      "--procs", "2", "--json", str(out)),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    check_report(report, 2, 200, PHASES + ["get_paired", "get_floor"])
    assert report["service"]["kind"] == "redis" and report["service"]["version"]
    assert set(report["floor"]) == {"get_p50_over_floor", "get_p99_over_floor"}
    assert report["floor"]["get_p50_over_floor"] > 0 and "get_p50_over_floor" in proc.stdout
    assert not psutil.pid_exists(report["service"]["pid"]), "bench-store left its redis-server running"
    assert not Path(report["service"]["directory"]).exists()


def test_lmdb_with_eatmydata_reexecs_with_the_preload(tmp_path: Path) -> None:
    out = tmp_path / "eat.json"
    proc = subprocess.run(harness_cmd("bench-store", "--backend", "lmdb", "--opt", "fsync=true",
                                      "--opt", "eatmydata=true", "--ops", "100", "--keys", "10",
                                      "--json", str(out)),
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["eatmydata_verified"] is True
    assert report["store"]["fsync"] is True and report["store"]["eatmydata"] is True


@pytest.mark.parametrize("argv,message", [
    (["--procs", "0"], "bench-store --procs 0: allowed 1..64"),
    (["--seconds", "0"], "bench-store --seconds 0.0: allowed a number in (0, 3600]"),
    (["--value-size", "-1"], "bench-store --value-size -1: allowed 0..1048576"),
    (["--floor"], "bench-store --floor: only for redis, memcached, not 'local'"),
])
def test_bad_input_is_one_clear_error(argv: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        benchstore.run(parse("--backend", "local", "--ops", "10", *argv))


def test_bad_backend_option_exits_2_with_one_line() -> None:
    proc = subprocess.run(harness_cmd("bench-store", "--backend", "lmdb", "--opt", "colour=blue"),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_INVALID
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown option 'colour'" in lines[0]
