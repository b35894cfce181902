"""Micro-benchmark of the SIP layer: ``python -m harness.sip.bench [--number N]``.

Prints the best-of-5 time per call, in µs, of parsing a typical SIPp-like INVITE
(about 600 bytes with its SDP), framing it, validating it and building the
responses a UAS sends for it. The server's budget is about 200 µs of CPU per
call (INVITE + ACK + BYE and five responses), so each of these should stay at
a few tens of µs at most.
"""
from __future__ import annotations

import argparse
import timeit
from typing import Callable

from harness.sip import Framer, build_request, build_response, parse, validate_request

SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
       b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
SERVER = [("Server", "sipstate (worker 1)")]


def typical_invite() -> bytes:
    """An INVITE shaped like SIPp's uac scenario's, with a few more common headers."""
    return build_request(
        "INVITE", "sip:service@127.0.0.1:5060", call_id="1-31211@127.0.0.1", cseq=1,
        from_="sipp <sip:sipp@127.0.0.1:5061>;tag=31211SIPpTag001",
        to="service <sip:service@127.0.0.1:5060>", via_branch="-31211-1-0",
        via_host="127.0.0.1:5061",
        headers=[("Contact", "sip:sipp@127.0.0.1:5061"), ("Subject", "Performance Test"),
                 ("User-Agent", "SIPp/3.7"), ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"),
                 ("Supported", "timer")],
        body=SDP, content_type="application/sdp")


def cases() -> dict[str, Callable[[], object]]:
    raw = typical_invite()
    msg = parse(raw)
    ok_headers = SERVER + [("Contact", "<sip:uas@127.0.0.1:5060>")]
    return {
        "parse INVITE": lambda: parse(raw),
        "Framer().feed INVITE": lambda: Framer().feed(raw),
        "validate_request": lambda: validate_request(msg),
        "build_response 100": lambda: build_response(msg, 100, headers=SERVER),
        "build_response 200+tag": lambda: build_response(msg, 200, to_tag="a8c3f1",
                                                         headers=ok_headers),
        "accessors (5)": lambda: (msg.call_id, msg.cseq, msg.from_tag, msg.to_tag,
                                  msg.via_branch),
    }


def measure(number: int) -> dict[str, float]:
    """µs per call of each case, best of 5 repeats of ``number`` calls."""
    return {name: min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6
            for name, fn in cases().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per repeat")
    args = parser.parse_args()
    print(f"typical INVITE: {len(typical_invite())} bytes")
    for name, micros in measure(args.number).items():
        print(f"{name:24} {micros:7.2f} µs")


if __name__ == "__main__":
    main()
