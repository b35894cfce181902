"""`harness load`: drive a SIP server over TCP and write the load fields of runs.csv.

    harness load --target H:P --rate R --duration S [--warmup S] [--connections C]
        [--procs P] [--mode open|closed] [--concurrency N] [--mix invite=1,register=0]
        [--hold S] [--cross-connection P] [--timeout S] [--json FILE] [--hdr-dir DIR]
        [--hdr-prefix NAME] [--arrival constant|poisson] [--generator builtin|sipp]
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Optional

from harness.loadgen import config as C
from harness.loadgen.config import LoadConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, metavar="H:P", help="the SIP server (TCP)")
    p.add_argument("--rate", type=float, required=True, metavar="R",
                   help="calls per second, whole generator (open loop)")
    p.add_argument("--duration", type=float, required=True, metavar="S",
                   help="seconds of the measurement window")
    p.add_argument("--warmup", type=float, default=0.0, metavar="S",
                   help="seconds of calls before the window, not recorded (default 0)")
    p.add_argument("--connections", type=int, default=8, metavar="C",
                   help="persistent TCP connections per generator process (default 8)")
    p.add_argument("--procs", type=int, default=1, metavar="P",
                   help="generator processes; rate and concurrency are split (default 1)")
    p.add_argument("--mode", choices=C.MODES, default="open",
                   help="open: calls on a schedule; closed: a fixed number in flight")
    p.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="open: most transactions awaiting answers, beyond which starts wait "
                        "(their wait counts in the corrected latency); 0 = unlimited; default: "
                        "one per connection (as wrk2) or 50 ms worth of calls at the rate, "
                        "whichever is more. closed: calls in flight (default connections x "
                        "procs)")
    p.add_argument("--mix", default="invite=1", metavar="FLOW=W,...",
                   help="flows by weight: invite, register, options (default invite=1)")
    p.add_argument("--hold", type=float, default=0.0, metavar="S",
                   help="seconds between ACK and BYE (default 0)")
    p.add_argument("--cross-connection", type=float, default=1.0, metavar="P",
                   help="probability that ACK and BYE go on another worker's connection "
                        "than the INVITE's (default 1.0)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="seconds a transaction may wait for its final answer (default 5)")
    p.add_argument("--arrival", choices=C.ARRIVALS, default="constant",
                   help="open-loop schedule (default constant)")
    p.add_argument("--seed", type=int, default=None, help="random seed (Poisson, picks)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="write the result object here ('-' for stdout)")
    p.add_argument("--hdr-dir", type=Path, default=None, metavar="DIR",
                   help="write <prefix>.<txn>.hgrm percentile distributions here")
    p.add_argument("--hdr-prefix", default="run", metavar="NAME",
                   help="file name prefix of the .hgrm files (default run)")
    p.add_argument("--generator", choices=("builtin", "sipp"), default="builtin",
                   help="builtin (default) or SIPp with an equivalent scenario")
    p.add_argument("--sipp-transport", choices=("tn", "t1"), default="tn",
                   help="SIPp transport mode: tn = a connection per call, t1 = one in all")


def build_config(args: argparse.Namespace, live: bool = False) -> LoadConfig:
    """The validated, frozen configuration from parsed arguments (InvalidInput if bad)."""
    host, port = C.parse_target(args.target)
    cfg = LoadConfig(host=host, port=port, rate=args.rate, duration=args.duration,
                     warmup=args.warmup, connections=args.connections, procs=args.procs,
                     mode=args.mode, concurrency=args.concurrency, mix=C.parse_mix(args.mix),
                     hold=args.hold, cross_connection=args.cross_connection,
                     timeout=args.timeout, arrival=args.arrival, seed=args.seed, live=live)
    return C.validate(cfg)


def run(args: argparse.Namespace) -> int:
    from harness.loadgen import procs, result as R

    live = procs.LiveLine()
    cfg = build_config(args, live.enabled)
    _sigterm_as_interrupt()
    if args.generator == "sipp":
        from harness.loadgen import sipp
        res = sipp.run_sipp(cfg, transport=args.sipp_transport, live=live.enabled)
    else:
        try:
            exports = procs.run_load(cfg, live)
        finally:
            live.close()
        res = R.summarize(cfg, exports)
    R.write_hdr(res, args.hdr_dir, args.hdr_prefix)
    R.check_fields(res)
    if res["generator_saturated"]:
        print("harness load: warning: generator saturated (" + "; ".join(
            res["saturation_reasons"]) + "): these figures measure the generator, "
            "not the server", file=sys.stderr)
    _write_json(res, args.json)
    if args.json is None or str(args.json) != "-":
        print(summary_line(res))
    return 0


def summary_line(res: dict) -> str:
    """One human line: throughput, latency, failures, generator cost."""
    def ms(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:.2f}"
    cross = res.get("cross_worker_fraction")
    cpu_call = res.get("cpu_us_per_call_loadgen")
    return (f"{res['generator']}: {res['calls_completed']}/{res['calls_attempted']} calls, "
            f"{res['throughput_cps']:.1f} calls/s (target {res['rate_target']:g}); "
            f"invite p50 {ms(res['invite_p50_ms'])} p99 {ms(res['invite_p99_ms'])} ms; "
            f"failed {res['calls_failed']} (481: {res['status_481']}, timeouts "
            f"{res['timeouts']}), lost dialogs {res['lost_dialogs']}; cross-worker "
            f"{'-' if cross is None else f'{cross:.2f}'}; generator CPU "
            f"{'-' if cpu_call is None else f'{cpu_call:.0f}'} us/call"
            f"{'; SATURATED' if res['generator_saturated'] else ''}")


def _write_json(res: dict, path: Optional[Path]) -> None:
    if path is None:
        return
    text = json.dumps(res, indent=1, sort_keys=False) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _sigterm_as_interrupt() -> None:
    """SIGTERM (from the runner) unwinds like Ctrl-C, so child processes are reaped."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
