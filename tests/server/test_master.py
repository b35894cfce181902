"""The arbiter: respawn, heartbeat kills, no false kills, TTIN/TTOU, SIGTERM, bad options."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from tests.server.helpers import wait_for, wait_workers, worker_pids
from tests.server.sipclient import SDP, Conn, Dialog, options_ok, request
from tests.support import ROOT, harness_cmd, running_server


def test_killed_worker_is_replaced_within_a_second():
    with running_server("local", workers=2) as srv:
        master = srv["pid"]
        before = wait_workers(master, 2)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        replaced = wait_for(lambda: (lambda p: len(p) == 2 and victim not in p)(worker_pids(master)), 5)
        elapsed = time.monotonic() - t0
        assert replaced and elapsed < 1.0, f"replacement took {elapsed:.2f} s"
        assert all(options_ok(srv["port"]) for _ in range(10))


def test_stopped_worker_is_killed_after_timeout_but_stopped_master_kills_nobody():
    with running_server("local", workers=2, extra=["--timeout", "2"]) as srv:
        master = srv["pid"]
        first = wait_workers(master, 2)
        # The master itself stopped for 4 s (twice the timeout): no worker may be killed.
        os.kill(master, signal.SIGSTOP)
        time.sleep(4)
        os.kill(master, signal.SIGCONT)
        time.sleep(2.5)
        assert worker_pids(master) == first, "a stopped master must not kill healthy workers"
        # A stopped worker stops its heartbeat: killed and replaced after --timeout.
        victim = min(first)
        os.kill(victim, signal.SIGSTOP)
        t0 = time.monotonic()
        gone = wait_for(lambda: victim not in worker_pids(master), 10)
        elapsed = time.monotonic() - t0
        assert gone and 1.5 <= elapsed < 8, f"killed after {elapsed:.2f} s"
        assert len(wait_workers(master, 2)) == 2
        assert options_ok(srv["port"])


def test_ttin_ttou_change_the_worker_count():
    with running_server("local", workers=1) as srv:
        master = srv["pid"]
        assert len(wait_workers(master, 1)) == 1
        # One signal at a time: two identical pending signals merge into one (POSIX).
        os.kill(master, signal.SIGTTIN)
        assert len(wait_workers(master, 2)) == 2
        os.kill(master, signal.SIGTTIN)
        assert len(wait_workers(master, 3)) == 3
        os.kill(master, signal.SIGTTOU)
        assert len(wait_workers(master, 2)) == 2
        assert options_ok(srv["port"])
        seen = set()
        for _ in range(40):
            with Conn(srv["port"]) as conn:
                conn.send(request("OPTIONS", Dialog(), srv["port"]))
                seen.add(conn.read().worker)
        assert seen <= {1, 2}


def test_sigterm_finishes_in_flight_messages_then_exits_zero():
    with running_server("lmdb", workers=2) as srv:
        port, proc = srv["port"], srv["proc"]
        dlg = Dialog()
        data = request("INVITE", dlg, port, body=SDP)
        with Conn(port) as conn:
            # Half a message is in flight when SIGTERM arrives; the rest follows.
            conn.send(data[:60])
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            conn.send(data[60:])
            final = conn.read_final()
            assert final is not None and final.status == 200
            assert conn.is_closed(5), "the worker closes the connection after the message"
        assert proc.wait(15) == 0


def test_sigquit_stops_at_once():
    with running_server("local", workers=2) as srv:
        workers = wait_workers(srv["pid"], 2)
        srv["proc"].send_signal(signal.SIGQUIT)
        assert srv["proc"].wait(5) == 0
        assert all(not os.path.exists(f"/proc/{p}") or _zombie(p) for p in workers)


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[1].split()[0] == "Z"


def test_bad_options_are_one_line_and_exit_2():
    cases = [["--workers", "0"], ["--workers", "two"], ["--port", "70000"], ["--timeout", "-1"],
             ["--backend", "nosuch"], ["--opt", "novalue"], ["--backend", "lmdb", "--opt", "colour=red"]]
    for extra in cases:
        args = ["serve", "--port", "0", *extra]
        proc = subprocess.run(harness_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (extra, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], (extra, proc.stderr)
        assert proc.stdout == ""
