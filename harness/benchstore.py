"""``harness bench-store``: micro-benchmark of one backend's Store operations.

    harness bench-store --backend NAME [--opt k=v ...] [--procs P] [--seconds S]
                        [--ops N] [--value-size B] [--keys K] [--add-keys A] [--unix]
                        [--floor|--no-floor]
                        [--json FILE]

What one run does:

1. Creates the store from ``--opt`` (the same options as ``harness serve``). A
   backend that needs a service and got no ``url``/``servers`` gets its own
   redis-server / memcached (harness.services), stopped after the run; its
   ``fsync``/``eatmydata`` options apply to that service. A service-less backend
   with ``eatmydata=true`` re-executes bench-store with libeatmydata preloaded
   (and checks /proc/self/maps), because the fsync happens in this process.
2. ``prepare()`` in the parent, then forks P processes. Each ``connect()``s,
   writes K keys of B random bytes (untimed), and runs the phases get, add,
   put, update, delete -- and for redis/memcached a last phase that alternates
   the backend's ``get`` (``get_paired``) with a GET of the same key over a raw
   socket (``get_floor``: hiredis.Reader for RESP, a minimal text-protocol
   reader for memcached), the cost floor a client library can approach; they
   alternate on the store's own connection (see harness.floors) so that both
   see the same machine state and the same server thread. All processes start
   each phase together (a barrier), so P processes contend.
3. Each phase runs S seconds (or exactly ``--ops`` operations); ``add`` stops
   early after ``--add-keys`` new keys (so a fixed-size table such as shm's
   does not fill up), ``delete`` removes the keys ``add`` created and stops
   when they run out: those two phases may count fewer operations.
   Every operation is timed with perf_counter_ns; latencies are kept in an
   array during the phase (an HdrHistogram record costs ~0.7 µs in Python,
   as much as the fastest operations) and folded into an HdrHistogram
   (1 ns .. 60 s, 3 digits) after it; histograms are merged in the parent.
4. Prints per operation, per process and in total: ops, ops/s, p50, p99,
   p99.9 and max in µs, and ``get_paired/get_floor`` p50 and p99 ratios; ``--json`` writes the
   same numbers. ops/s of one process includes the loop's own overhead (the
   clock reads and the array append, ~0.1 µs per operation).
"""
from __future__ import annotations

import argparse
import array
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from hdrh.histogram import HdrHistogram

import backends
from backends.base import Store, parse_opts
from harness import durability
from harness.errors import HarnessError, InvalidInput
from harness.floors import open_floor

PHASES = ("get", "add", "put", "update", "delete")
FLOOR_BACKENDS = ("redis", "memcached")
_REEXEC_ENV = "SIPSTATE_BENCH_EATMYDATA"
_HIGHEST_NS = 60_000_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", required=True, help="backend name or module:Class")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="backend option")
    parser.add_argument("--procs", type=int, default=1, help="processes running at once (default 1)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per operation (default 2)")
    parser.add_argument("--ops", type=int, default=None, help="exact operations per phase (overrides --seconds)")
    parser.add_argument("--value-size", type=int, default=300, help="value bytes (default 300)")
    parser.add_argument("--keys", type=int, default=1000, help="keys per process for get/put/update")
    parser.add_argument("--add-keys", type=int, default=10_000,
                        help="most keys one process adds (add stops there, so fixed-size tables do not "
                             "fill; delete removes them; default 10000)")
    parser.add_argument("--unix", action="store_true", help="started service listens on a unix socket")
    parser.add_argument("--floor", action=argparse.BooleanOptionalAction, default=None,
                        help="also time a raw-socket GET (default: on for redis and memcached)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")


def validate(args: argparse.Namespace) -> None:
    """InvalidInput naming the flag, for numbers outside what the benchmark can run."""
    checks = [("--procs", args.procs, 1, 64), ("--value-size", args.value_size, 0, 1 << 20),
              ("--keys", args.keys, 1, 10_000_000), ("--add-keys", args.add_keys, 1, 10_000_000)]
    if args.ops is not None:
        checks.append(("--ops", args.ops, 1, 100_000_000))
    for flag, value, low, high in checks:
        if not low <= value <= high:
            raise InvalidInput(f"bench-store {flag} {value}: allowed {low}..{high}")
    if not 0 < args.seconds <= 3600:
        raise InvalidInput(f"bench-store --seconds {args.seconds}: allowed a number in (0, 3600]")


