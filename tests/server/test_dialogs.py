"""SIP behaviour end to end: real `harness serve` processes, real TCP, independent client."""
from __future__ import annotations

import pytest

from tests.server.sipclient import SDP, Conn, Dialog, options_ok, request, transact
from tests.support import running_server

FAILING = "tests.server.failing_store:FailingStore"


def run_cross_connection_dialogs(port: int, count: int) -> tuple[list[int], set[int], set[int]]:
    """``count`` dialogs, INVITE, ACK and BYE each on a new TCP connection.

    Returns the BYE statuses, the workers seen in all responses, and the number
    of dialogs whose responses came from more than one worker.
    """
    bye_statuses: list[int] = []
    workers: set[int] = set()
    crossed = set()
    for i in range(count):
        dlg = Dialog()
        seen = set()
        with Conn(port) as conn:
            conn.send(request("INVITE", dlg, port, body=SDP))
            final = conn.read_final()
        assert final is not None and final.status == 200, final
        assert final.to_tag and final.header("contact")
        dlg.to_tag = final.to_tag
        seen.add(final.worker)
        with Conn(port) as conn:
            conn.send(request("ACK", dlg, port))
        with Conn(port) as conn:
            conn.send(request("BYE", dlg, port, cseq=2))
            bye = conn.read_final()
        assert bye is not None
        bye_statuses.append(bye.status)
        seen.add(bye.worker)
        workers |= seen
        if len(seen) > 1:
            crossed.add(i)
    return bye_statuses, workers, crossed


def test_shared_store_keeps_dialogs_across_workers():
    with running_server("lmdb", workers=2) as srv:
        statuses, workers, crossed = run_cross_connection_dialogs(srv["port"], 100)
    assert statuses == [200] * 100
    assert workers == {1, 2}, "both workers must have taken part"
    assert crossed, "some dialogs must have crossed workers"


def test_local_store_loses_dialogs_that_cross_workers():
    with running_server("local", workers=2) as srv:
        statuses, workers, crossed = run_cross_connection_dialogs(srv["port"], 100)
    assert workers == {1, 2}
    # Exactly the dialogs whose BYE reached another worker than the INVITE fail.
    assert statuses.count(481) >= 1
    assert set(statuses) <= {200, 481}


@pytest.fixture(scope="module")
def server():
    with running_server("lmdb", workers=2) as srv:
        yield srv


def test_invite_flow_on_one_connection(server):
    port, dlg = server["port"], Dialog()
    with Conn(port) as conn:
        conn.send(request("INVITE", dlg, port, body=SDP))
        got = [conn.read() for _ in range(3)]
        assert [r.status for r in got] == [100, 180, 200]
        assert all(r.header("server").startswith("sipstate (worker ") for r in got)
        ok = got[2]
        assert ok.to_tag and ok.to_tag == got[1].to_tag and got[0].to_tag is None
        assert ok.header("call-id") == dlg.call_id and ok.header("cseq") == "1 INVITE"
        assert ok.header("content-type") == "application/sdp" and ok.body.startswith(b"v=0")
        # A repeated INVITE gets the same 200, with the same To-tag.
        conn.send(request("INVITE", dlg, port, body=SDP))
        again = conn.read_final()
        assert again.status == 200 and again.to_tag == ok.to_tag
        dlg.to_tag = ok.to_tag
        conn.send(request("ACK", dlg, port))
        conn.send(request("BYE", dlg, port, cseq=2))
        assert conn.read_final().status == 200
        conn.send(request("BYE", dlg, port, cseq=3))
        assert conn.read_final().status == 481


def test_simple_methods_and_errors(server):
    port = server["port"]
    assert options_ok(port)
    cases = [
        (request("CANCEL", Dialog(), port), 481, None),
        (request("SUBSCRIBE", Dialog(), port), 501, "allow"),
        (request("OPTIONS", Dialog(), port).replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505, None),
        (request("OPTIONS", Dialog(), port, extra="Require: 100rel-nope"), 420, "unsupported"),
        (request("OPTIONS", Dialog(), port, uri="mailto:someone@example.com"), 416, None),
        (request("INVITE", Dialog(), port, body="<xml/>", content_type="application/xml"), 415, "accept"),
        (request("OPTIONS", Dialog(), port).replace(b"Call-ID:", b"X-Call-ID:"), 400, None),
    ]
    for data, status, header in cases:
        resp = transact(port, data)
        assert resp is not None and resp.status == status, (data[:40], resp)
        assert resp.header("server").startswith("sipstate (worker ")
        if header:
            assert resp.header(header), f"{status} needs {header}"
    unsupported = transact(port, cases[3][0]).header("unsupported")
    assert "100rel-nope" in unsupported


