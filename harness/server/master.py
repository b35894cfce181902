"""The pre-fork arbiter (the gunicorn / Unicorn master pattern).

The master binds the listening socket, prepares the Store, forks N workers and
then runs ONE loop. Signal handlers only enqueue the signal number; the wakeup
fd (``signal.set_wakeup_fd``) makes the loop's ``select`` return at once. The
loop then, in order: handles queued signals, reaps dead children, kills workers
whose heartbeat is stale, and (re)starts missing workers with a backoff.

Heartbeats: each worker owns an anonymous memory file (memfd: no path, so
nothing to protect or leave behind even if the master is SIGKILLed) and writes
its own ``time.monotonic()`` stamp into it (CLOCK_MONOTONIC is system-wide on Linux).
Staleness is judged from that stamp, not from when the master last looked, so a
master that was itself stopped (SIGSTOP, a long scheduling gap) does not kill
healthy workers; after such a pause every worker also gets a fresh grace period.

Readiness: workers write ``b"<slot> <pid>\\n"`` on a shared pipe once they
accept; when every initial worker has, the master prints the one JSON ready line.
"""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import backends
from harness.errors import HarnessError, InvalidInput
from harness.server.config import EXIT_WORKER_BOOT, ServerConfig
# Imported here, not in the child, so a respawn costs a fork and no imports.
from harness.server.worker import Worker

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT, signal.SIGCHLD,
                   signal.SIGTTIN, signal.SIGTTOU, signal.SIGHUP)
MASTER_ONLY = (signal.SIGINT, signal.SIGTTIN, signal.SIGTTOU, signal.SIGHUP)
STAMP = struct.Struct("d")
MAX_BACKOFF = 5.0


@dataclass
class WorkerSlot:
    """Book-keeping of one slot (1..N); a respawned worker takes over its slot."""
    number: int
    pid: int = 0
    hb_fd: int = -1
    started: float = 0.0          # monotonic time of the fork
    grace_until: float = 0.0      # no heartbeat kill before this
    ready: bool = False
    retiring: bool = False        # sent SIGTERM because the slot is no longer wanted
    failures: int = 0             # quick deaths in a row, for the backoff
    not_before: float = 0.0       # backoff: do not fork before this
    kill_sent: bool = False


@dataclass
class Counters:
    spawned: int = 0
    reaped: int = 0
    timeouts: int = 0