# ---- one process ---------------------------------------------------------------------
def _timed(op: Callable[[bytes], Any], keyof: Callable[[int], Optional[bytes]], seconds: float,
           max_ops: Optional[int]) -> tuple[array.array, float]:
    """Run ``op(keyof(n))`` until time or count is up (or keyof returns None); latencies in ns."""
    lat = array.array("q")
    append, clock = lat.append, time.perf_counter_ns
    limit = max_ops if max_ops is not None else 1 << 62
    start = clock()
    end = start + int(seconds * 1e9) if max_ops is None else 1 << 62
    n = 0
    t1 = start
    while n < limit and t1 < end:
        key = keyof(n)
        if key is None:
            break
        t0 = clock()
        op(key)
        t1 = clock()
        append(t1 - t0)
        n += 1
    return lat, (t1 - start) / 1e9


def _histogram(lat: array.array) -> HdrHistogram:
    hist = HdrHistogram(1, _HIGHEST_NS, 3)
    try:
        import numpy as np
        values, counts = np.unique(np.frombuffer(lat, dtype=np.int64), return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist()):
            hist.record_value(max(1, min(v, _HIGHEST_NS)), c)
    except ImportError:  # numpy comes with the report extra; without it, slower but the same
        for v in lat:
            hist.record_value(max(1, min(v, _HIGHEST_NS)))
    return hist


def _phases(store: Store, cfg: dict, index: int) -> list[tuple[str, Callable, Callable]]:
    """(name, op, keyof) for every phase of process ``index``."""
    value = os.urandom(cfg["value_size"])
    nkeys = cfg["keys"]
    base = [b"bench:%d:%d" % (index, j) for j in range(nkeys)]
    added: list[bytes] = []

    def add(key: bytes) -> None:
        if store.add(key, value):
            added.append(key)

    def new_value(old: Optional[bytes]) -> bytes:
        return value

    cyclic = lambda n: base[n % nkeys]  # noqa: E731
    phases = [("get", store.get, cyclic),
              ("add", add, lambda n: b"bench-add:%d:%d" % (index, n) if n < cfg["add_keys"] else None),
              ("put", lambda k: store.put(k, value), cyclic),
              ("update", lambda k: store.update(k, new_value), cyclic),
              ("delete", store.delete, lambda n: added[n] if n < len(added) else None)]
    return phases


def _timed_pair(op_a: Callable[[bytes], Any], op_b: Callable[[bytes], Any], keys: list[bytes],
                seconds: float, max_ops: Optional[int]) -> tuple[array.array, array.array]:
    """Alternate ``op_a`` and ``op_b`` on the same keys; both latency arrays (ns).

    Interleaving puts both under the same machine state: on this shared 2-core
    VM, separate phases seconds apart measured wake-up latencies of 8 vs 50 µs
    for the same request depending on where the scheduler happened to put the
    server thread, which made the ratio of two separate phases meaningless.
    The order within a pair swaps every iteration, so that whatever a position in
    the pair does to a request (following another one at once, say) falls on both.
    """
    lat_a, lat_b = array.array("q"), array.array("q")
    clock, nkeys = time.perf_counter_ns, len(keys)
    end = clock() + int(seconds * 1e9) if max_ops is None else 1 << 62
    limit = max_ops if max_ops is not None else 1 << 62
    n, t = 0, clock()
    while n < limit and t < end:
        key = keys[n % nkeys]
        first, second, lat_first, lat_second = ((op_a, op_b, lat_a, lat_b) if n % 2 == 0
                                                else (op_b, op_a, lat_b, lat_a))
        t0 = clock()
        first(key)
        t1 = clock()
        second(key)
        t = clock()
        lat_first.append(t1 - t0)
        lat_second.append(t - t1)
        n += 1
    return lat_a, lat_b


def _phase_record(lat: array.array, elapsed: float) -> dict[str, Any]:
    return {"ops": len(lat), "elapsed_s": elapsed, "hdr": _histogram(lat).encode().decode()}


