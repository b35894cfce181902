"""Prebuilt SIP request templates and a minimal response reader for the generator.

The generator's CPU per call is part of what it measures against, so requests are
byte templates where only the varying parts are formatted, and responses are
read for exactly what the generator checks: the status code, Call-ID, CSeq, the
To header (its tag on 2xx) and the worker named in the ``Server`` header. This
is deliberately not the full parser of ``harness.sip``: the server under test is
the component whose parsing is measured.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

SDP = (b"v=0\r\no=loadgen 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
       b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

_INVITE = (b"INVITE %s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK%si\r\n"
           b"Max-Forwards: 70\r\nFrom: <sip:loadgen@%s>;tag=%s\r\nTo: <%s>\r\n"
           b"Call-ID: %s\r\nCSeq: 1 INVITE\r\nContact: <sip:loadgen@%s;transport=tcp>\r\n"
           b"Content-Type: application/sdp\r\nContent-Length: " + str(len(SDP)).encode()
           + b"\r\n\r\n" + SDP)
# ACK of a 2xx is its own transaction (new branch, 'a'); ACK of a non-2xx reuses the
# INVITE's branch ('i'): RFC 3261 §17.1.1.3 and §13.2.2.4.
_ACK = (b"ACK %s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK%s%s\r\nMax-Forwards: 70\r\n"
        b"From: <sip:loadgen@%s>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 ACK\r\n"
        b"Content-Length: 0\r\n\r\n")
_BYE = (b"BYE %s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK%sb\r\nMax-Forwards: 70\r\n"
        b"From: <sip:loadgen@%s>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 2 BYE\r\n"
        b"Content-Length: 0\r\n\r\n")
_REGISTER = (b"REGISTER sip:%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK%sr\r\n"
             b"Max-Forwards: 70\r\nFrom: <%s>;tag=%s\r\nTo: <%s>\r\nCall-ID: %s\r\n"
             b"CSeq: 1 REGISTER\r\nContact: <sip:%s@%s;transport=tcp>\r\nExpires: 3600\r\n"
             b"Content-Length: 0\r\n\r\n")
_OPTIONS = (b"OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK%so\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:loadgen@%s>;tag=%s\r\nTo: <sip:%s>\r\n"
            b"Call-ID: %s\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\n"
            b"Content-Length: 0\r\n\r\n")


def invite(uri: bytes, via: bytes, tok: bytes) -> bytes:
    """INVITE with SDP; ``tok`` is the call's unique token (Call-ID, From tag, branches)."""
    return _INVITE % (uri, via, tok, via, tok, uri, tok, via)


def ack(uri: bytes, via: bytes, tok: bytes, to: bytes, success: bool = True) -> bytes:
    """ACK with the To header of the final response (``success``: ACK of a 2xx)."""
    return _ACK % (uri, via, tok, b"a" if success else b"i", via, tok, to, tok)


def bye(uri: bytes, via: bytes, tok: bytes, to: bytes) -> bytes:
    return _BYE % (uri, via, tok, via, tok, to, tok)


def register(domain: bytes, via: bytes, tok: bytes, user: bytes) -> bytes:
    """REGISTER binding AOR sip:user@domain to a contact at the generator."""
    aor = b"sip:%s@%s" % (user, domain)
    return _REGISTER % (domain, via, tok, aor, tok, aor, tok, user, via)


def options(domain: bytes, via: bytes, tok: bytes) -> bytes:
    return _OPTIONS % (domain, via, tok, via, tok, domain, tok)


class Response(NamedTuple):
    status: int
    call_id: Optional[bytes]
    cseq: int
    method: bytes
    to: Optional[bytes]          # the whole To header value (used verbatim in ACK/BYE)
    worker: Optional[int]        # K of "Server: sipstate (worker K)", None if absent


class BadStream(ValueError):
    """The byte stream is not SIP responses; the connection must be dropped."""


# Header names the generator reads (long and compact forms), lower case.
_WANTED = {b"call-id": 0, b"i": 0, b"cseq": 1, b"to": 2, b"t": 2, b"server": 3,
           b"content-length": 4, b"l": 4}
MAX_HEAD = 65536


def read_responses(buf: bytearray) -> list[Response]:
    """Remove every complete response from ``buf`` and return them in order.

    Leading CRLFs (keep-alives) are skipped. Raises BadStream when a message is
    not a response, has no valid Content-Length, or a header block grows beyond
    64 KiB.
    """
    out: list[Response] = []
    start, size = 0, len(buf)
    while start < size:
        if buf[start] in (13, 10):
            start += 1
            continue
        end = buf.find(b"\r\n\r\n", start)
        if end < 0:
            if size - start > MAX_HEAD:
                raise BadStream("header block too long")
            break
        resp, body_len = _read_head(bytes(buf[start:end]))
        if end + 4 + body_len > size:
            break
        out.append(resp)
        start = end + 4 + body_len
    if start:
        del buf[:start]
    return out


# The canonical spelling most servers (ours included) write: found with five
# searches instead of a split of every line. Anything else takes the general path.
_FAST = (b"\r\nCall-ID: ", b"\r\nCSeq: ", b"\r\nTo: ", b"\r\nServer: ",
         b"\r\nContent-Length: ")
_SERVER_SLOT = 3


def _fast_values(head: bytes) -> Optional[list]:
    vals: list = []
    for slot, name in enumerate(_FAST):
        at = head.find(name)
        if at < 0:
            if slot == _SERVER_SLOT:
                vals.append(None)
                continue
            return None
        at += len(name)
        end = head.find(b"\r\n", at)
        vals.append(head[at:end if end >= 0 else len(head)].strip())
    return vals


def _read_head(head: bytes) -> tuple[Response, int]:
    if not head.startswith(b"SIP/2.0 ") or not head[8:11].isdigit():
        raise BadStream(f"not a SIP response: {head[:60]!r}")
    vals = _fast_values(head) or _slow_values(head)
    cseq_num, method = _split_cseq(vals[1])
    clen = vals[4]
    if clen is None or not clen.isdigit() or len(clen) > 6:
        raise BadStream(f"missing or bad Content-Length: {clen!r}")
    return Response(int(head[8:11]), vals[0], cseq_num, method, vals[2],
                    _worker_of(vals[3])), int(clen)


def _slow_values(head: bytes) -> list:
    """Every header line, any case, compact forms, whitespace before the colon."""
    lines = head.split(b"\r\n")
    vals: list = [None, None, None, None, None]
    for line in lines[1:]:
        colon = line.find(b":")
        if colon > 0:
            slot = _WANTED.get(line[:colon].rstrip().lower())
            if slot is not None and vals[slot] is None:
                vals[slot] = line[colon + 1:].strip()
    return vals


def _split_cseq(value: Optional[bytes]) -> tuple[int, bytes]:
    if value is None:
        return -1, b""
    num, _, method = value.partition(b" ")
    return (int(num) if num.isdigit() else -1), method.strip()


@functools.lru_cache(maxsize=256)
def _worker_of(server: Optional[bytes]) -> Optional[int]:
    if server is None:
        return None
    at = server.find(b"worker ")
    if at < 0:
        return None
    digits = server[at + 7:].split(b")", 1)[0].strip()
    return int(digits) if digits.isdigit() else None


def has_tag(to: Optional[bytes]) -> bool:
    """True when a To header value carries a tag parameter."""
    return to is not None and b";tag=" in to.replace(b" ", b"").lower()