def bind_socket(cfg: ServerConfig) -> socket.socket:
    """The listening socket every worker accepts on; InvalidInput if it cannot be bound."""
    try:
        infos = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidInput(f"--host {cfg.host!r}: cannot resolve ({exc})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"--host {cfg.host} --port {cfg.port}: cannot bind ({exc.strerror})") from None
    sock.listen(cfg.backlog)
    sock.setblocking(False)
    return sock


class Master:
    """Run the arbiter: ``Master(cfg).run()`` returns the exit code."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.target = cfg.workers
        self.slots: dict[int, WorkerSlot] = {}
        self.by_pid: dict[int, WorkerSlot] = {}
        self.queue: list[int] = []
        self.counters = Counters()
        self.stopping: Optional[str] = None   # None, "graceful" or "quick"
        self.stop_deadline = 0.0
        self.announced = False
        self.boot_error: Optional[str] = None
        self.boot_failures = 0
        self.sock: Optional[socket.socket] = None
        self.store = None
        self.last_tick = 0.0

    # ---- setup ------------------------------------------------------------
    def run(self) -> int:
        """Bind, prepare the store, fork, loop until stopped; always cleans up."""
        self.store = backends.create(self.cfg.backend, **self.cfg.store_options)
        self.sock = bind_socket(self.cfg)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ready_r, self.ready_w = os.pipe2(os.O_NONBLOCK)
        try:
            self.store.prepare()
            self.install_signals()
            self.loop()
        finally:
            self.cleanup()
        if self.boot_error:
            raise HarnessError(self.boot_error)
        return 0

    def install_signals(self) -> None:
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self.enqueue)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

    def enqueue(self, signum: int, _frame: object) -> None:
        # Only record: all work happens in the loop (the wakeup fd woke it).
        self.queue.append(signum)

    def cleanup(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.kill_all(signal.SIGKILL)
        self.wait_children(2.0)
        for slot in self.slots.values():
            self.close_heartbeat(slot)
        if self.sock is not None:
            self.sock.close()
        for fd in (self.wake_r, self.wake_w, self.ready_r, self.ready_w):
            os.close(fd)
        if self.store is not None:
            self.store.destroy()

    # ---- the loop -----------------------------------------------------------
    def loop(self) -> None:
        self.last_tick = time.monotonic()
        while True:
            self.note_pause()
            self.handle_signals()
            self.reap()
            if self.stopping:
                if not self.by_pid:
                    return
                if time.monotonic() >= self.stop_deadline:
                    self.kill_all(signal.SIGKILL)
            else:
                self.check_heartbeats()
                self.manage_workers()
            self.sleep()
            self.read_ready()

    def sleep(self) -> None:
        """Wait for a signal, a readiness report or the next heartbeat check."""
        timeout = min(0.5, self.cfg.heartbeat_interval)
        if self.queue:
            timeout = 0.0
        try:
            select.select([self.wake_r, self.ready_r], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def note_pause(self) -> None:
        """After a long gap in the loop (the master was stopped), restart every grace period."""
        now = time.monotonic()
        if now - self.last_tick > max(1.0, 2 * self.cfg.heartbeat_interval):
            for slot in self.by_pid.values():
                slot.grace_until = now + self.cfg.timeout
        self.last_tick = now

    def handle_signals(self) -> None:
        while self.queue:
            sig = self.queue.pop(0)
            if sig == signal.SIGTERM:
                self.stop(graceful=True)
            elif sig in (signal.SIGQUIT, signal.SIGINT):
                self.stop(graceful=False)
            elif sig == signal.SIGTTIN and not self.stopping:
                self.target = min(self.target + 1, 256)
            elif sig == signal.SIGTTOU and not self.stopping:
                self.target = max(self.target - 1, 1)
            # SIGCHLD: reap() runs right after; SIGHUP: ignored (nothing to reload).

    def stop(self, graceful: bool) -> None:
        if self.stopping == "quick" or (self.stopping and graceful):
            return
        self.stopping = "graceful" if graceful else "quick"
        if graceful:
            self.stop_deadline = time.monotonic() + self.cfg.graceful_timeout + 1.0
            self.kill_all(signal.SIGTERM)
        else:
            self.stop_deadline = time.monotonic() + 1.0
            self.kill_all(signal.SIGQUIT)

    # ---- children -------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.by_pid.pop(pid, None)
            if slot is not None:
                self.counters.reaped += 1
                self.on_worker_exit(slot, status)

    def on_worker_exit(self, slot: WorkerSlot, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        now = time.monotonic()
        self.close_heartbeat(slot)
        if not self.announced and not slot.ready and not self.stopping:
            # Before the ready line, a worker that dies while starting is a setup
            # error (bad store, import error): stop rather than respawn forever.
            self.boot_failures += 1
            if code == EXIT_WORKER_BOOT or self.boot_failures >= 3:
                self.boot_error = f"worker {slot.number} could not start (its error is above); stopping"
                self.stop(graceful=False)
        if not self.stopping and not slot.retiring and code != 0:
            print(f"harness serve: worker {slot.number} (pid {slot.pid}) exited with {code}; "
                  "respawning", file=sys.stderr, flush=True)
        quick = now - slot.started < 1.0 or not slot.ready
        slot.failures = slot.failures + 1 if quick else 0
        slot.not_before = now + (0.0 if slot.failures <= 1 else
                                 min(MAX_BACKOFF, 0.1 * 2 ** (slot.failures - 2)))
        slot.pid, slot.ready, slot.kill_sent = 0, False, False
        if slot.retiring or slot.number > self.target:
            del self.slots[slot.number]

    def manage_workers(self) -> None:
        """Fork missing workers for slots 1..target; retire the ones above it."""
        now = time.monotonic()
        for number in range(1, self.target + 1):
            slot = self.slots.setdefault(number, WorkerSlot(number))
            if slot.pid == 0 and now >= slot.not_before:
                self.spawn(slot)
        for slot in list(self.slots.values()):
            if slot.number > self.target:
                if slot.pid == 0:
                    del self.slots[slot.number]
                elif not slot.retiring:
                    slot.retiring = True
                    self.signal_worker(slot, signal.SIGTERM)

    def spawn(self, slot: WorkerSlot) -> None:
        fd = os.memfd_create(f"sipstate-hb-{slot.number}", 0)  # inherited by the fork
        now = time.monotonic()
        os.pwrite(fd, STAMP.pack(now), 0)
        slot.hb_fd, slot.started, slot.grace_until = fd, now, now + self.cfg.timeout
        slot.ready, slot.retiring, slot.kill_sent = False, False, False
        sys.stdout.flush()
        sys.stderr.flush()
        # Block our signals across the fork: a signal that reached the child before it
        # reset its handlers would run the master's handler in the child and be lost
        # (a SIGTERM sent to a worker forked a moment ago). Pending ones are delivered
        # after the unblock: in the master to enqueue(), in the child with SIG_DFL.
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        pid = os.fork()
        if pid == 0:
            self.run_child(slot)       # never returns
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        slot.pid = pid
        self.by_pid[pid] = slot
        self.counters.spawned += 1

    def run_child(self, slot: WorkerSlot) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in HANDLED_SIGNALS:
                # The master's signals (and a terminal's SIGINT to the whole group)
                # are ignored; SIGTERM / SIGQUIT stop the worker until it installs its own.
                signal.signal(sig, signal.SIG_IGN if sig in MASTER_ONLY else signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            os.close(self.wake_r)
            os.close(self.wake_w)
            os.close(self.ready_r)
            for other in self.slots.values():
                if other is not slot and other.hb_fd >= 0:
                    os.close(other.hb_fd)
            code = Worker(self.cfg, self.sock, slot.number, self.store, slot.hb_fd, self.ready_w).run()
        except BaseException as exc:  # noqa: BLE001 - a child must never return into the master
            print(f"harness serve: worker {slot.number}: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
        finally:
            os._exit(code)

    def signal_worker(self, slot: WorkerSlot, sig: int) -> None:
        if slot.pid:
            try:
                os.kill(slot.pid, sig)
            except ProcessLookupError:
                pass

    def kill_all(self, sig: int) -> None:
        for slot in list(self.by_pid.values()):
            self.signal_worker(slot, sig)

    def wait_children(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.by_pid and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)

    # ---- heartbeats and readiness ---------------------------------------------
    def check_heartbeats(self) -> None:
        now = time.monotonic()
        for slot in list(self.by_pid.values()):
            if slot.kill_sent or now < slot.grace_until:
                continue
            try:
                (stamp,) = STAMP.unpack(os.pread(slot.hb_fd, STAMP.size, 0))
            except (OSError, struct.error):
                continue
            if now - stamp > self.cfg.timeout:
                print(f"harness serve: worker {slot.number} (pid {slot.pid}) silent for "
                      f"{now - stamp:.1f} s > --timeout {self.cfg.timeout:g}; killing it",
                      file=sys.stderr, flush=True)
                self.counters.timeouts += 1
                slot.kill_sent = True
                self.signal_worker(slot, signal.SIGKILL)

    def close_heartbeat(self, slot: WorkerSlot) -> None:
        if slot.hb_fd >= 0:
            os.close(slot.hb_fd)
            slot.hb_fd = -1

    def read_ready(self) -> None:
        try:
            data = os.read(self.ready_r, 65536)
        except BlockingIOError:
            return
        for line in data.decode("ascii", "replace").splitlines():
            number, _, pid = line.partition(" ")
            slot = self.by_pid.get(int(pid)) if pid.isdigit() else None
            if slot is not None and str(slot.number) == number:
                slot.ready = True
        self.announce_if_ready()

    def announce_if_ready(self) -> None:
        if self.announced or self.stopping:
            return
        ready = sum(1 for s in self.slots.values() if s.ready and s.number <= self.target)
        if ready >= self.target:
            self.announced = True
            host, port = self.sock.getsockname()[:2]
            line = {"event": "ready", "host": host, "port": port, "workers": self.target,
                    "pid": os.getpid()}
            try:
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
            except OSError as exc:
                if exc.errno != errno.EPIPE:
                    raise
