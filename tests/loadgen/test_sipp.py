"""The SIPp driver (`harness load --generator sipp`) against a real `harness serve`."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from harness import metrics
from harness.loadgen import sipp
from harness.schema import LOAD_FIELDS
from tests.support import ROOT, harness_cmd

needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="sipp not installed (apt-get install sip-tester)")


@needs_sipp
@pytest.mark.parametrize("transport", ["tn", "t1"])
def test_sipp_run_fills_the_result_fields(shm_server, load, tmp_path, transport):
    res, _ = load(shm_server, "--generator", "sipp", "--sipp-transport", transport,
                  "--rate", "150", "--duration", "2", "--hdr-dir", str(tmp_path),
                  "--hdr-prefix", f"sipp-{transport}")
    assert set(LOAD_FIELDS) <= set(res)
    assert res["generator"] == f"sipp-{transport}"
    assert res["calls_attempted"] == 300
    assert res["calls_completed"] == 300 and res["calls_failed"] == 0
    assert res["throughput_cps"] == 150
    assert res["invite_p50_ms"] is not None and res["bye_p50_ms"] is not None
    assert res["cross_worker_fraction"] is None and res["lost_dialogs"] is None
    assert res["cpu_loadgen_s"] > 0 and res["generator_saturated"] is False
    assert sum(r["calls_completed"] for r in res["timeseries"]) == 300
    assert metrics.read_hgrm(res["hdr"]["invite"])[-1].total_count == 300


@needs_sipp
def test_sipp_register_flow(shm_server, load):
    res, _ = load(shm_server, "--generator", "sipp", "--mix", "register=1",
                  "--rate", "100", "--duration", "1")
    assert res["calls_completed"] == 100 and res["register_p50_ms"] is not None


def test_generated_scenarios_hold_the_response_time_partitions():
    xml = sipp.scenario_xml("invite", 0.25)
    assert 'start_rtd="invite"' in xml and 'rtd="invite"' in xml
    assert 'start_rtd="bye"' in xml and 'rtd="bye"' in xml
    assert '<pause milliseconds="250"/>' in xml
    assert 'rtd="register"' in sipp.scenario_xml("register", 0)


def test_a_mix_sipp_cannot_run_is_invalid_input(shm_server):
    proc = subprocess.run(harness_cmd("load", "--generator", "sipp", "--target",
                                      f"127.0.0.1:{shm_server['port']}", "--rate", "10",
                                      "--duration", "1", "--mix", "invite=1,register=1"),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--mix" in proc.stderr


def test_missing_sipp_names_the_package(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}   # a PATH without sipp
    proc = subprocess.run(harness_cmd("load", "--generator", "sipp", "--target",
                                      "127.0.0.1:5060", "--rate", "10", "--duration", "1"),
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 3
    assert "sipp" in proc.stderr and "sip-tester" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
