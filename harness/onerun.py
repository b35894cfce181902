"""One run of the matrix, end to end: :func:`execute` (RunSpec -> RunResult).

Steps, in order:

1. a private run directory (``mkdtemp``, mode 0700) under /dev/shm (``storage:
   memory``) or the scenario's ``disk_dir`` (``storage: disk``); backends that take
   a ``path`` keep their data there, so the runner can open the same store;
2. the service (redis-server / memcached) when the backend needs one and the
   options name no ``url`` / ``servers`` (``harness.services.start_service``);
3. ``harness serve`` in its own process group (LD_PRELOAD of libeatmydata when
   asked, TMPDIR inside the run directory, pinned CPUs); wait for its ready line
   and for a real SIP OPTIONS answered 200;
4. ``harness load --json F --hdr-dir D`` (builtin or SIPp), on a pseudo-terminal
   when the runner's output is a terminal so its live line can be shown; CPU time
   of the server tree and the service sampled from /proc while it runs;
5. the audit: the store opened in this process (``backends.create`` + ``connect``)
   and ``count()`` taken while the server still runs (its master destroys the
   store when it stops);
6. everything stopped and removed -- in a ``finally`` with SIGINT/SIGTERM blocked,
   so a second Ctrl-C cannot cut the cleanup short. The shared-memory files the
   server mapped are noted at start and removed if the server left them behind.

CPU accounting: the server's (master + workers, reaped workers included) and the
service's CPU over the generator's lifetime, scaled by duration / (warmup +
duration), which is the share of the calls that fall in the measurement window
at a steady rate; the server is idle before the first and after the last call.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from harness import procs
from harness.errors import MissingBinary
from harness.progress import clean_live_line
from harness.schema import RUN_COLUMNS
from harness.scenario import RunSpec

READY_TIMEOUT_S = 45.0
SERVER_STOP_GRACE_S = 10.0
PROTECTED = frozenset({"run_id", "repeat", "backend", "fsync", "eatmydata", "workers", "status", "reason",
                       "store_leftover", "cpu_server_s", "cpu_service_s", "cpu_us_per_call"})


class RunFailed(Exception):
    """The run cannot go on; the message is the row's reason."""


