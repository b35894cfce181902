"""`harness load` against a real `harness serve` (shm, 2 workers) over real TCP.

Bounds are sanity bounds: the machine is small and shared.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import psutil

from harness import metrics
from harness.schema import LOAD_FIELDS
from tests.support import ROOT, harness_cmd, running_server

EXTRA_FIELDS = ("timeseries", "hdr", "schedule_lag_p99_ms", "schedule_lag_max_ms",
                "loop_lag_max_ms", "cpu_loadgen_s", "invite_p50_uncorrected_ms",
                "invite_p99_uncorrected_ms", "invite_max_uncorrected_ms", "saturation_reasons")


def test_300_calls_per_second_cross_workers_without_failures(shm_server, load, tmp_path):
    res, _ = load(shm_server, "--rate", "300", "--duration", "6",
                  "--hdr-dir", str(tmp_path / "hdr"), "--hdr-prefix", "r1")
    assert set(LOAD_FIELDS) | set(EXTRA_FIELDS) <= set(res)
    assert res["generator"] == "builtin" and res["mode"] == "open"
    assert abs(res["throughput_cps"] - 300) <= 30, res["throughput_cps"]
    assert res["calls_failed"] == 0 and res["timeouts"] == 0, res["outcomes"]
    assert res["lost_dialogs"] == 0 and res["status_481"] == 0 and res["status_5xx"] == 0
    assert res["calls_completed"] == res["calls_attempted"] >= 1600
    assert res["cross_worker_fraction"] >= 0.3
    assert res["workers_seen"] == [1, 2]
    assert 0 < res["invite_p50_ms"] <= res["invite_p99_ms"] <= res["invite_max_ms"] < 5000
    assert res["bye_p50_ms"] > 0 and res["cpu_loadgen_s"] > 0
    # the per-second series covers the window and adds up
    series = res["timeseries"]
    assert {"t_s", "calls_completed", "calls_failed", "p50_ms", "p99_ms"} <= set(series[0])
    assert sum(r["calls_completed"] for r in series) == res["calls_completed"]
    assert len(series) >= 6
    # .hgrm files: one per transaction type, parseable, counts matching
    assert set(res["hdr"]) == {"invite", "bye"}
    for txn, path in res["hdr"].items():
        assert path.endswith(f"r1.{txn}.hgrm")
        rows = metrics.read_hgrm(path)
        assert rows[-1].total_count == res["calls_completed"]
        assert rows[-1].percentile == 1.0


def test_local_backend_loses_the_dialogs_that_cross_workers(load):
    """The unshared control: a BYE on the other worker finds no dialog (481)."""
    with running_server(backend="local", workers=2) as srv:
        res, _ = load(srv, "--rate", "100", "--duration", "2")
    assert res["status_481"] > 0
    assert res["lost_dialogs"] == res["status_481"]
    assert res["calls_completed"] + res["calls_failed"] == res["calls_attempted"]
    assert res["outcomes"].get("status_481") == res["status_481"]
    # with ACK and BYE on the INVITE's connection the same server loses nothing
    with running_server(backend="local", workers=2) as srv:
        same, _ = load(srv, "--rate", "100", "--duration", "2", "--cross-connection", "0",
                       name="same.json")
    assert same["lost_dialogs"] == 0 and same["calls_failed"] == 0
    assert same["cross_worker_fraction"] == 0.0


def test_coordinated_omission_is_corrected(load):
    """Every worker stopped for 1 s mid-run: the corrected p99 shows it, the uncorrected
    one (measured from the delayed actual send) does not."""
    with running_server(backend="shm", workers=2) as srv:
        master = psutil.Process(srv["pid"])
        # forked workers share the master's command line (a resource tracker does not)
        workers = [c for c in master.children() if c.cmdline() == master.cmdline()]
        assert len(workers) == 2

        def stall():
            time.sleep(3.0)
            for w in workers:
                os.kill(w.pid, signal.SIGSTOP)
            time.sleep(1.0)
            for w in workers:
                os.kill(w.pid, signal.SIGCONT)

        thread = threading.Thread(target=stall)
        thread.start()
        try:
            res, _ = load(srv, "--rate", "200", "--duration", "6")
        finally:
            thread.join()
    assert res["calls_failed"] == 0, res["outcomes"]
    print("CO:", {k: res[k] for k in ("invite_p99_ms", "invite_p99_uncorrected_ms",
                                      "invite_max_ms", "slot_wait_max_ms", "backlog_max")})
    assert res["invite_p99_ms"] >= 400, res["invite_p99_ms"]
    assert res["invite_p99_uncorrected_ms"] < res["invite_p99_ms"] / 2, (
        res["invite_p99_uncorrected_ms"], res["invite_p99_ms"])
    assert res["invite_max_ms"] >= 800


def test_an_absurd_rate_marks_the_generator_saturated(shm_server, load):
    res, err = load(shm_server, "--rate", "50000", "--duration", "2", "--timeout", "1")
    assert res["generator_saturated"] is True
    assert res["saturation_reasons"]
    assert "generator saturated" in err
    assert res["throughput_cps"] < 50000 * 0.9


def test_two_processes_merge_and_poisson_arrivals(shm_server, load, tmp_path):
    res, _ = load(shm_server, "--rate", "200", "--duration", "3", "--procs", "2",
                  "--arrival", "poisson", "--seed", "3", "--hdr-dir", str(tmp_path))
    assert res["procs"] == 2 and res["calls_failed"] == 0
    assert 400 <= res["calls_completed"] <= 800      # Poisson: ~600 expected
    rows = metrics.read_hgrm(res["hdr"]["invite"])
    assert rows[-1].total_count == res["calls_completed"]
    assert res["cross_worker_fraction"] >= 0.3


def test_register_mix_closed_loop_and_warmup(shm_server, load):
    res, _ = load(shm_server, "--rate", "100", "--duration", "2", "--mix",
                  "invite=1,register=1", "--warmup", "1")
    assert res["calls_failed"] == 0, res["outcomes"]
    assert res["register_p50_ms"] is not None and res["invite_p50_ms"] is not None
    assert 150 <= res["calls_attempted"] <= 250     # warmup calls are not counted
    closed, _ = load(shm_server, "--rate", "0", "--mode", "closed", "--concurrency", "2",
                     "--duration", "2", name="closed.json")
    assert closed["mode"] == "closed" and closed["calls_failed"] == 0
    assert closed["calls_completed"] > 50


def test_bad_options_are_one_line_and_exit_2():
    for args, word in ((["--rate", "-1"], "--rate"), (["--mix", "invite=x"], "--mix"),
                       (["--cross-connection", "2"], "--cross-connection")):
        proc = subprocess.run(harness_cmd("load", "--target", "127.0.0.1:9", "--duration", "1",
                                          *(["--rate", "10"] if "--rate" not in args else []),
                                          *args), cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert word in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run(harness_cmd("load", "--target", "nohost", "--rate", "1",
                                      "--duration", "1"), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--target" in proc.stderr


def test_an_unreachable_target_is_one_clear_error(tmp_path):
    from tests.support import free_port
    proc = subprocess.run(harness_cmd("load", "--target", f"127.0.0.1:{free_port()}",
                                      "--rate", "10", "--duration", "1"),
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "cannot connect" in proc.stderr and "Traceback" not in proc.stderr


def test_live_line_on_a_terminal_only(shm_server, tmp_path):
    """Once a second on a terminal (elapsed, calls/s, p99, errors); nothing when piped."""
    import pty
    master, slave = pty.openpty()
    cmd = harness_cmd("load", "--target", f"127.0.0.1:{shm_server['port']}", "--rate", "50",
                      "--duration", "3", "--json", str(tmp_path / "live.json"))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:   # the terminal closed: the generator is done
                break
            if not chunk:
                break
            seen += chunk
    finally:
        proc.wait(60)
        os.close(master)
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert text.count("calls/s") >= 2 and "p99" in text and "errors" in text
    piped = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and piped.stderr == ""


def test_a_stall_longer_than_the_timeout_gives_timeouts_and_closes_late_dialogs(load):
    with running_server(backend="shm", workers=2) as srv:
        master = psutil.Process(srv["pid"])
        workers = [c for c in master.children() if c.cmdline() == master.cmdline()]

        def stall():
            time.sleep(1.5)
            for w in workers:
                os.kill(w.pid, signal.SIGSTOP)
            time.sleep(2.0)
            for w in workers:
                os.kill(w.pid, signal.SIGCONT)

        thread = threading.Thread(target=stall)
        thread.start()
        try:
            res, _ = load(srv, "--rate", "100", "--duration", "4", "--timeout", "1")
        finally:
            thread.join()
    assert res["timeouts"] > 0 and res["outcomes"]["timeout"] == res["timeouts"]
    assert res["calls_completed"] + res["calls_failed"] == res["calls_attempted"]
    assert res["calls_completed"] > 100          # before and after the stall
    assert res["late_dialogs_closed"] > 0         # late 200s were ACKed and BYEd
    assert res["generator_saturated"] is False    # the server stalled, not the generator