def test_stray_response_is_ignored_and_connection_stays_usable(server):
    port = server["port"]
    with Conn(port) as conn:
        conn.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\nCall-ID: x\r\n"
                  b"CSeq: 1 INVITE\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nContent-Length: 0\r\n\r\n")
        conn.send(request("OPTIONS", Dialog(), port))
        assert conn.read().status == 200  # the first thing back answers the OPTIONS


def test_registrar_bindings_and_invite_lookup(server):
    port, user = server["port"], "alice-reg"
    reg = Dialog(user=user)

    def register(cseq: int, contact: str, extra: str = ""):
        data = request("REGISTER", reg, port, cseq=cseq, uri="sip:127.0.0.1")
        data = data.replace(b"Contact: <sip:tester@127.0.0.1:5999;transport=tcp>", contact.encode())
        if extra:
            data = data.replace(b"Content-Length", extra.encode() + b"\r\nContent-Length")
        return transact(port, data)

    ok = register(1, "Contact: <sip:alice@10.0.0.1:5060>;expires=120")
    assert ok.status == 200 and "sip:alice@10.0.0.1:5060" in ok.header("contact")
    ok = register(2, "Contact: <sip:alice@10.0.0.2:5060>", "Expires: 300")
    assert {c.split(">")[0] for c in ok.headers["contact"]} == {"<sip:alice@10.0.0.1:5060",
                                                                   "<sip:alice@10.0.0.2:5060"}
    # A query (no Contact) lists the bindings, from either worker.
    query = request("REGISTER", reg, port, cseq=3, uri="sip:127.0.0.1").replace(
        b"Contact: <sip:tester@127.0.0.1:5999;transport=tcp>\r\n", b"")
    assert len(transact(port, query).headers["contact"]) == 2
    # An INVITE to the registered AOR reads its binding.
    inv = transact(port, request("INVITE", Dialog(), port, to_user=user, body=SDP))
    assert inv.status == 200 and inv.header("x-target") in ("sip:alice@10.0.0.1:5060",
                                                            "sip:alice@10.0.0.2:5060")
    assert transact(port, request("INVITE", Dialog(), port, body=SDP)).header("x-target") is None
    # Removing one binding with expires=0, then all with Contact: *.
    ok = register(4, "Contact: <sip:alice@10.0.0.1:5060>;expires=0")
    assert ok.headers["contact"] == [h for h in ok.headers["contact"] if "10.0.0.2" in h]
    assert register(5, "Contact: *", "Expires: 10").status == 400
    ok = register(6, "Contact: *", "Expires: 0")
    assert ok.status == 200 and "contact" not in ok.headers


def test_failing_store_gives_503_and_the_worker_lives_on():
    for mode in ("unavailable", "crash"):
        with running_server(FAILING, workers=1, opts={"mode": mode}) as srv:
            port = srv["port"]
            for _ in range(3):
                resp = transact(port, request("INVITE", Dialog(), port, body=SDP))
                assert resp.status == 503 and resp.header("retry-after")
                assert resp.header("server") == "sipstate (worker 1)"
            bye = transact(port, request("BYE", Dialog(), port))
            assert bye.status == 503
            assert options_ok(port)   # no store needed: the worker is alive
            assert srv["proc"].poll() is None


def test_no_100_no_180_switches_on_the_command_line():
    with running_server("local", workers=1, extra=["--no-100", "--no-180"]) as srv:
        port = srv["port"]
        with Conn(port) as conn:
            conn.send(request("INVITE", Dialog(), port, body=SDP))
            first = conn.read()
            assert first.status == 200 and first.to_tag
