"""Response and request builders: what is copied, tags, lengths, injection refusal."""
from __future__ import annotations

import pytest

from harness.sip import Framer, build_request, build_response, parse, reason_phrase
from tests.support import TESTDATA

INVITE = build_request("INVITE", "sip:uas@127.0.0.1:5060", call_id="abc@h", cseq=3,
                       from_="\"A, B\" <sip:a@h>;tag=from1", to="<sip:uas@h>",
                       via_branch="xyz", via_host="127.0.0.1:5061",
                       headers=[("Contact", "<sip:a@127.0.0.1:5061>")],
                       body=b"v=0\r\n", content_type="application/sdp")


def test_build_request_parses_back():
    msg = parse(INVITE)
    assert (msg.method, msg.uri, msg.version) == ("INVITE", "sip:uas@127.0.0.1:5060", "SIP/2.0")
    assert msg.via_branch == "z9hG4bKxyz"
    assert msg.header("via") == "SIP/2.0/TCP 127.0.0.1:5061;branch=z9hG4bKxyz"
    assert msg.cseq == (3, "INVITE") and msg.call_id == "abc@h" and msg.from_tag == "from1"
    assert msg.header("max-forwards") == "70"
    assert msg.header("content-type") == "application/sdp" and msg.body == b"v=0\r\n"
    assert msg.header("content-length") == "5"
    assert Framer().feed(INVITE) == [INVITE]


def test_build_request_keeps_given_cookie_and_max_forwards():
    raw = build_request("OPTIONS", "sip:x@h", call_id="c", cseq=1, from_="<sip:a@h>;tag=1",
                        to="<sip:x@h>", via_branch="z9hG4bKabc", via_host="h",
                        headers=[("Max-Forwards", "5")])
    msg = parse(raw)
    assert msg.via_branch == "z9hG4bKabc"
    assert msg.header_all("max-forwards") == ["5"]


def test_response_copies_vias_from_to_callid_cseq_and_adds_tag():
    req = parse((TESTDATA / "rfc4475" / "wsinv.dat").read_bytes())
    out = build_response(req, 200, to_tag="ignored", headers=[("Server", "sipstate (worker 1)")])
    resp = parse(out)
    assert (resp.status, resp.reason, resp.version) == (200, "OK", "SIP/2.0")
    assert resp.header_all("via") == req.header_all("via") and len(resp.header_all("via")) == 3
    assert resp.header("from") == req.header("from")
    assert resp.to_tag == "1918181833n"  # To already had a tag: kept, not doubled
    assert resp.call_id == req.call_id and resp.header("cseq") == req.header("cseq")
    assert resp.header("server") == "sipstate (worker 1)"
    assert resp.header("content-length") == "0" and resp.body == b""
    assert [n for n, _ in resp.headers][:1] == ["via"]


def test_response_adds_to_tag_and_body():
    req = parse(INVITE)
    out = build_response(req, 200, to_tag="srv9", body=b"v=0\r\n", content_type="application/sdp",
                         headers=[("Contact", "<sip:uas@127.0.0.1:5060>")])
    resp = parse(out)
    assert resp.to_tag == "srv9" and resp.header("to") == "<sip:uas@h>;tag=srv9"
    assert resp.from_tag == "from1" and resp.header("from") == req.header("from")
    assert resp.body == b"v=0\r\n" and resp.header("content-type") == "application/sdp"
    trying = parse(build_response(req, 100))
    assert trying.reason == "Trying" and trying.to_tag is None


def test_reason_phrases():
    assert reason_phrase(481) == "Call/Transaction Does Not Exist"
    assert reason_phrase(505) == "Version Not Supported"
    assert reason_phrase(499) == "Client Error"
    assert parse(build_response(parse(INVITE), 486, "Busy, really")).reason == "Busy, really"


@pytest.mark.parametrize("kwargs", [
    {"headers": [("X", "a\r\nInjected: 1")]}, {"headers": [("X\n", "a")]},
    {"content_type": "a/b\r\nX: 1"}, {"status": 99}, {"status": 700},
])
def test_response_refuses_bad_arguments(kwargs):
    status = kwargs.pop("status", 200)
    with pytest.raises(ValueError):
        build_response(parse(INVITE), status, **kwargs)


def test_request_refuses_line_breaks():
    with pytest.raises(ValueError):
        build_request("OPTIONS", "sip:x@h", call_id="c\r\nX: 1", cseq=1, from_="<sip:a@h>",
                      to="<sip:x@h>", via_branch="b", via_host="h")


def test_bench_runs_with_sane_figures():
    """Only a sanity bound (the machine is shared and noisy): the SIP layer must be
    nowhere near the 200 µs per call the server may spend in total."""
    from harness.sip.bench import measure, typical_invite
    assert 500 <= len(typical_invite()) <= 700
    figures = measure(number=200)
    assert set(figures) >= {"parse INVITE", "build_response 200+tag"}
    assert all(0 < micros < 2000 for micros in figures.values()), figures
