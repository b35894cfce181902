"""Request checks a UAS makes after parsing (RFC 3261 §8.2), and error salvage.

``validate_request`` holds the semantic rejections of the RFC 4475 torture
tests that are not grammar errors (missing or repeated headers, CSeq method
mismatch, unknown URI scheme, Require, media type); ``answerable`` tells a
server whether a ParseError / FramingError can still be answered.
"""
from __future__ import annotations

from typing import Collection, Optional

from harness.sip.errors import FramingError, ParseError, SipError
from harness.sip.message import Message, parse

Rejection = tuple[int, str, list[tuple[str, str]]]

MANDATORY = ("via", "from", "to", "call-id", "cseq")  # RFC 3261 §8.1.1; Max-Forwards is
# left out on purpose: a UAS is not a proxy, and RFC 2543 peers omit it.
SINGLE = ("from", "to", "call-id", "cseq", "max-forwards", "content-type", "expires")
_DISPLAY = {"call-id": "Call-ID", "cseq": "CSeq"}


def header_label(name: str) -> str:
    """'call-id' -> 'Call-ID', 'max-forwards' -> 'Max-Forwards' (for reasons and output)."""
    return _DISPLAY.get(name) or "-".join(part.capitalize() for part in name.split("-"))


def validate_request(msg: Message, *, methods: Optional[Collection[str]] = None,
                     schemes: Collection[str] = ("sip", "sips", "tel"),
                     supported: Collection[str] = (),
                     accept: Collection[str] = ("application/sdp",)) -> Optional[Rejection]:
    """None if a UAS may process the request, else (status, reason, extra headers).

    In RFC 3261 §8.2 order: 400 (a mandatory header missing, a single-value
    header repeated, CSeq method differs from the method), 501 for a method
    outside ``methods`` (checked only when given; Allow lists them), 416 for a
    Request-URI scheme outside ``schemes``, 420 with Unsupported for Require
    options outside ``supported`` (not for ACK/CANCEL), 415 with Accept for a
    body whose Content-Type is outside ``accept``. Responses give None.
    """
    if not msg.is_request:
        return None
    return (_check_headers(msg) or _check_method(msg, methods) or _check_scheme(msg, schemes)
            or _check_require(msg, supported) or _check_body(msg, accept))


def _check_headers(msg: Message) -> Optional[Rejection]:
    index = msg.index
    for name in MANDATORY:
        if not index.get(name):
            return 400, f"Missing {header_label(name)}", []
    for name in SINGLE:
        values = index.get(name)
        if values is not None and len(values) > 1:
            return 400, f"Multiple {header_label(name)} values", []
    cseq = msg.cseq
    if cseq is None:
        return 400, "Bad CSeq", []
    if cseq[1] != msg.method:
        return 400, "CSeq method does not match the request method", []
    return None


def _check_method(msg: Message, methods: Optional[Collection[str]]) -> Optional[Rejection]:
    if methods is None or msg.method in methods:
        return None
    return 501, "Not Implemented", [("Allow", ", ".join(methods))]


def _check_scheme(msg: Message, schemes: Collection[str]) -> Optional[Rejection]:
    scheme = (msg.uri or "").partition(":")[0].lower()
    if scheme in schemes:
        return None
    return 416, "Unsupported URI Scheme", []


def _check_require(msg: Message, supported: Collection[str]) -> Optional[Rejection]:
    if msg.method in ("ACK", "CANCEL"):  # RFC 3261 §8.2.2.3: never rejected for Require
        return None
    unknown = [opt for opt in msg.header_all("require") if opt and opt not in supported]
    if not unknown:
        return None
    return 420, "Bad Extension", [("Unsupported", ", ".join(unknown))]


def _check_body(msg: Message, accept: Collection[str]) -> Optional[Rejection]:
    if not msg.body:
        return None
    ctype = msg.header("content-type")
    if ctype is None:
        return 400, "Missing Content-Type", []
    if ctype.partition(";")[0].strip(" \t").lower() in accept:
        return None
    return 415, "Unsupported Media Type", [("Accept", ", ".join(accept))]


def answerable(exc: SipError) -> Optional[Message]:
    """The request to build an error response from (with ``exc.status``), or None.

    None means: send nothing (it is a response, an ACK, or not a SIP request with
    a Via at all). For a FramingError the connection must be closed afterwards
    in either case.
    """
    msg: Optional[Message] = None
    if isinstance(exc, ParseError):
        msg = exc.message
    elif isinstance(exc, FramingError) and exc.head:
        try:
            msg = parse(exc.head)
        except ParseError as inner:
            msg = inner.message
    if msg is None or not msg.is_request or msg.method == "ACK" or not msg.header_all("via"):
        return None
    return msg


def header_int(msg: Message, name: str, default: Optional[int] = None,
               maximum: int = 2**32 - 1) -> Optional[int]:
    """A header's first value as an int in 0..maximum, else ``default`` (absent,
    malformed or out of range, as RFC 4475 §3.1.2.4 allows for Expires)."""
    value = (msg.header(name) or "").strip(" \t")
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        return default
    number = int(value)
    return number if number <= maximum else default