def _child(store: Store, cfg: dict, index: int, barrier: Any, conn: Any) -> None:
    """Body of one forked process: connect, fill, run every phase, send the results."""
    out: dict[str, Any] = {"index": index, "pid": os.getpid(), "phases": {}}
    try:
        store.connect()
        value = os.urandom(cfg["value_size"])
        for j in range(cfg["keys"]):
            store.put(b"bench:%d:%d" % (index, j), value)
        for name, op, keyof in _phases(store, cfg, index):
            barrier.wait(timeout=600)
            lat, elapsed = _timed(op, keyof, cfg["seconds"], cfg["ops"])
            out["phases"][name] = _phase_record(lat, elapsed)
        if cfg["floor"]:
            floor = open_floor(store)
            keys = [b"bench:%d:%d" % (index, j) for j in range(cfg["keys"])]
            barrier.wait(timeout=600)
            lib, raw = _timed_pair(store.get, floor.get, keys, cfg["seconds"], cfg["ops"])
            # each one's rate over its own busy time (the phase alternates the two)
            out["phases"]["get_paired"] = _phase_record(lib, sum(lib) / 1e9)
            out["phases"]["get_floor"] = _phase_record(raw, sum(raw) / 1e9)
            floor.close()
        store.close()
    except BaseException as exc:  # reported to the parent, which fails the run
        out["error"] = f"process {index}: {type(exc).__name__}: {exc}"
        barrier.abort()
    conn.send(json.dumps(out))
    conn.close()


