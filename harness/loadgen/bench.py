"""Benchmark: the built-in generator against SIPp, same server, same rate, one session.

    python -m harness.loadgen.bench [--server serve|sipp-uas] [--rate R ...]
        [--duration S] [--transport t1|tn] [--json FILE]

For every rate, drives the server first with `harness load` (one process,
persistent connections, ACK/BYE on the INVITE's connection because the default
server backend ``local`` is not shared) and then with SIPp (``-t t1`` by default,
also persistent), and prints calls/s, median and mean INVITE-to-200 latency and
generator CPU per call of both, their agreement (calls/s within 10 %, median
within 20 %) and the CPU ratio. Latencies are compared on the same basis: from the
actual send (SIPp cannot correct for coordinated omission); SIPp's response times
have 1 ms resolution, so at sub-millisecond latencies its median reads 0 or 1 ms
and the mean of its samples is the figure to compare.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from harness.loadgen import procs, result as R, sipp
from harness.loadgen.config import LoadConfig, validate


@contextlib.contextmanager
def serve(kind: str, workers: int, backend: str = "local",
          opts: tuple[str, ...] = (), uas_delay_ms: int = 0) -> Iterator[tuple[str, int]]:
    """A server to drive: `harness serve --backend B --opt k=v...` or SIPp's built-in uas."""
    if kind == "sipp-uas":
        port = _free_port()
        with tempfile.TemporaryDirectory(prefix="sipstate-uas-") as tmp:
            scen = Path(tmp) / "uas.xml"
            scen.write_text(uas_xml(uas_delay_ms))
            uas = subprocess.Popen([sipp.sipp_binary(), "-sf", str(scen), "-t", "t1", "-i",
                                    "127.0.0.1", "-p", str(port), "-nostdin",
                                    "-max_socket", "1000"], cwd=tmp,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            try:
                yield "127.0.0.1", port
            finally:
                uas.terminate()
                uas.wait(10)
        return
    extra = [arg for opt in opts for arg in ("--opt", opt)]
    proc = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--backend", backend,
                             *extra, "--workers", str(workers), "--host", "127.0.0.1",
                             "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        yield ready["host"], ready["port"]
    finally:
        proc.terminate()
        proc.wait(15)


_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="sipstate bench uas">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]U[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <pause milliseconds="DELAY"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]U[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <recv request="ACK" optional="true" crlf="true"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


def uas_xml(delay_ms: int) -> str:
    """SIPp's uas flow with a pause of ``delay_ms`` between 180 and 200: a server with a
    known INVITE-to-200 time that SIPp's 1 ms clock can resolve."""
    return _UAS.replace("DELAY", str(int(delay_ms)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_builtin(host: str, port: int, rate: float, duration: float) -> dict:
    cfg = validate(LoadConfig(host=host, port=port, rate=rate, duration=duration, warmup=1.0,
                              cross_connection=0.0))
    res = R.summarize(cfg, procs.run_load(cfg, procs.LiveLine(enabled=False)))
    res.pop("_histograms", None)
    return res


def run_sipp(host: str, port: int, rate: float, duration: float, transport: str) -> dict:
    cfg = validate(LoadConfig(host=host, port=port, rate=rate, duration=duration, warmup=1.0,
                              cross_connection=0.0))
    res = sipp.run_sipp(cfg, transport=transport)
    res.pop("_histograms", None)
    return res


def compare(ours: dict, theirs: dict) -> dict:
    """Agreement figures between the built-in generator and SIPp."""
    def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return None if a is None or not b else round(a / b, 3)
    return {
        "cps_ratio": ratio(ours["throughput_cps"], theirs["throughput_cps"]),
        # below 1 ms SIPp's median is a clock artefact (0 or 1 ms): no ratio
        "median_ratio": (ratio(ours["invite_p50_uncorrected_ms"], theirs["invite_p50_ms"])
                         if (theirs["invite_p50_ms"] or 0) >= 1.0 else None),
        "mean_ratio": ratio(ours["invite_mean_ms"], theirs["invite_mean_ms"]),
        "cpu_ratio": ratio(ours["cpu_us_per_call_loadgen"], theirs["cpu_us_per_call_loadgen"]),
    }


def _fmt(v: Optional[float], spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def print_rows(rate: float, ours: dict, theirs: dict, cmp: dict) -> None:
    print(f"\nrate {rate:g} calls/s")
    print(f"  {'generator':10} {'calls/s':>9} {'p50 ms':>8} {'mean ms':>8} {'p99 ms':>8} "
          f"{'failed':>6} {'CPU us/call':>11} {'saturated':>9}")
    for name, r, p50, p99 in (("builtin", ours, ours["invite_p50_uncorrected_ms"],
                               ours["invite_p99_uncorrected_ms"]),
                              (theirs["generator"], theirs, theirs["invite_p50_ms"],
                               theirs["invite_p99_ms"])):
        print(f"  {name:10} {r['throughput_cps']:9.1f} {_fmt(p50):>8} "
              f"{_fmt(r['invite_mean_ms']):>8} {_fmt(p99):>8} {r['calls_failed']:6d} "
              f"{_fmt(r['cpu_us_per_call_loadgen'], '.0f'):>11} "
              f"{str(r['generator_saturated']):>9}")
    for r in (ours, theirs):
        if r["saturation_reasons"]:
            print(f"  {r['generator']} saturated: {'; '.join(r['saturation_reasons'])}")
    cps_ok = cmp["cps_ratio"] is not None and abs(cmp["cps_ratio"] - 1) <= 0.10
    print(f"  calls/s ratio {cmp['cps_ratio']} ({'within' if cps_ok else 'NOT within'} 10%); "
          f"median ratio {cmp['median_ratio'] or 'n/a (SIPp median < 1 ms resolution)'}; "
          f"mean ratio {cmp['mean_ratio']}; "
          f"CPU per call ratio builtin/SIPp {cmp['cpu_ratio']}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.loadgen.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", choices=("serve", "sipp-uas"), default="serve")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--backend", default="local",
                   help="backend of `harness serve` (default local); a durable one such as "
                        "files with fsync=true on a disk gives millisecond latencies that "
                        "SIPp's 1 ms clock can resolve")
    p.add_argument("--uas-delay-ms", type=int, default=0,
                   help="with --server sipp-uas: pause between 180 and 200 (default 0)")
    p.add_argument("--opt", action="append", default=[], metavar="K=V",
                   help="backend option for `harness serve` (repeatable)")
    p.add_argument("--rate", type=float, nargs="+", default=[1000.0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--transport", choices=sipp.TRANSPORTS, default="t1")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if shutil.which("sipp") is None:
        print("sipp not found; install it with: sudo apt-get install -y sip-tester",
              file=sys.stderr)
        return 3
    out = []
    with serve(args.server, args.workers, args.backend, tuple(args.opt),
               args.uas_delay_ms) as (host, port):
        what = f"serve --backend {args.backend} {' '.join(args.opt)}" if args.server == "serve" \
            else f"sipp uas (200 after {args.uas_delay_ms} ms)"
        print(f"server: {what} ({args.workers} workers) at {host}:{port}; "
              f"SIPp transport -t {args.transport}")
        for rate in args.rate:
            ours = run_builtin(host, port, rate, args.duration)
            theirs = run_sipp(host, port, rate, args.duration, args.transport)
            cmp = compare(ours, theirs)
            print_rows(rate, ours, theirs, cmp)
            out.append({"rate": rate, "builtin": ours, "sipp": theirs, **cmp})
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
