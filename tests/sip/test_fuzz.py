"""Hostile input: parse raises only ParseError, the framer only FramingError, and
whatever parses can be answered and re-parsed (deterministic seeds)."""
from __future__ import annotations

import random

from harness.sip import (FramingError, Framer, Limits, ParseError, answerable, build_response,
                         parse, validate_request)
from tests.support import TESTDATA

SEEDS = (TESTDATA / "rfc4475").glob("*.dat")
CORPUS = [p.read_bytes() for p in sorted(SEEDS)]
SPECIALS = [b"\r\n", b"\r", b"\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\",
            b"\x00", b"\xff", b"\xc3", b"SIP/2.0", b"=", b"@", b"%", b"9" * 30, b"-1",
            b"\r\n ", b"Content-Length: ", b"l: 99999\r\n", b"v: ", b"\r\n\r\n"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(len(buf) + 1)
        op = rng.randrange(6)
        if op == 0 and buf:
            del buf[pos:pos + rng.randint(1, 40)]
        elif op == 1:
            buf[pos:pos] = rng.choice(SPECIALS)
        elif op == 2 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 3:
            line_end = buf.find(b"\r\n", pos)
            start = buf.rfind(b"\r\n", 0, pos) + 2
            if line_end > start:  # duplicate a header line
                buf[line_end:line_end] = buf[start - 2:line_end]
        elif op == 4:
            buf = buf[:pos]
        else:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
    return bytes(buf)


def random_input(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    if kind == 1:  # random printable lines ending with an empty line
        lines = [bytes(rng.choice(b"abcSIP/2.0 :;,<>\"\\@\t=-") for _ in range(rng.randint(0, 40)))
                 for _ in range(rng.randint(1, 8))]
        return b"\r\n".join(lines) + b"\r\n\r\n"
    return mutate(rng.choice(CORPUS), rng)


def exercise(raw: bytes) -> None:
    """Everything a server would do with these bytes; only the SIP errors may escape."""
    try:
        msg = parse(raw, Limits(max_line=512, max_headers=20, max_size=4096))
    except ParseError as exc:
        assert exc.status in (400, 413, 505)
        req = answerable(exc)
        if req is not None:  # the answer copies broken headers, but must frame cleanly
            out = build_response(req, exc.status or 400)
            assert Framer().feed(out) == [out]
        return
    validate_request(msg)
    _ = (msg.call_id, msg.cseq, msg.from_tag, msg.to_tag, msg.via_branch, msg.is_request)
    if msg.is_request:
        again = parse(build_response(msg, 200, to_tag="t1"))
        assert again.header_all("via") == msg.header_all("via")
        assert again.call_id == msg.call_id


def frame(raw: bytes, rng: random.Random) -> None:
    framer = Framer(Limits(max_line=512, max_headers=20, max_size=4096))
    try:
        for pos in range(0, len(raw), rng.randint(1, 200)):
            for msg in framer.feed(raw[pos:pos + 200]):
                exercise(msg)
    except FramingError as exc:
        answerable(exc)


def test_fuzz_parser_and_framer_raise_only_their_errors():
    rng = random.Random(4475)
    for _ in range(2000):
        raw = random_input(rng)
        exercise(raw)
        frame(raw, rng)


def test_non_utf8_headers_are_copied_byte_exact():
    raw = (b"OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK\xe9\xff\r\n"
           b"From: \"\xc3\xa9t\xe9\" <sip:a@h>;tag=\x80\r\nTo: <sip:x@h>\r\nCall-ID: c@h\r\n"
           b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    msg = parse(raw)
    out = build_response(msg, 200, to_tag="t")
    assert b"Via: SIP/2.0/TCP h;branch=z9hG4bK\xe9\xff\r\n" in out
    assert b"From: \"\xc3\xa9t\xe9\" <sip:a@h>;tag=\x80\r\n" in out


def test_hostile_header_values_parse_in_linear_time():
    """Patterns that make naive regexes backtrack; a generous bound for a noisy machine."""
    import time
    base = (b"OPTIONS sip:x@h SIP/2.0\r\nTo: <sip:x@h>\r\nCall-ID: c@h\r\nCSeq: 1 OPTIONS\r\n"
            b"Content-Length: 0\r\n")
    values = [b"a " * 4000 + b"x", b"<sip:a@b>" + b" ;a" * 2600 + b";", b'"' + b"a\\" * 4000,
              b" \t" * 4000 + b"x", b"SIP / 2.0 / UDP h" + b" ;b = c" * 1100 + b";",
              b"<sip:a@b>," * 800, b"sip:" + b"a" * 8000 + b"?"]
    for value in values:
        for name in (b"From: ", b"Via: ", b"Contact: "):
            start = time.perf_counter()
            try:
                parse(base + name + value[:8150] + b"\r\n\r\n")
            except ParseError:
                pass
            assert time.perf_counter() - start < 0.25, (name, value[:20])
