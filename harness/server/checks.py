"""Request checks a UAS makes before acting (RFC 3261 §8.2), and a lenient
header scan that lets a 400 reach a sender whose message did not parse.

``check_request(msg, allowed)`` returns None when the request may be processed,
else ``(status, reason, extra_headers)``. It walks the header list once; the
order of the checks follows §8.2: version, mandatory and single-value headers,
CSeq, method (501), Request-URI scheme (416), Require (420).
"""
from __future__ import annotations

from typing import Optional

from harness.sip import Message

MANDATORY = ("via", "from", "to", "call-id", "cseq")
SINGLE = ("from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type")
SCHEMES = frozenset(("sip", "sips", "tel"))
MAX_CSEQ = 2 ** 31
# Header names kept by lenient_message: enough for build_response to route a 400.
ROUTING = {"via": "via", "v": "via", "from": "from", "f": "from", "to": "to", "t": "to",
           "call-id": "call-id", "i": "call-id", "cseq": "cseq"}

Problem = tuple[int, str, tuple[tuple[str, str], ...]]


def check_request(msg: Message, allowed: frozenset[str]) -> Optional[Problem]:
    """None if ``msg`` (a parsed request) may be processed; else the response to send."""
    if msg.version != "SIP/2.0":
        return 505, "Version Not Supported", ()
    counts: dict[str, int] = {}
    for name, _ in msg.headers:
        counts[name] = counts.get(name, 0) + 1
    for name in MANDATORY:
        if name not in counts:
            return 400, f"Bad Request (missing {name})", ()
    for name in SINGLE:
        if counts.get(name, 0) > 1:
            return 400, f"Bad Request (several {name} values)", ()
    problem = check_cseq(msg)
    if problem is not None:
        return problem
    if msg.method not in allowed:
        return 501, "Not Implemented", ()
    scheme = msg.uri.partition(":")[0].lower()
    if scheme not in SCHEMES:
        return 416, "Unsupported URI Scheme", ()
    if "require" in counts and msg.method not in ("ACK", "CANCEL"):
        unsupported = ", ".join(v.strip() for v in msg.header_all("require") if v.strip())
        return 420, "Bad Extension", (("Unsupported", unsupported),)
    return None


def check_cseq(msg: Message) -> Optional[Problem]:
    try:
        number, method = msg.cseq
    except Exception:  # noqa: BLE001 - any malformed CSeq is the sender's error
        return 400, "Bad Request (malformed CSeq)", ()
    if not 0 <= number < MAX_CSEQ:
        return 400, "Bad Request (CSeq number out of range)", ()
    if method != msg.method:
        return 400, "Bad Request (CSeq method does not match)", ()
    return None


def lenient_message(raw: bytes) -> Message:
    """A Message holding just the routing headers found by a forgiving line scan.

    Used only to build a 400 for a request the strict parser refused; values are
    taken as they are (decoded as latin-1), continuation lines are ignored.
    """
    head = raw.split(b"\r\n\r\n", 1)[0]
    headers: list[tuple[str, str]] = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep or line[:1] in (b" ", b"\t"):
            continue
        canonical = ROUTING.get(name.strip().lower().decode("latin-1"))
        if canonical is not None:
            headers.append((canonical, value.strip().decode("latin-1")))
    return Message(method="UNKNOWN", uri="", status=None, reason=None, version="SIP/2.0",
                   headers=headers, body=b"")
