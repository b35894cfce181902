"""Every RFC 4475 torture message on its own TCP connection gets the behaviour its
expected.tsv row describes; no worker dies; a fresh OPTIONS gets 200 after each."""
from __future__ import annotations

import csv
import socket

import pytest

from tests.server.helpers import wait_workers, worker_pids
from tests.server.sipclient import Conn, Dialog, options_ok, request
from tests.support import TESTDATA, running_server

DATA = TESTDATA / "rfc4475"
IDLE = 2.0

# Our reading of each expected.tsv text, as a check on (statuses, closed).
# statuses: every response read before the connection went quiet or closed.
NOT_400_FINAL = lambda st, closed: bool(st) and st[-1] >= 200 and st[-1] != 400  # noqa: E731
EXPECT = {
    "parsed; a final response other than 400": NOT_400_FINAL,
    "parsed; unknown method -> 405 or 501": lambda st, closed: st[-1:] in ([405], [501]),
    # Over TCP the octets after the REGISTER frame as a complete INVITE (its
    # Content-Length matches), so answering it is also correct stream behaviour.
    "first message answered; the trailing octets are not a valid message: 400 or close":
        lambda st, closed: bool(st) and st[0] == 200 and (closed or st[1:] in ([400], [200])),
    "stray response: no reply, connection stays usable": "stray",
    "stray response: dropped": "stray",
    "stray malformed response: dropped, no crash": "stray",
    "400 (or close); never 2xx": lambda st, closed: (st == [400]) or (not st and closed),
    "body shorter than Content-Length: no reply, idle timeout closes the connection": "idle",
    "negative Content-Length: 400 then close": lambda st, closed: st == [400] and closed,
    "multiple Content-Length values: 400 then close": lambda st, closed: st == [400] and closed,
    "400; never 2xx": lambda st, closed: st == [400],
    "400 (a lenient element may process it); never crash":
        lambda st, closed: len(st) >= 1 and st[-1] >= 200,
    "505 Version Not Supported": lambda st, closed: st == [505],
    "400 or 501; never 2xx": lambda st, closed: st in ([400], [501]),
    "processed normally (200 to OPTIONS)": lambda st, closed: st == [200],
    "400 (missing required header fields)": lambda st, closed: st == [400],
    "416 Unsupported URI Scheme": lambda st, closed: st == [416],
    "processed normally": lambda st, closed: bool(st) and st[-1] < 500 and st[-1] != 400,
    "420 Bad Extension with Unsupported header": lambda st, closed: st == [420],
    "415 Unsupported Media Type with Accept header": lambda st, closed: st == [415],
    "401 or processed normally; never crash": lambda st, closed: bool(st) and st[-1] in (200, 401),
    "400 (multiple values in single-value header fields)": lambda st, closed: st == [400],
    "a UAS answers OPTIONS normally (Max-Forwards 0 matters to proxies)":
        lambda st, closed: st == [200],
    "REGISTER processed by the registrar (200)": lambda st, closed: st == [200],
    "406 Not Acceptable (Accept offers nothing the UAS can produce) or 200":
        lambda st, closed: st[-1:] in ([406], [200]),
    "processed (RFC 2543 syntax) or 400; never crash": lambda st, closed: bool(st) and st[-1] >= 200,
}
# Headers a response must carry for some rows.
NEEDS_HEADER = {"bext01.dat": "unsupported", "invut.dat": "accept", "intmeth.dat": None}


def rows() -> list[dict]:
    with open(DATA / "expected.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def exchange(port: int, raw: bytes) -> tuple[list, bool]:
    """Send ``raw`` on a new connection; the responses and whether the server closed.

    Waits up to 3 s for a first final response, then 0.2 s for anything more.
    """
    responses, closed = [], False
    with Conn(port) as conn:
        conn.send(raw)
        while True:
            final_seen = any(r.status >= 200 for r in responses)
            try:
                resp = conn.read(timeout=0.2 if final_seen else 3.0)
            except TimeoutError:
                break
            if resp is None:
                closed = True
                break
            responses.append(resp)
        if not closed:
            closed = conn.is_closed(0.2)
    return responses, closed


@pytest.fixture(scope="module")
def server():
    with running_server("lmdb", workers=2, extra=["--idle-timeout", str(IDLE)]) as srv:
        srv["workers_at_start"] = wait_workers(srv["pid"], 2)
        yield srv


def test_every_expectation_is_understood():
    unknown = {r["expected_over_tcp"] for r in rows()} - set(EXPECT)
    assert not unknown, f"expected.tsv rows this test does not know how to check: {unknown}"
    assert len(rows()) == 49


@pytest.mark.parametrize("row", rows(), ids=lambda r: r["file"])
def test_torture_message(server, row):
    port = server["port"]
    raw = (DATA / row["file"]).read_bytes()
    check = EXPECT[row["expected_over_tcp"]]
    if check == "stray":
        with Conn(port) as conn:
            conn.send(raw)
            conn.send(request("OPTIONS", Dialog(), port))
            first = conn.read(timeout=5)
            assert first is not None and first.status == 200 and first.header("cseq").endswith("OPTIONS")
    elif check == "idle":
        with Conn(port) as conn:
            conn.send(raw)
            assert not conn.is_closed(IDLE / 4), "closed too early"
            assert conn.is_closed(IDLE * 4), "idle connection not closed"
    else:
        responses, closed = exchange(port, raw)
        statuses = [r.status for r in responses if r.status >= 200]
        assert check(statuses, closed), f"{row['file']}: got {statuses}, closed={closed}"
        assert all(r.header("server", ) for r in responses)
        header = NEEDS_HEADER.get(row["file"])
        if header:
            assert responses[-1].header(header), f"{row['file']}: missing {header}"
        if statuses and statuses[-1] in (501, 405):
            assert responses[-1].header("allow")
    assert options_ok(port)
    assert worker_pids(server["pid"]) == server["workers_at_start"], "a worker died"