def run_processes(store: Store, cfg: dict) -> list[dict]:
    """Fork ``cfg['procs']`` processes over a prepared store; their raw results, in order."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(cfg["procs"])
    children = []
    for i in range(cfg["procs"]):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(store, cfg, i, barrier, send), daemon=True)
        proc.start()
        send.close()
        children.append((proc, recv))
    results = []
    for proc, recv in children:
        try:
            results.append(json.loads(recv.recv()))
        except EOFError:
            results.append({"error": f"process pid {proc.pid} died (exit code {proc.exitcode})"})
        proc.join()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise HarnessError("bench-store: " + "; ".join(errors[:3]))
    return results


# ---- summarizing ------------------------------------------------------------------------
def _row(hist: HdrHistogram, ops: int, rate: float) -> dict[str, float]:
    us = lambda ns: round(ns / 1000.0, 3)  # noqa: E731
    return {"ops": ops, "ops_per_s": round(rate, 1), "p50_us": us(hist.get_value_at_percentile(50)),
            "p99_us": us(hist.get_value_at_percentile(99)), "p999_us": us(hist.get_value_at_percentile(99.9)),
            "max_us": us(hist.get_max_value()), "mean_us": us(hist.get_mean_value())}


def summarize(results: list[dict]) -> dict[str, dict]:
    """Per phase: ``per_process`` rows and a ``total`` row (merged histogram, summed ops/s)."""
    out: dict[str, dict] = {}
    for name in results[0]["phases"]:
        total = HdrHistogram(1, _HIGHEST_NS, 3)
        rows, ops, rate = [], 0, 0.0
        for res in results:
            ph = res["phases"][name]
            hist = HdrHistogram.decode(ph["hdr"].encode())
            total.add(hist)
            proc_rate = ph["ops"] / ph["elapsed_s"] if ph["elapsed_s"] > 0 else 0.0
            rows.append({"process": res["index"], **_row(hist, ph["ops"], proc_rate)})
            ops, rate = ops + ph["ops"], rate + proc_rate
        out[name] = {"total": _row(total, ops, rate), "per_process": rows}
    return out


def floor_ratios(ops: dict[str, dict]) -> dict[str, float]:
    """Library GET over raw-socket GET, p50 and p99, from the interleaved phase."""
    if "get_floor" not in ops:
        return {}
    get, floor = ops["get_paired"]["total"], ops["get_floor"]["total"]
    return {f"get_{q}_over_floor": round(get[f"{q}_us"] / floor[f"{q}_us"], 2)
            for q in ("p50", "p99") if floor[f"{q}_us"] > 0}


def format_table(report: dict) -> str:
    lines = [f"bench-store {report['backend']}: {report['procs']} process(es), value {report['value_size']} B, "
             f"{report['keys']} keys/process",
             f"{'op':<10} {'proc':>5} {'ops':>10} {'ops/s':>12} {'p50 µs':>9} {'p99 µs':>9} "
             f"{'p99.9 µs':>9} {'max µs':>10}"]
    for name, data in report["ops"].items():
        rows = [("all", data["total"])] + ([(str(r["process"]), r) for r in data["per_process"]]
                                          if len(data["per_process"]) > 1 else [])
        for who, r in rows:
            lines.append(f"{name:<10} {who:>5} {r['ops']:>10} {r['ops_per_s']:>12,.0f} {r['p50_us']:>9.2f} "
                         f"{r['p99_us']:>9.2f} {r['p999_us']:>9.2f} {r['max_us']:>10.1f}")
    for key, ratio in report.get("floor", {}).items():
        lines.append(f"{key}: {ratio}x")
    return "\n".join(lines)


# ---- the command ----------------------------------------------------------------------------
def _reexec_with_eatmydata(args: argparse.Namespace) -> None:
    """Replace this process by itself with libeatmydata preloaded (fsync happens here)."""
    if os.environ.get(_REEXEC_ENV):
        raise HarnessError("bench-store: LD_PRELOAD of libeatmydata did not take effect in this process")
    argv = [sys.executable, "-m", "harness", "bench-store", "--backend", args.backend,
            "--procs", str(args.procs), "--seconds", str(args.seconds), "--value-size", str(args.value_size),
            "--keys", str(args.keys), "--add-keys", str(args.add_keys)]
    for pair in args.opt:
        argv += ["--opt", pair]
    argv += (["--ops", str(args.ops)] if args.ops else []) + (["--unix"] if args.unix else [])
    argv += [] if args.floor is None else ["--floor" if args.floor else "--no-floor"]
    argv += ["--json", args.json] if args.json else []
    env = {**durability.env_with_eatmydata(os.environ), _REEXEC_ENV: "1"}
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)


def _start_service(store: Store, options: dict, args: argparse.Namespace, run_dir: str):
    from harness.services import start_service
    svc = start_service(store.service, Path(run_dir), fsync=store.fsync, eatmydata=store.eatmydata,
                        unix=args.unix)
    return svc, backends.create(args.backend, **{**options, **svc.store_options()})


def run(args: argparse.Namespace) -> int:
    validate(args)
    options = parse_opts(args.opt)
    store = backends.create(args.backend, **options)
    if store.eatmydata and not store.service and not durability.preload_verified(os.getpid()):
        _reexec_with_eatmydata(args)
    floor = args.floor if args.floor is not None else store.name in FLOOR_BACKENDS
    if floor and store.name not in FLOOR_BACKENDS:
        raise InvalidInput(f"bench-store --floor: only for {', '.join(FLOOR_BACKENDS)}, not {store.name!r}")
    cfg = {"procs": args.procs, "seconds": args.seconds, "ops": args.ops, "value_size": args.value_size,
           "keys": args.keys, "add_keys": args.add_keys, "floor": floor}
    svc = None
    with tempfile.TemporaryDirectory(prefix="sipstate-bench-") as run_dir:
        try:
            if store.service:
                svc, store = _start_service(store, options, args, run_dir)
            store.prepare()
            try:
                started = time.time()
                results = run_processes(store, cfg)
            finally:
                store.destroy()
        finally:
            if svc is not None:
                svc.stop()
    report = build_report(store, cfg, results, svc, started)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def build_report(store: Store, cfg: dict, results: list[dict], svc: Any, started: float) -> dict:
    ops = summarize(results)
    return {"backend": store.name, "store": store.describe(), "procs": cfg["procs"],
            "seconds": cfg["seconds"], "fixed_ops": cfg["ops"], "value_size": cfg["value_size"],
            "keys": cfg["keys"], "started": started, "cpus": os.cpu_count(),
            "eatmydata_verified": durability.preload_verified(os.getpid()) if store.eatmydata else False,
            "service": svc.describe() if svc is not None else None,
            "ops": ops, "floor": floor_ratios(ops)}


__all__ = ["add_arguments", "run", "run_processes", "summarize", "floor_ratios", "format_table"]
