"""The built-in generator of one process: schedule, call flows, timeouts, drain.

Open loop: call starts follow a constant or Poisson schedule that never waits for
answers. At most ``concurrency`` transactions may await answers at once (default:
one per connection, as wrk2 keeps one request per connection); a start beyond
that waits in a FIFO backlog and is sent when an answer frees a slot. Latency is
recorded from the *intended* time (so waiting for a stalled server counts:
coordinated omission corrected) and from the actual send time (uncorrected).
Closed loop: a fixed number of calls in flight, each replaced when it ends.

Phases: warmup (calls run, nothing is recorded) -> measurement window ->
drain (answers awaited up to the transaction timeout).
"""
from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections import deque
from typing import Callable, Optional

from harness.errors import HarnessError
from harness.loadgen import messages as M
from harness.loadgen.config import LoadConfig
from harness.loadgen.pool import Conn, Pool
from harness.loadgen.recorder import Recorder
from harness.metrics import own_cpu_seconds

monotonic = time.monotonic
MONITOR_PERIOD = 0.05
TIMER_RESOLUTION = 0.001
BATCH = 200            # call starts per scheduler wake-up before I/O gets a turn
INVITE, REGISTER, OPTIONS = 0, 1, 2
FLOW_CODES = {"invite": INVITE, "register": REGISTER, "options": OPTIONS}
FLOW_TXN = ("invite", "register", "options")
QUEUED, INVITING, HOLDING, BYE_QUEUED, BYEING, ASKING, DONE = range(7)
USERS_PER_PROC = 1000


class Call:
    """One flow in progress (an INVITE dialog, a REGISTER or an OPTIONS)."""

    __slots__ = ("tok", "flow", "intended", "sent", "measured", "state", "serial", "conn",
                 "inv_conn", "uri", "to", "inv_worker", "bye_intended", "latency", "user",
                 "waiter")

    def __init__(self, tok: bytes, flow: int, intended: float, measured: bool) -> None:
        self.tok, self.flow, self.intended, self.measured = tok, flow, intended, measured
        self.state, self.serial, self.waiter = QUEUED, 0, None
        self.inv_worker = self.latency = self.user = None