class RunSkipped(Exception):
    """A program or library the run needs is missing; the message says how to install it."""


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every run of one matrix shares."""

    hdr_dir: Path          # results folder's hdr/: the generator writes <run_id>.<txn>.hgrm here
    disk_dir: Path         # base of run directories with storage: disk
    tty: bool              # show the generator's live line (run it on a pty)


@dataclasses.dataclass
class RunResult:
    row: dict
    timeseries: list
    details: dict          # for manifest.json "runs"
    data_dirs: list


def base_row(spec: RunSpec) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in RUN_COLUMNS}
    row.update(run_id=spec.run_id, repeat=spec.repeat, backend=spec.backend, fsync=spec.fsync,
               eatmydata=spec.eatmydata, workers=spec.workers, generator=spec.generator,
               mode=spec.load.mode, rate_target=spec.rate, duration_s=spec.load.duration,
               store=spec.store, storage=spec.storage, options=json.dumps(spec.options, sort_keys=True))
    return row


def execute(spec: RunSpec, ctx: RunContext, tick: Callable[[Optional[str]], None]) -> RunResult:
    """Run ``spec``; never raises for a failed run (only KeyboardInterrupt propagates)."""
    run = _Run(spec, ctx, tick)
    row = base_row(spec)
    try:
        row.update(run.go())
        row["status"], row["reason"] = run.verdict(row)
    except RunSkipped as exc:
        row["status"], row["reason"] = "skipped", str(exc)
    except Exception as exc:  # noqa: BLE001 -- any failure is recorded and the matrix goes on
        row["status"], row["reason"] = "failed", one_line(f"{type(exc).__name__}: {exc}"
                                                          if not isinstance(exc, RunFailed) else str(exc))
    finally:
        with blocked_signals():
            run.cleanup()
    row["elapsed_s"] = round(time.monotonic() - run.t0, 2)
    return RunResult(row=row, timeseries=run.timeseries, details=run.details, data_dirs=run.data_dirs)


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def blocked_signals():
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends (they are delivered afterwards)."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    parts = [p.strip() for p in text.replace("\r", "\n").splitlines() if p.strip()]
    return " | ".join(parts[-lines:]) or "(no output)"


class _Run:
    """The state of one run, so that cleanup() can undo whatever go() reached."""

    def __init__(self, spec: RunSpec, ctx: RunContext, tick: Callable[[Optional[str]], None]) -> None:
        self.spec, self.ctx, self.tick = spec, ctx, tick
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.run_dir: Optional[Path] = None
        self.service: Any = None
        self.server: Optional[subprocess.Popen] = None
        self.server_log: Any = None
        self.load: Optional[subprocess.Popen] = None
        self.pty_fd = -1
        self.shm: set[str] = set()
        self.options: dict[str, Any] = dict(spec.options)
        self.timeseries: list[dict] = []
        self.details: dict[str, Any] = {"label": spec.label(), "store": spec.store, "storage": spec.storage}
        self.data_dirs: list[str] = []

    # ---- the steps ----------------------------------------------------------
    def go(self) -> dict[str, Any]:
        cls = self.resolve_store()
        self.make_run_dir()
        self.place_data(cls)
        self.start_service(cls)
        ready = self.start_server()
        fields = self.run_load(ready)
        fields.update(self.audit(cls))
        return fields

    def resolve_store(self) -> type:
        from backends.base import MissingDependency, resolve

        try:
            return resolve(self.spec.store)
        except MissingDependency as exc:
            raise RunSkipped(str(exc)) from None

    def make_run_dir(self) -> None:
        if self.spec.storage == "memory" and os.path.isdir(procs.SHM_ROOT):
            base = Path(procs.SHM_ROOT)
        else:
            base = self.ctx.disk_dir if self.ctx.disk_dir.is_dir() else Path(tempfile.gettempdir())
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"sipstate-run-{self.spec.run_id}-", dir=base))
        (self.run_dir / "tmp").mkdir(mode=0o700)
        self.data_dirs.append(str(self.run_dir))
        self.details["run_dir"] = str(self.run_dir)

    def place_data(self, cls: type) -> None:
        """Backends with a ``path`` option keep their data in the run directory (unless given)."""
        from backends.base import option_types

        if "path" in option_types(cls) and not self.options.get("path"):
            assert self.run_dir is not None
            self.options["path"] = str(self.run_dir / f"{self.spec.store.replace(':', '_')}-data")
        if self.options.get("path"):
            self.data_dirs.append(str(self.options["path"]))

    def start_service(self, cls: type) -> None:
        kind = getattr(cls, "service", None)
        if not kind or any(self.options.get(k) for k in ("url", "servers")):
            return
        from harness.services import start_service

        assert self.run_dir is not None
        try:
            self.service = start_service(kind, self.run_dir, fsync=self.spec.fsync,
                                         eatmydata=self.spec.eatmydata)
        except MissingBinary as exc:
            raise RunSkipped(str(exc)) from None
        procs.pin_process(self.service.pid, self.spec.cpu.service)
        self.options.update(self.service.store_options())
        self.details["service"] = self.service.describe()
        self.data_dirs.append(str(self.service.directory))

    def server_command(self) -> list[str]:
        spec = self.spec
        cmd = [sys.executable, "-m", "harness", "serve", "--backend", spec.store, "--workers", str(spec.workers),
               "--host", "127.0.0.1", "--port", "0", "--timeout", f"{spec.server.timeout:g}"]
        cmd += ["--no-100"] if not spec.server.send_100 else []
        cmd += ["--no-180"] if not spec.server.send_180 else []
        opts = {**self.options, "fsync": spec.fsync, "eatmydata": spec.eatmydata}
        for key, value in opts.items():
            if isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            elif isinstance(value, bool):
                value = str(value).lower()
            cmd += ["--opt", f"{key}={value}"]
        return cmd

    def child_env(self, eatmydata: bool) -> dict[str, str]:
        assert self.run_dir is not None
        env = {**os.environ, "TMPDIR": str(self.run_dir / "tmp"), "PYTHONUNBUFFERED": "1"}
        if eatmydata:
            from harness import durability
            try:
                env = durability.env_with_eatmydata(env)
            except MissingBinary as exc:
                raise RunSkipped(str(exc)) from None
        return env

    def start_server(self) -> dict:
        assert self.run_dir is not None
        env = self.child_env(self.spec.eatmydata)
        self.server_log = open(self.run_dir / "server.log", "w+")
        self.server = procs.spawn(self.server_command(), cpus=self.spec.cpu.server, env=env,
                                  stdout=subprocess.PIPE, stderr=self.server_log, text=True)
        try:
            ready = procs.read_ready(self.server, READY_TIMEOUT_S, self.server_log)
        except RuntimeError as exc:
            self.server_log.flush()
            raise RunFailed(f"harness serve {exc}: {log_tail(self.run_dir / 'server.log')}") from None
        procs.wait_options_ok(ready["host"], int(ready["port"]))
        pids = procs.tree_pids(self.server.pid)
        self.shm |= procs.shm_entries(pids, self.wall0)
        self.details["server"] = {"pid": self.server.pid, "port": ready["port"], "pids": pids}
        if self.spec.eatmydata:
            from harness import durability
            self.details["server"]["eatmydata_verified"] = all(durability.preload_verified(p) for p in pids)
        return ready

    def load_command(self, ready: dict, json_path: Path) -> list[str]:
        spec, load = self.spec, self.spec.load
        cmd = [sys.executable, "-m", "harness", "load", "--target", f"{ready['host']}:{ready['port']}",
               "--rate", f"{spec.rate or 0:g}", "--duration", f"{load.duration:g}", "--warmup", f"{load.warmup:g}",
               "--connections", str(load.connections), "--procs", str(load.procs), "--mode", load.mode,
               "--mix", load.mix_arg(), "--hold", f"{load.hold:g}", "--cross-connection",
               f"{load.cross_connection:g}", "--timeout", f"{load.timeout:g}", "--arrival", load.arrival,
               "--json", str(json_path), "--hdr-dir", str(self.ctx.hdr_dir), "--hdr-prefix", spec.run_id,
               "--generator", spec.generator]
        if load.concurrency is not None:
            cmd += ["--concurrency", str(load.concurrency)]
        if spec.generator == "sipp":
            cmd += ["--sipp-transport", load.sipp_transport]
        return cmd

    def start_load(self, ready: dict, json_path: Path, log_path: Path) -> Any:
        cmd = self.load_command(ready, json_path)
        env = self.child_env(False)
        log = open(log_path, "w")
        if self.ctx.tty:
            master, slave = os.openpty()
            self.pty_fd = master
            try:
                self.load = procs.spawn(cmd, cpus=self.spec.cpu.generator, env=env, stdout=slave, stderr=slave)
            finally:
                os.close(slave)
        else:
            self.load = procs.spawn(cmd, cpus=self.spec.cpu.generator, env=env, stdout=log, stderr=log)
        return log

    def run_load(self, ready: dict) -> dict[str, Any]:
        assert self.run_dir is not None and self.server is not None
        json_path, log_path = self.run_dir / "load.json", self.run_dir / "load.log"
        cpu0 = self.cpu_sample()
        log = self.start_load(ready, json_path, log_path)
        try:
            rusage = self.watch_load(log)
        finally:
            log.close()
        cpu1 = self.cpu_sample()
        if not json_path.is_file():
            raise RunFailed(f"harness load exited with status {self.load.returncode} and no result: "
                            f"{log_tail(log_path)}")
        data = json.loads(json_path.read_text())
        return self.load_fields(data, cpu0, cpu1, rusage)

    def watch_load(self, log: Any) -> Any:
        """Wait for the generator while sampling the server; fail if the server or service dies."""
        assert self.load is not None and self.server is not None
        load = self.spec.load
        deadline = time.monotonic() + load.warmup + load.duration + load.hold + 2 * load.timeout + 60
        buffer = ""
        while True:
            pid, status, rusage = os.wait4(self.load.pid, os.WNOHANG)
            if pid:
                self.load.returncode = os.waitstatus_to_exitcode(status)
                self.read_pty(log, 0)
                return rusage
            if self.server.poll() is not None:
                raise RunFailed(f"harness serve exited with status {self.server.returncode} during the load: "
                                f"{log_tail(Path(self.server_log.name))}")
            if self.service is not None and not self.service.alive():
                raise RunFailed(f"{self.service.kind} died during the load")
            if time.monotonic() > deadline:
                raise RunFailed("harness load did not finish in time (warmup + duration + hold + 2 x timeout + 60 s)")
            procs.drain(self.server.stdout, self.server_log)
            buffer = (buffer + self.read_pty(log, 0.2))[-2000:]
            if self.pty_fd < 0:
                time.sleep(0.2)
            self.tick(clean_live_line(buffer) or None)

    def read_pty(self, log: Any, timeout: float) -> str:
        if self.pty_fd < 0:
            return ""
        out = ""
        while select.select([self.pty_fd], [], [], timeout)[0]:
            try:
                data = os.read(self.pty_fd, 65536)
            except OSError:  # EIO: the generator closed the terminal
                break
            if not data:
                break
            out += data.decode(errors="replace")
            timeout = 0
        log.write(out)
        return out

    def cpu_sample(self) -> tuple[float, float]:
        server = procs.tree_cpu_seconds(self.server.pid if self.server else None)
        service = procs.tree_cpu_seconds(self.service.pid if self.service else None)
        return server, service

    def load_fields(self, data: dict, cpu0: tuple, cpu1: tuple, rusage: Any) -> dict[str, Any]:
        fields = {k: v for k, v in data.items() if k not in PROTECTED and k not in ("timeseries", "hdr")}
        self.timeseries = [{"run_id": self.spec.run_id, **p} for p in data.get("timeseries") or []]
        self.details["hdr"] = {txn: f"hdr/{Path(p).name}" for txn, p in (data.get("hdr") or {}).items()}
        load = self.spec.load
        share = load.duration / (load.warmup + load.duration)
        server_s, service_s = (max(0.0, b - a) for a, b in zip(cpu0, cpu1))
        fields["cpu_server_total_s"] = round(server_s, 4)
        fields["cpu_service_total_s"] = round(service_s, 4) if self.service else None
        fields["cpu_server_s"] = round(server_s * share, 4)
        fields["cpu_service_s"] = round(service_s * share, 4) if self.service else 0.0
        fields["cpu_loadgen_process_s"] = round(rusage.ru_utime + rusage.ru_stime, 4)
        if fields.get("cpu_loadgen_s") is None:
            fields["cpu_loadgen_s"] = round(fields["cpu_loadgen_process_s"] * share, 4)
        calls = data.get("calls_completed") or 0
        fields["cpu_us_per_call"] = (round((fields["cpu_server_s"] + fields["cpu_service_s"]) / calls * 1e6, 1)
                                     if calls else None)
        # The same cost per call *attempted*: defined even for `local`, whose calls all fail
        # (BYE 481), so the unshared control still has a CPU figure to compare with.
        attempted = data.get("calls_attempted") or 0
        fields["cpu_us_per_attempt"] = (round((fields["cpu_server_s"] + fields["cpu_service_s"]) / attempted
                                              * 1e6, 1) if attempted else None)
        return fields

    def audit(self, cls: type) -> dict[str, Any]:
        """Live keys left in the store after the load (dialogs not torn down, plus registrations)."""
        from backends.base import create

        if not getattr(cls, "shared", True):
            return {"store_leftover": None, "store_audit": "not shared: each worker's keys are private"}
        store = None
        try:
            store = create(self.spec.store, **self.options, fsync=self.spec.fsync)
            store.connect()
            return {"store_leftover": int(store.count()), "store_audit": "ok"}
        except Exception as exc:  # an audit that cannot be made is reported, not fatal
            return {"store_leftover": None,
                    "store_audit": one_line(f"not possible from outside the server: {type(exc).__name__}: {exc}", 200)}
        finally:
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()

    def verdict(self, row: dict) -> tuple[str, str]:
        if row.get("generator_saturated"):
            reasons = row.get("saturation_reasons") or []
            text = "; ".join(reasons) if isinstance(reasons, list) else str(reasons)
            return "failed", one_line(f"generator saturated: {text}")
        if self.load is not None and self.load.returncode not in (0, None):
            return "failed", f"harness load exited with status {self.load.returncode}"
        return one_worker_verdict(row, self.spec.workers)

    # ---- cleanup ------------------------------------------------------------
    def cleanup(self) -> None:
        """Stop every process, remove shared memory and the run directory. Idempotent."""
        with contextlib.suppress(Exception):
            procs.stop_group(self.load, grace=3.0)
        if self.pty_fd >= 0:
            os.close(self.pty_fd)
            self.pty_fd = -1
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.shm |= procs.shm_entries(procs.tree_pids(self.server.pid), self.wall0)
            code = procs.stop_group(self.server, grace=SERVER_STOP_GRACE_S)
            self.details.setdefault("server", {})["exit_status"] = code
            if self.server.stdout is not None:
                self.server.stdout.close()
        if self.server_log is not None:
            self.server_log.close()
        if self.service is not None:
            with contextlib.suppress(Exception):
                self.service.stop()
        if self.run_dir is not None:
            self.shm.discard(str(self.run_dir))
        leaked = procs.remove_paths(self.shm)
        if leaked:
            self.details["removed_leftovers"] = leaked
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def one_worker_verdict(row: dict, workers: int) -> tuple[str, str]:
    """A run whose answers all came from one worker of several tested no sharing at all
    (every dialog stayed on that worker): it is failed, not reported as lossless.
    Only when the generator says which workers answered (the builtin one does)."""
    seen = row.get("workers_seen")
    if workers >= 2 and isinstance(seen, list) and len(seen) == 1:
        return "failed", (f"every answer came from worker {seen[0]} of {workers}: no dialog "
                          "crossed workers, so the run says nothing about sharing")
    return "ok", ""
