"""Building SIP responses and requests as bytes ready for a TCP socket.

Values are encoded as UTF-8 with surrogateescape, the inverse of how ``parse``
decodes, so headers copied from a request go back byte for byte. Extra header
values containing CR or LF are refused (ValueError): they would inject headers.
"""
from __future__ import annotations

from typing import Optional, Sequence

from harness.sip import grammar
from harness.sip.message import Message

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
_GENERIC = {1: "Provisional", 2: "Success", 3: "Redirection", 4: "Client Error",
            5: "Server Error", 6: "Global Failure"}


def reason_phrase(status: int) -> str:
    """The RFC 3261 §21 phrase of a status code, or its class's generic name."""
    return REASONS.get(status) or _GENERIC.get(status // 100, "Unknown")


def _encode(lines: list[str], body: bytes) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def _add_extra(lines: list[str], headers: Sequence[tuple[str, str]], body: bytes,
               content_type: Optional[str]) -> None:
    for name, value in headers:
        text = f"{name}: {value}"
        if "\r" in text or "\n" in text:
            raise ValueError(f"header {name!r}: CR and LF are not allowed in names or values")
        lines.append(text)
    if content_type is not None:
        if "\r" in content_type or "\n" in content_type:
            raise ValueError("content_type: CR and LF are not allowed")
        lines.append("Content-Type: " + content_type)
    lines.append(f"Content-Length: {len(body)}")


def build_response(req: Message, status: int, reason: Optional[str] = None, *,
                   to_tag: Optional[str] = None, headers: Sequence[tuple[str, str]] = (),
                   body: bytes = b"", content_type: Optional[str] = None) -> bytes:
    """A response to ``req`` (RFC 3261 §8.2.6.2): copies every Via entry in order,
    From, To (adding ``;tag=to_tag`` when To has no tag yet), Call-ID and CSeq,
    then ``headers``, Content-Type when given and Content-Length."""
    if not isinstance(status, int) or not 100 <= status <= 699:
        raise ValueError(f"status {status!r} is not allowed; 100..699 is")
    before_to, to, after_to, to_has_tag = _copied(req)
    lines = [f"SIP/2.0 {status} {reason if reason is not None else reason_phrase(status)}"]
    if before_to:
        lines.append(before_to)
    if to is not None:
        lines.append(f"To: {to};tag={to_tag}" if to_tag and not to_has_tag else "To: " + to)
    if after_to:
        lines.append(after_to)
    _add_extra(lines, headers, body, content_type)
    return _encode(lines, body)


def _copied(req: Message) -> tuple[str, Optional[str], str, bool]:
    """The header lines every response to ``req`` copies, computed once per request
    (an INVITE gets three responses): Via and From lines, the To value, the Call-ID
    and CSeq lines, and whether To already has a tag."""
    cached = req._copied
    if cached is None:
        before = ["Via: " + via for via in req.header_all("via")]
        value = req.header("from")
        if value is not None:
            before.append("From: " + value)
        after = []
        value = req.header("call-id")
        if value is not None:
            after.append("Call-ID: " + value)
        value = req.header("cseq")
        if value is not None:
            after.append("CSeq: " + value)
        to = req.header("to")
        cached = req._copied = ("\r\n".join(before), to, "\r\n".join(after),
                                to is not None and grammar.tag_of(to) is not None)
    return cached


def build_request(method: str, uri: str, *, call_id: str, cseq: int, from_: str, to: str,
                  via_branch: str, via_host: str, headers: Sequence[tuple[str, str]] = (),
                  body: bytes = b"", content_type: Optional[str] = None) -> bytes:
    """A request over TCP: Via ``SIP/2.0/TCP via_host;branch=...`` (the RFC 3261
    magic cookie z9hG4bK is prefixed unless present), Max-Forwards 70 (unless
    ``headers`` has one), From, To, Call-ID, ``CSeq: cseq method``, ``headers``,
    Content-Type when given and Content-Length."""
    if not via_branch.startswith("z9hG4bK"):
        via_branch = "z9hG4bK" + via_branch
    lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/TCP {via_host};branch={via_branch}"]
    if not any(name.lower() == "max-forwards" for name, _ in headers):
        lines.append("Max-Forwards: 70")
    lines += [f"From: {from_}", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} {method}"]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError(f"{line.split(':')[0]!r}: CR and LF are not allowed")
    _add_extra(lines, headers, body, content_type)
    return _encode(lines, body)
