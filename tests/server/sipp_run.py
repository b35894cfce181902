"""Run Debian's `sipp` (sip-tester) against a server and read its final statistics."""
from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

from harness.errors import MissingBinary


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise MissingBinary("sipp", "sip-tester")
    return path


def run_sipp(scenario: str, target: str, workdir: Path, *, transport: str = "tn", rate: int = 50,
             calls: int = 200, timeout_s: int = 60, extra: tuple[str, ...] = ()) -> dict:
    """``sipp -sn SCENARIO -t TRANSPORT -r RATE -m CALLS TARGET``; exit code plus the
    cumulative counters of the last -trace_stat row (e.g. ``SuccessfulCall(C)``)."""
    stat = workdir / "sipp_stat.csv"
    cmd = [sipp_binary(), "-sn", scenario, "-t", transport, "-r", str(rate), "-m", str(calls),
           "-max_socket", "2000", "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error",
           "-trace_stat", "-stf", str(stat), "-fd", "1", *extra, target]
    proc = subprocess.run(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=timeout_s + 30)
    stats = read_stat(stat)
    stats["exit_code"] = proc.returncode
    stats["stderr"] = proc.stderr[-2000:]
    return stats


def read_stat(path: Path) -> dict:
    """The last row of a sipp -trace_stat CSV (semicolon separated) as a dict."""
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))