class Generator:
    """One process's generator; ``await connect()`` then ``await run(t0)`` -> export dict."""

    def __init__(self, cfg: LoadConfig, on_tick: Optional[Callable[[dict], None]] = None):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.rec = Recorder()
        self.on_tick = on_tick
        self.pool = Pool(cfg.host, cfg.port, cfg.connections, self.rng, cfg.timeout,
                         self.on_response, self.conn_lost)
        self.calls: dict[bytes, Call] = {}
        self.backlog: deque = deque()
        self.timeouts: deque = deque()
        self.outstanding = 0
        self.cap = cfg.concurrency if cfg.mode == "open" else 0
        self.prefix = b"%x.%x." % (os.getpid(), self.rng.getrandbits(40))
        self.counter = itertools.count(1)
        domain = f"{cfg.host}:{cfg.port}".encode()
        self.domain, self.target_uri = domain, b"sip:service@" + domain + b";transport=tcp"
        self.users = [b"u%s%d" % (self.prefix.replace(b".", b""), i) for i in range(USERS_PER_PROC)]
        self.registered: list[bytes] = []
        flows = [(FLOW_CODES[name], w) for name, w in cfg.mix]
        self.flow_codes = [f for f, _ in flows]
        total = sum(w for _, w in flows)
        self.flow_cum = list(itertools.accumulate(w / total for _, w in flows))
        self.live_done = self.live_failed = 0
        self.sched_done = False
        self.marks: dict[str, tuple[float, float]] = {}
        self.backlog_max = 0
        self.skipped = 0
        self.probing = True
        self.slot = 0

    # ----------------------------------------------------------------- set-up
    async def connect(self) -> None:
        """Open the connection pool and probe every connection with OPTIONS."""
        await self.pool.open_all(self._probe)

    async def _probe(self, conn: Conn) -> None:
        """OPTIONS on ``conn`` to learn its worker. Any final answer will do; a server
        that ignores OPTIONS (SIPp's uas) costs one short wait, then probing stops."""
        if not self.probing:
            return
        fut = asyncio.get_running_loop().create_future()
        self._start(monotonic(), False, flow=OPTIONS, conn=conn, waiter=fut)
        try:
            outcome = await asyncio.wait_for(asyncio.shield(fut), min(self.cfg.timeout, 1.0))
        except asyncio.TimeoutError:
            outcome = "timeout"
            self.probing = False
            for call in [c for c in self.calls.values() if c.waiter is fut]:
                self._finish(call, "timeout")
        if outcome == "conn_error":
            raise HarnessError(f"{self.cfg.host}:{self.cfg.port} closed the connection "
                               "at once; is it a SIP server over TCP?")

    async def run(self, t0: float) -> dict:
        """Run the schedule starting at monotonic time ``t0``; return the export dict."""
        cfg, loop = self.cfg, asyncio.get_running_loop()
        self.t0, self.t_meas = t0, t0 + cfg.warmup
        self.t_end = self.t_meas + cfg.duration
        self.hard_end = self.t_end + cfg.hold + 2 * cfg.timeout + 1.0
        self.done = loop.create_future()
        self.next_tick = t0 + 1.0
        self.mon_due = monotonic() + MONITOR_PERIOD
        loop.call_later(MONITOR_PERIOD, self._monitor)
        loop.call_later(max(0.0, self.t_meas - monotonic()), self._mark, "meas")
        loop.call_later(max(0.0, self.t_end - monotonic()), self._mark, "end")
        if cfg.mode == "open":
            self.next_time = self._poisson if cfg.arrival == "poisson" else self._constant
            self.next_t = (t0 + cfg.start_offset if cfg.arrival == "constant"
                           else self._poisson(t0))
            loop.call_later(max(0.0, self.next_t - monotonic()), self._schedule)
        else:
            loop.call_later(max(0.0, t0 - monotonic()), self._start_closed)
        await self.done
        self._mark("done")
        self.pool.close()
        return self._export()

    # -------------------------------------------------------------- schedule
    def _constant(self, prev: float) -> float:
        """The next slot's time, computed from its index so that no error accumulates."""
        self.slot += 1
        return self.t0 + self.cfg.start_offset + self.slot / self.cfg.rate

    def _poisson(self, prev: float) -> float:
        return prev + self.rng.expovariate(self.cfg.rate)

    def _schedule(self) -> None:
        nxt, end, t_meas, rec, cap = self.next_t, self.t_end, self.t_meas, self.rec, self.cap
        n = 0
        now = monotonic()
        # The loop's timers fire up to 1 ms early or late (1 ms resolution). The wake-up
        # is aimed 1 ms early and starts due within 2 ms go at once, so no start is late
        # because of the timer; latency counts from the intended time or the send,
        # whichever is later, so early sends neither add nor hide time.
        while nxt < now + 2 * TIMER_RESOLUTION and nxt < end and n < BATCH:
            measured = nxt >= t_meas
            if measured:  # the generator's own lateness (never a wait for the server)
                rec.counts["attempted"] += 1
                if now > nxt:
                    rec.schedule_lag(now - nxt)
                else:
                    rec.schedule_lag(0.0)
            if cap and self.outstanding >= cap:
                self.backlog.append((nxt, None))
            else:
                self._start(nxt, measured)
            nxt = self.next_time(nxt)
            n += 1
            now = monotonic()
        self.next_t = nxt
        loop = asyncio.get_running_loop()
        if nxt >= end or now > end + min(1.0, self.cfg.timeout):
            self.skipped = max(0, int((end - nxt) * self.cfg.rate) + (nxt < end))
            self.sched_done = True
            self._check_drained()
        elif n >= BATCH:
            loop.call_soon(self._schedule)
        else:
            loop.call_later(max(0.0, nxt - now - TIMER_RESOLUTION), self._schedule)

    def _start_closed(self) -> None:
        for _ in range(self.cap or self.cfg.concurrency or 1):
            self._start_next_closed()

    def _start_next_closed(self) -> None:
        now = monotonic()
        if now >= self.t_end:
            self.sched_done = True
            return
        measured = now >= self.t_meas
        if measured:
            self.rec.counts["attempted"] += 1
        self._start(now, measured)

    # ----------------------------------------------------------------- flows
    def _pick_flow(self) -> int:
        codes = self.flow_codes
        if len(codes) == 1:
            return codes[0]
        r = self.rng.random()
        for code, edge in zip(codes, self.flow_cum):
            if r < edge:
                return code
        return codes[-1]

    def _start(self, intended: float, measured: bool, flow: Optional[int] = None,
               conn: Optional[Conn] = None, waiter=None, queued: bool = False) -> None:
        """Send the first request of a new flow (or fail it at once without a connection)."""
        tok = self.prefix + b"%x" % next(self.counter)
        call = Call(tok, self._pick_flow() if flow is None else flow, intended, measured)
        call.waiter = waiter
        conn = conn or self.pool.pick()
        if conn is None:
            self._finish(call, "conn_error")
            return
        self.calls[tok] = call
        call.conn = call.inv_conn = conn
        now = monotonic()
        if now > intended:
            if measured and queued:  # waited for a transaction slot: the server's doing
                self.rec.slot_wait(now - intended)
        else:
            call.intended = now
        if call.flow == INVITE:
            reg = self.registered
            call.uri = (b"sip:%s@%s" % (reg[int(self.rng.random() * len(reg))], self.domain)
                        if reg else self.target_uri)
            conn.write(M.invite(call.uri, conn.via, tok))
            call.state = INVITING
        elif call.flow == REGISTER:
            call.user = self.users[int(self.rng.random() * USERS_PER_PROC)]
            conn.write(M.register(self.domain, conn.via, tok, call.user))
            call.state = ASKING
        else:
            conn.write(M.options(self.domain, conn.via, tok))
            call.state = ASKING
        self._await(call, now)

    def _await(self, call: Call, now: float) -> None:
        call.sent = now
        call.serial += 1
        self.outstanding += 1
        self.timeouts.append((now + self.cfg.timeout, call, call.serial))

    def on_response(self, conn: Conn, r: M.Response) -> None:
        call = self.calls.get(r.call_id)  # type: ignore[arg-type]
        if r.worker is not None and conn.worker != r.worker:
            self.pool.learn(conn, r.worker)
            self.rec.workers.add(r.worker)
        if call is None:
            self._unmatched(conn, r)
            return
        state = call.state
        if state == INVITING:
            self._invite_response(call, conn, r)
        elif state == BYEING:
            self._bye_response(call, r)
        elif state == ASKING:
            self._simple_response(call, r)
        else:
            self.rec.counts["unexpected_responses"] += 1

    def _unmatched(self, conn: Conn, r: M.Response) -> None:
        """An answer to a finished call. A 2xx to an INVITE that timed out created a
        dialog on the server: ACK it and send BYE (unawaited) so that it is not left over."""
        self.rec.counts["unmatched_responses"] += 1
        if (200 <= r.status < 300 and r.method == b"INVITE" and r.call_id
                and r.call_id.startswith(self.prefix) and M.has_tag(r.to)):
            tok = r.call_id
            conn.write(M.ack(self.target_uri, conn.via, tok, r.to, True)
                       + M.bye(self.target_uri, conn.via, tok, r.to))
            self.rec.counts["late_dialogs_closed"] += 1

    def _invite_response(self, call: Call, conn: Conn, r: M.Response) -> None:
        if r.cseq != 1 or r.method != b"INVITE":
            self._finish(call, "invalid_response")
            return
        call.inv_worker = r.worker
        status = r.status
        if status < 200:
            return
        if status >= 300:
            conn.write(M.ack(call.uri, conn.via, call.tok, r.to or b"<sip:x>", False))
            self._fail_status(call, status)
            return
        if not M.has_tag(r.to):
            self._finish(call, "invalid_response")
            return
        now = monotonic()
        self._txn_over(call)
        if call.measured:
            self.rec.latency("invite", call.intended, call.sent, now)
        call.latency = now - call.intended
        call.to = r.to
        ack_conn = self._cross(call)
        ack = M.ack(call.uri, ack_conn.via, call.tok, r.to, True)
        call.bye_intended = now + self.cfg.hold
        if self.cfg.hold <= 0 and not (self.cap and self.outstanding >= self.cap):
            # ACK and BYE back to back on one connection: one send() instead of two
            ack_conn.write(ack + M.bye(call.uri, ack_conn.via, call.tok, r.to))
            call.conn = ack_conn
            call.state = BYEING
            self._await(call, now)
            return
        ack_conn.write(ack)
        call.state = HOLDING
        if self.cfg.hold > 0:
            asyncio.get_running_loop().call_later(self.cfg.hold, self._bye_due, call)
        else:
            self._bye_due(call)

    def _cross(self, call: Call) -> Conn:
        """The connection for ACK/BYE: another worker's with probability cross_connection."""
        inv = call.inv_conn
        p = self.cfg.cross_connection
        if p <= 0 or (p < 1 and self.rng.random() >= p):
            if inv.transport is not None and not inv.transport.is_closing():
                return inv
            return self.pool.pick() or inv
        return self.pool.other(inv, call.inv_worker) or inv

    def _bye_due(self, call: Call) -> None:
        if call.state != HOLDING:
            return
        if self.cap and self.outstanding >= self.cap:
            call.state = BYE_QUEUED
            self.backlog.append((call.bye_intended, call))
        else:
            self._send_bye(call)

    def _send_bye(self, call: Call) -> None:
        conn = self._cross(call)
        if conn.transport is None or conn.transport.is_closing():
            self._finish(call, "conn_error")
            return
        conn.write(M.bye(call.uri, conn.via, call.tok, call.to))
        call.conn = conn
        call.state = BYEING
        self._await(call, monotonic())

    def _bye_response(self, call: Call, r: M.Response) -> None:
        if r.cseq != 2 or r.method != b"BYE":
            self._finish(call, "invalid_response", lost=True)
            return
        status = r.status
        if status < 200:
            return
        if call.measured:
            self.rec.dialog_workers(call.inv_worker, r.worker)
        if status < 300:
            if call.measured:
                self.rec.latency("bye", call.bye_intended, call.sent, monotonic())
            self._finish(call, "completed")
        else:
            self._fail_status(call, status, lost=status == 481)

    def _simple_response(self, call: Call, r: M.Response) -> None:
        txn = FLOW_TXN[call.flow]
        if r.cseq != 1 or r.method.decode(errors="replace").lower() != txn:
            self._finish(call, "invalid_response")
            return
        if r.status < 200:
            return
        if r.status >= 300:
            self._fail_status(call, r.status)
            return
        now = monotonic()
        if call.measured:
            self.rec.latency(txn, call.intended, call.sent, now)
        call.latency = now - call.intended
        if call.flow == REGISTER and len(self.registered) < USERS_PER_PROC:
            self.registered.append(call.user)
        self._finish(call, "completed")

    # -------------------------------------------------------------- endings
    def _fail_status(self, call: Call, status: int, lost: bool = False) -> None:
        if call.measured:
            self.rec.status(status)
        self._finish(call, f"status_{status}", lost=lost)

    def _txn_over(self, call: Call) -> None:
        """The transaction ``call`` awaited has ended: free its slot, feed the backlog."""
        call.serial += 1
        self.outstanding -= 1
        backlog, cap = self.backlog, self.cap
        while backlog and self.outstanding < cap:
            intended, queued = backlog.popleft()
            if queued is None:
                self._start(intended, intended >= self.t_meas, queued=True)
            else:
                self._send_bye(queued)

    def _finish(self, call: Call, outcome: str, lost: bool = False) -> None:
        if call.state in (INVITING, BYEING, ASKING):
            call.state = DONE
            self._txn_over(call)
        call.state = DONE
        self.calls.pop(call.tok, None)
        ok = outcome == "completed"
        if call.measured:
            rec = self.rec
            second = int(monotonic() - self.t_meas)
            rec.outcomes[outcome] += 1
            if ok:
                rec.counts["completed"] += 1
                rec.series.completed(second, call.latency)
            else:
                rec.counts["failed"] += 1
                rec.series.failed(second)
            if lost:
                rec.counts["lost_dialogs"] += 1
            if outcome == "timeout":
                rec.counts["timeouts"] += 1
        if call.waiter is not None:
            if not call.waiter.done():
                call.waiter.set_result(outcome)
            return
        if ok:
            self.live_done += 1
        else:
            self.live_failed += 1
        if self.cfg.mode == "closed":
            if outcome == "conn_error":  # no connection now: retry later, never recurse
                asyncio.get_running_loop().call_later(0.2, self._start_next_closed)
            else:
                self._start_next_closed()
        if self.sched_done and not self.calls:
            self._check_drained()

    def conn_lost(self, conn: Conn) -> None:
        """Every transaction awaiting an answer on ``conn`` fails (a BYE's dialog is lost)."""
        for call in [c for c in self.calls.values() if c.conn is conn]:
            if call.state in (INVITING, ASKING):
                self._finish(call, "conn_error")
            elif call.state == BYEING:
                self._finish(call, "conn_error", lost=True)

    # --------------------------------------------------------------- monitor
    def _monitor(self) -> None:
        """Every 50 ms: event-loop lag, transaction timeouts, live ticks, hard deadline."""
        now = monotonic()
        if self.t_meas <= now <= self.t_end:
            self.rec.loop_lag_max = max(self.rec.loop_lag_max, now - self.mon_due)
        timeouts = self.timeouts
        while timeouts and timeouts[0][0] <= now:
            _, call, serial = timeouts.popleft()
            if call.serial == serial and call.state in (INVITING, BYEING, ASKING):
                self._finish(call, "timeout", lost=call.state == BYEING)
        self.backlog_max = max(self.backlog_max, len(self.backlog))
        if now >= self.next_tick:
            self._tick(now)
        if self.cfg.mode == "closed" and now >= self.t_end:
            self.sched_done = True
        if now >= self.hard_end:
            self._abandon()
        if self.sched_done:
            self._check_drained()
        if not self.done.done():
            self.mon_due = now + MONITOR_PERIOD
            asyncio.get_running_loop().call_later(MONITOR_PERIOD, self._monitor)

    def _tick(self, now: float) -> None:
        self.next_tick += 1.0
        if self.on_tick is not None:
            bucket = self.rec.series.buckets.get(int(now - self.t_meas) - 1)
            p99 = (bucket[2].get_value_at_percentile(99.0) / 1000.0
                   if bucket and bucket[2].get_total_count() else None)
            self.on_tick({"t": now - self.t0, "done": self.live_done, "failed": self.live_failed,
                          "p99_ms": p99, "warmup": now < self.t_meas})
        self.live_done = 0

    def _abandon(self) -> None:
        """The drain deadline passed: what is still queued was never sent."""
        while self.backlog:
            intended, queued = self.backlog.popleft()
            call = queued or Call(b"", INVITE, intended, intended >= self.t_meas)
            self._finish(call, "not_sent")
        for call in list(self.calls.values()):
            self._finish(call, "timeout", lost=call.state == BYEING)
        self.sched_done = True

    def _check_drained(self) -> None:
        if not self.calls and not self.backlog and not self.done.done():
            self.done.set_result(None)

    def _mark(self, name: str) -> None:
        self.marks.setdefault(name, (monotonic(), own_cpu_seconds()))

    def _export(self) -> dict:
        m = self.marks
        meas, end, done = m.get("meas", m["done"]), m.get("end", m["done"]), m["done"]
        return self.rec.export({
            "pid": os.getpid(), "cpu_window": end[1] - meas[1], "wall_window": end[0] - meas[0],
            "cpu_measured": done[1] - meas[1], "cpu_total": own_cpu_seconds(),
            "skipped": self.skipped, "backlog_max": self.backlog_max,
            "reconnects": self.pool.reconnects, "bad_streams": self.pool.bad_streams,
            "connections": len(self.pool.conns)})
