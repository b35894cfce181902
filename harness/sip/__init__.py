"""SIP over TCP for sipstate: framing, parsing, validation and building (RFC 3261).

Contract names (see the team brief): SipError, ParseError, FramingError, Limits,
Framer, Message, parse, build_response, build_request. Extras for the server:
validate_request, answerable, header_int, reason_phrase.

How a server uses it, per connection::

    framer = Framer(limits)
    try:
        raws = framer.feed(data)
    except FramingError as exc:
        raws = exc.messages            # complete messages before the bad one: handle first
        ... handle raws ...
        req = answerable(exc)          # Message or None
        if req is not None:            # exc.status: 400, or 413 (too large)
            send(build_response(req, exc.status, headers=[("Server", ...)]))
        close the connection           # the stream cannot be resynchronised
    for raw in raws:
        try:
            msg = parse(raw, limits)
        except ParseError as exc:      # exc.status: 400 malformed, 413, 505 SIP/x.y != 2.0
            req = answerable(exc)      # None for responses, ACK, garbage: send nothing
            if req is not None:
                send(build_response(req, exc.status, headers=[("Server", ...)]))
            continue                   # the connection stays usable (framing was fine)
        if not msg.is_request:
            continue                   # stray response: drop
        rejection = validate_request(msg, methods=KNOWN_METHODS)
        if rejection is not None:
            if msg.method != "ACK":    # never answer an ACK
                status, reason, extra = rejection
                send(build_response(msg, status, reason, headers=[*extra, ("Server", ...)]))
            continue
        ... the UAS logic (INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER) ...

``validate_request(msg, methods=None, schemes=("sip","sips","tel"), supported=(),
accept=("application/sdp",))`` returns None or (status, reason, extra_headers):
400 (missing Via/From/To/Call-ID/CSeq, repeated single-value header, CSeq
method mismatch, body without Content-Type), 501 with Allow (method not in
``methods``, only checked when given), 416 (Request-URI scheme), 420 with
Unsupported (Require; skipped for ACK/CANCEL), 415 with Accept (body type).

``header_int(msg, "expires", default=3600)`` reads Expires / Max-Forwards as an
int in 0..2**32-1, falling back to ``default`` for absent, malformed or huge
values (RFC 4475 §3.1.2.4 allows treating them as absent). The Contact
``;expires=`` parameter is left to the registrar.

Message accessors: ``header(name)`` / ``header_all(name)`` (any case, compact
forms ok), ``call_id``, ``cseq`` -> (int, method) or None, ``from_tag``,
``to_tag``, ``via_branch`` (top Via). ``headers`` is a list of (canonical
lowercase long name, value) with Via/Contact/Route/... lists split into entries.
"""
from __future__ import annotations

from harness.sip.build import build_request, build_response, reason_phrase
from harness.sip.errors import FramingError, Limits, ParseError, SipError
from harness.sip.framer import Framer
from harness.sip.message import Message, parse
from harness.sip.validate import answerable, header_int, validate_request

__all__ = [
    "SipError", "ParseError", "FramingError", "Limits", "Framer", "Message", "parse",
    "build_response", "build_request", "validate_request", "answerable", "header_int",
    "reason_phrase",
]
