"""Benchmark (not a test): server CPU per call, compared with SIPp's own UAS.

    python -m harness.server.bench [--rate 400] [--calls 4000] [--transports tn,t1]
                                   [--backend local] [--workers 1] [--json FILE]

For each transport (``-t tn``: a TCP connection per call; ``-t t1``: one
connection), it starts ``harness serve --backend local --workers 1``, drives it
with ``sipp -sn uac`` at a fixed rate, and takes the CPU time (utime + stime
from /proc) of the master and its workers before and after: CPU per call =
delta / successful calls. Then it starts ``sipp -sn uas`` on another port,
drives it the same way in the same session and prints the ratio. A run with a
failed call, or a schedule sipp could not hold, is flagged: the figure only
counts at a rate sustained with 0 failures. Exit status 1 when a run was not
sustained.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (children not included), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (the master and its workers)."""
    total = cpu_seconds(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except OSError:
        children = []
    for child in children:
        try:
            total += cpu_seconds(child)
        except OSError:
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(backend: str, workers: int) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, "-m", "harness", "serve", "--backend", backend, "--workers", str(workers),
           "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()
    try:
        return proc, json.loads(line)
    except ValueError:
        proc.kill()
        raise RuntimeError(f"harness serve did not start: {line!r}") from None


def start_sipp_uas(transport: str, port: int, workdir: Path) -> subprocess.Popen:
    cmd = ["sipp", "-sn", "uas", "-t", transport, "-i", "127.0.0.1", "-p", str(port),
           "-max_socket", "4000", "-nostdin"]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("sipp -sn uas did not start listening")


def drive(transport: str, port: int, rate: int, calls: int, workdir: Path) -> dict:
    """Run sipp's uac to completion; its counters and its own CPU time."""
    stat = workdir / f"uac_{transport}_{port}.csv"
    cmd = ["sipp", "-sn", "uac", "-t", transport, "-r", str(rate), "-m", str(calls),
           "-max_socket", "4000", "-nostdin", "-timeout", f"{calls // rate + 60}s",
           "-trace_stat", "-stf", str(stat), "-fd", "1", f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    rows = [line.split(";") for line in stat.read_text().splitlines()] if stat.exists() else []
    last = dict(zip(rows[0], rows[-1])) if len(rows) > 1 else {}
    wall = time.monotonic() - t0
    ok = int(last.get("SuccessfulCall(C)", 0))
    failed = int(last.get("FailedCall(C)", 0))
    return {"exit_code": proc.returncode, "wall_s": wall, "ok": ok, "failed": failed,
            "achieved_cps": ok / wall if wall > 0 else 0.0,
            "sustained": proc.returncode == 0 and failed == 0 and ok == calls,
            # Whether sipp held its schedule (run at most 10% + 2 s longer than calls / rate).
            "schedule_held": wall <= 1.1 * calls / rate + 2.0,
            "stderr": err[-500:]}


def measure_server(transport: str, args: argparse.Namespace, workdir: Path) -> dict:
    proc, ready = start_server(args.backend, args.workers)
    try:
        time.sleep(0.5)
        before = tree_cpu(ready["pid"])
        result = drive(transport, ready["port"], args.rate, args.calls, workdir)
        after = tree_cpu(ready["pid"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    result["cpu_s"] = after - before
    result["us_per_call"] = 1e6 * result["cpu_s"] / max(1, result["ok"])
    return result


def measure_sipp_uas(transport: str, args: argparse.Namespace, workdir: Path) -> dict:
    port = free_port()
    uas = start_sipp_uas(transport, port, workdir)
    try:
        before = cpu_seconds(uas.pid)
        result = drive(transport, port, args.rate, args.calls, workdir)
        after = cpu_seconds(uas.pid)
    finally:
        uas.kill()
        uas.wait(5)
    result["cpu_s"] = after - before
    result["us_per_call"] = 1e6 * result["cpu_s"] / max(1, result["ok"])
    return result


def bench(args: argparse.Namespace) -> dict:
    out = {"rate": args.rate, "calls": args.calls, "backend": args.backend, "workers": args.workers,
           "clk_tck": CLK_TCK, "transports": {}}
    with tempfile.TemporaryDirectory(prefix="sipstate-bench-") as tmp:
        for transport in args.transports.split(","):
            server = measure_server(transport, args, Path(tmp))
            uas = measure_sipp_uas(transport, args, Path(tmp))
            out["transports"][transport] = {
                "server": server, "sipp_uas": uas,
                "ratio": server["us_per_call"] / uas["us_per_call"] if uas["us_per_call"] else None,
                "sustained": server["sustained"] and uas["sustained"]}
    return out


def report(result: dict) -> str:
    lines = [f"backend {result['backend']}, {result['workers']} worker(s), sipp uac at "
             f"{result['rate']} calls/s, {result['calls']} calls (INVITE+ACK+BYE)"]
    for transport, r in result["transports"].items():
        s, u = r["server"], r["sipp_uas"]
        flag = "" if r["sustained"] else "  NOT SUSTAINED: " + "; ".join(
            f"{name}: {x['ok']} ok, {x['failed']} failed, exit {x['exit_code']}, {x['achieved_cps']:.0f} calls/s"
            for name, x in (("serve", s), ("sipp uas", u)) if not x["sustained"])
        for name, x in (("serve", s), ("sipp uas", u)):
            if x["sustained"] and not x["schedule_held"]:
                flag += f"  (against {name} sipp reached only {x['achieved_cps']:.0f} calls/s)"
        lines.append(f"-t {transport}: harness serve {s['us_per_call']:.0f} us CPU/call "
                     f"({s['achieved_cps']:.0f} calls/s); sipp uas {u['us_per_call']:.0f} us CPU/call "
                     f"({u['achieved_cps']:.0f} calls/s); ratio {r['ratio']:.2f}{flag}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.server.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=400)
    # Modest by default: each -t tn call leaves a TIME_WAIT port behind on the client.
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--transports", default="tn,t1")
    parser.add_argument("--backend", default="local")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = bench(args)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if all(r["sustained"] for r in result["transports"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
