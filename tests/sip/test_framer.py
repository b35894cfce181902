"""The framer on TCP-like streams: random chunking, keep-alives, limits, bad Content-Length."""
from __future__ import annotations

import random

import pytest

from harness.sip import FramingError, Framer, Limits, answerable, build_request, parse
from tests.support import TESTDATA

KEEPALIVES = (b"", b"", b"\r\n", b"\r\n\r\n")


def sample_messages() -> list[bytes]:
    """Valid messages of varied shape: torture messages that frame cleanly plus built ones."""
    names = ("wsinv", "longreq", "esc01", "lwsdisp", "transports", "mpart01", "unreason",
             "noreason", "semiuri", "escnull", "intmeth")
    msgs = [(TESTDATA / "rfc4475" / f"{n}.dat").read_bytes() for n in names]
    for i in range(5):
        msgs.append(build_request("INVITE", f"sip:u{i}@127.0.0.1", call_id=f"c{i}@h", cseq=i + 1,
                                  from_=f"<sip:a@h>;tag=f{i}", to=f"<sip:u{i}@h>",
                                  via_branch=f"b{i}", via_host="127.0.0.1:5061",
                                  body=b"x" * (i * 37), content_type="application/sdp"))
    return msgs


def chunked(data: bytes, rng: random.Random) -> list[bytes]:
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.choice((1, 2, 3, 7, 64, 500, 1500, 4096))
        chunks.append(data[pos:pos + size])
        pos += size
    return chunks


@pytest.mark.parametrize("seed", range(60))
def test_random_chunks_give_back_the_same_messages(seed: int):
    rng = random.Random(seed)
    pool = sample_messages()
    msgs = [rng.choice(pool) for _ in range(rng.randint(1, 12))]
    stream = b"".join(rng.choice(KEEPALIVES) + m for m in msgs) + rng.choice(KEEPALIVES)
    framer, out = Framer(), []
    for chunk in chunked(stream, rng):
        out += framer.feed(chunk)
    assert out == msgs
    assert framer.pending == 0


def test_keepalive_ping_alone_yields_nothing():
    framer = Framer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n") == []
    assert framer.pending == 0


def test_body_that_never_arrives_stays_pending():
    msg = sample_messages()[-1]
    framer = Framer()
    assert framer.feed(msg[:-10]) == []
    assert framer.pending == len(msg) - 10
    assert framer.feed(msg[-10:]) == [msg]


def test_ten_megabyte_header_line_fails_early_with_bounded_memory():
    framer = Framer()
    framer.feed(b"OPTIONS sip:x@h SIP/2.0\r\nX-Huge: ")
    chunk = b"a" * 65536
    fed = 0
    with pytest.raises(FramingError) as info:
        while fed < 10 * 2**20:
            framer.feed(chunk)
            fed += len(chunk)
            assert framer.pending <= Limits().max_line + len(chunk)
    assert fed == 0  # the first 64 KiB read already crosses the 8 KiB line limit
    assert info.value.status == 400 and info.value.head is None
    assert framer.pending == 0


def test_line_limit_is_checked_byte_by_byte_too():
    framer = Framer(Limits(max_line=100))
    framer.feed(b"OPTIONS sip:x@h SIP/2.0\r\nX: ")
    with pytest.raises(FramingError):
        for _ in range(200):
            framer.feed(b"a")
    assert framer.pending == 0


def test_long_line_inside_a_complete_head_is_refused():
    head = b"OPTIONS sip:x@h SIP/2.0\r\nX: " + b"a" * 200 + b"\r\nl: 0\r\n\r\n"
    with pytest.raises(FramingError):
        Framer(Limits(max_line=100)).feed(head)
    assert Framer(Limits(max_line=300)).feed(head) == [head]


def test_header_count_limit():
    def head(n: int) -> bytes:
        return b"OPTIONS sip:x@h SIP/2.0\r\n" + b"X: 1\r\n" * (n - 1) + b"l: 0\r\n\r\n"
    assert Framer(Limits(max_headers=10)).feed(head(10)) == [head(10)]
    with pytest.raises(FramingError):
        Framer(Limits(max_headers=10)).feed(head(11))


def test_endless_short_lines_hit_the_size_limit():
    framer = Framer(Limits(max_size=4096))
    framer.feed(b"OPTIONS sip:x@h SIP/2.0\r\n")
    with pytest.raises(FramingError):
        for _ in range(1000):
            framer.feed(b"X: 1\r\n")
    assert framer.pending == 0


@pytest.mark.parametrize("value,status", [
    (b"-1", 400), (b"abc", 400), (b"1e3", 400), (b"9223372036854775808", 400),
    (b"99999999999999999999999999", 400), (b"70000", 413), (b"", 400),
])
def test_bad_content_length(value: bytes, status: int):
    head = (b"OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
            b"To: <sip:x@h>\r\nCall-ID: c@h\r\nCSeq: 1 OPTIONS\r\nContent-Length: " + value + b"\r\n\r\n")
    with pytest.raises(FramingError) as info:
        Framer().feed(head)
    assert info.value.status == status
    assert info.value.head == head
    assert answerable(info.value) is not None  # the server can still answer 400/413


def test_differing_content_lengths_and_folded_one():
    base = b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: c@h\r\n"
    with pytest.raises(FramingError):
        Framer().feed(base + b"Content-Length: 1\r\nl: 2\r\n\r\nab")
    same = base + b"Content-Length: 2\r\nl: 2\r\n\r\nab"
    assert Framer().feed(same) == [same]
    folded = base + b"Content-Length:\r\n 2\r\n\r\nab"
    assert Framer().feed(folded) == [folded]


def test_messages_before_an_error_are_handed_over():
    good = sample_messages()[-1]
    with pytest.raises(FramingError) as info:
        Framer().feed(good + b"\r\nGARBAGE\r\n\r\n")
    assert info.value.messages == [good]
    assert answerable(info.value) is None  # garbage is not answered


def test_framed_messages_parse():
    framer = Framer()
    out = framer.feed(b"".join(sample_messages()))
    assert [parse(m).version for m in out] == ["SIP/2.0"] * len(out)
