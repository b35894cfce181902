"""The generator's request templates and its minimal response reader."""
from __future__ import annotations

import random

import pytest

from harness.loadgen import messages as M
from harness.sip import build_response, parse

URI, VIA, TOK = b"sip:service@127.0.0.1:5060;transport=tcp", b"127.0.0.1:40000", b"1a.2b.3"


def test_requests_parse_with_the_projects_full_parser():
    inv = parse(M.invite(URI, VIA, TOK))
    assert (inv.method, inv.call_id, inv.cseq, inv.from_tag) == ("INVITE", "1a.2b.3",
                                                                 (1, "INVITE"), "1a.2b.3")
    assert inv.body == M.SDP and inv.via_branch.startswith("z9hG4bK")
    to = b"<sip:service@127.0.0.1:5060>;tag=srv1"
    ack, bye = parse(M.ack(URI, VIA, TOK, to)), parse(M.bye(URI, VIA, TOK, to))
    assert ack.cseq == (1, "ACK") and bye.cseq == (2, "BYE")
    assert ack.to_tag == bye.to_tag == "srv1"
    assert len({inv.via_branch, ack.via_branch, bye.via_branch}) == 3   # three transactions
    # the ACK of a non-2xx answer belongs to the INVITE transaction: same branch
    assert parse(M.ack(URI, VIA, TOK, to, success=False)).via_branch == inv.via_branch
    reg = parse(M.register(b"127.0.0.1:5060", VIA, TOK, b"alice"))
    assert reg.method == "REGISTER" and "alice@127.0.0.1:5060" in reg.header("to")
    assert reg.header("expires") == "3600"
    assert parse(M.options(b"127.0.0.1:5060", VIA, TOK)).method == "OPTIONS"


def _answer(status: int, to_tag: str | None, extra=()) -> bytes:
    req = parse(M.invite(URI, VIA, TOK))
    return build_response(req, status, to_tag=to_tag,
                          headers=[("Server", "sipstate (worker 2)"), *extra])


def test_reader_extracts_what_the_generator_checks():
    [resp] = M.read_responses(bytearray(_answer(200, "xyz")))
    assert (resp.status, resp.call_id, resp.cseq, resp.method, resp.worker) == (
        200, TOK, 1, b"INVITE", 2)
    assert M.has_tag(resp.to)
    [prov] = M.read_responses(bytearray(_answer(100, None)))
    assert prov.status == 100 and not M.has_tag(prov.to)


def test_reader_frames_a_stream_in_random_chunks_with_keepalives_and_bodies():
    body = b"v=0\r\n"
    msgs = [_answer(100, None), _answer(180, "t1"),
            _answer(200, "t1", [("Content-Type", "application/sdp")]).replace(
                b"Content-Length: 0", b"Content-Length: %d" % len(body)) + body]
    stream = b"\r\n\r\n".join(msgs) + b"\r\n"
    rng = random.Random(7)
    for _ in range(50):
        buf, got, i = bytearray(), [], 0
        while i < len(stream):
            n = rng.randint(1, 40)
            buf += stream[i:i + n]
            i += n
            got += M.read_responses(buf)
        assert [r.status for r in got] == [100, 180, 200]
        assert buf in (bytearray(), bytearray(b"\r\n"))


def test_reader_accepts_compact_header_forms():
    raw = (b"SIP/2.0 200 OK\r\nv: SIP/2.0/TCP h;branch=z9hG4bKx\r\ni: cid1\r\n"
           b"CSeq: 2 BYE\r\nt: <sip:a@b>;tag=9\r\nf: <sip:c@d>;tag=1\r\nl: 0\r\n\r\n")
    [resp] = M.read_responses(bytearray(raw))
    assert (resp.call_id, resp.cseq, resp.method, resp.worker) == (b"cid1", 2, b"BYE", None)


@pytest.mark.parametrize("raw", [
    b"INVITE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n",          # a request, not a response
    b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n",                          # no Content-Length
    b"SIP/2.0 200 OK\r\nContent-Length: -5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
])
def test_reader_rejects_what_is_not_a_sip_response(raw):
    with pytest.raises(M.BadStream):
        M.read_responses(bytearray(raw))


def test_reader_bounds_an_endless_header_block():
    with pytest.raises(M.BadStream):
        M.read_responses(bytearray(b"SIP/2.0 200 OK\r\nX: " + b"a" * 70_000))
