"""The SIP behaviour of the server: a UAS and registrar whose only state is the Store.

``Uas(cfg, store, slot, contact_host, contact_port).handle(raw) -> bytes`` takes one
framed message and returns the bytes to send back (b"" for nothing). It never
raises: a message it cannot read gets 400, a bug gets 500, a Store that raises
gets 503 with Retry-After; the worker lives on in every case.

State in the Store (keys and values are bytes):

* ``dlg:<Call-ID>`` -> ``state|to-tag|from-tag|cseq|worker|call-id|target``, state
  ``E`` (answered, waiting for ACK) or ``C`` (confirmed). Created by INVITE with
  ``add`` (a repeated INVITE reads it and answers with the same To-tag), confirmed by
  ACK with ``update``, removed by BYE with ``delete`` (200, or 481 if absent).
* ``reg:<AOR>`` -> lines ``<expiry epoch seconds> <contact URI>``, kept by REGISTER
  with ``update`` and a TTL; an INVITE whose Request-URI is a registered AOR reads
  it, stores the first binding as the dialog's target and names it in X-Target.
"""
from __future__ import annotations

import itertools
import os
import sys
import time
from typing import Callable, Optional

from harness.server.config import ServerConfig
from harness.server import registrar
from harness.sip import (Limits, Message, ParseError, answerable, build_response, parse,
                         validate_request)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER"
METHODS = tuple(ALLOW.split(", "))
SDP = "application/sdp"
REASONS = {400: "Bad Request", 413: "Request Entity Too Large", 416: "Unsupported URI Scheme",
           505: "Version Not Supported"}


class StoreFailed(Exception):
    """A Store call raised; answered with 503 + Retry-After."""


def guarded(fn: Callable) -> Callable:
    """Wrap one Store method so whatever it raises becomes StoreFailed (not a 500)."""
    def call(*args):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - any store failure is a 503, by contract
            raise StoreFailed(f"{type(exc).__name__}: {exc}") from exc
    return call


def confirm(old: Optional[bytes]) -> Optional[bytes]:
    """ACK's update: mark the dialog confirmed (absent stays absent)."""
    return b"C" + old[1:] if old else None


class Uas:
    """One worker's SIP logic. Not thread-safe; one instance per worker process."""

    def __init__(self, cfg: ServerConfig, store, slot: int, contact_host: str = "127.0.0.1",
                 contact_port: int = 5060) -> None:
        self.cfg = cfg
        self.slot = slot
        self.limits = Limits(max_line=cfg.max_line, max_headers=cfg.max_headers, max_size=cfg.max_size)
        self.get = guarded(store.get)
        self.add = guarded(store.add)
        self.update = guarded(store.update)
        self.delete = guarded(store.delete)
        self.server = (("Server", f"sipstate (worker {slot})"),)
        self.contact = f"<sip:sipstate@{contact_host}:{contact_port};transport=tcp>"
        self.hdr_200 = self.server + (("Contact", self.contact),)
        self.hdr_503 = self.server + (("Retry-After", str(cfg.retry_after)),)
        self.hdr_allow = self.server + (("Allow", ALLOW), ("Accept", SDP))
        self.sdp = (f"v=0\r\no=sipstate {slot} 1 IN IP4 {contact_host}\r\ns=-\r\n"
                    f"c=IN IP4 {contact_host}\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n").encode()
        # To-tags unique across workers, respawns and runs: random prefix + counter.
        self.tag_prefix = f"{os.urandom(4).hex()}{slot}"
        self.counter = itertools.count(1)
        self.handlers = {"INVITE": self.on_invite, "ACK": self.on_ack, "BYE": self.on_bye,
                         "CANCEL": self.on_cancel, "OPTIONS": self.on_options,
                         "REGISTER": self.on_register}
        self.stats = {"503": 0, "500": 0, "400": 0}

    # ---- entry points -------------------------------------------------------
    def handle(self, raw: bytes) -> bytes:
        """One framed message -> the bytes to send back (possibly b"")."""
        try:
            msg = parse(raw, self.limits)
        except ParseError as exc:
            return self.answer_error(exc)
        if msg.method is None:
            return b""  # a stray response: a UAS without client transactions drops it
        try:
            problem = validate_request(msg, methods=METHODS)
            if problem is not None:
                return self.respond_problem(msg, problem)
            return self.handlers[msg.method](msg)
        except StoreFailed:
            self.stats["503"] += 1
            if msg.method == "ACK":
                return b""
            return build_response(msg, 503, "Service Unavailable", headers=self.hdr_503)
        except Exception as exc:  # noqa: BLE001 - a bug in one message must not kill the worker
            self.note_bug(exc)
            return self.safe_response(msg, 500, "Server Internal Error")

    def note_bug(self, exc: Exception) -> None:
        """Count an unexpected error; say the first few on stderr (a 500 is our fault)."""
        self.stats["500"] += 1
        if self.stats["500"] <= 5:
            print(f"harness serve: worker {self.slot}: 500 after {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)

    def framing_error(self, exc) -> bytes:
        """The framer gave up on the stream: an error response built from the
        offending header block when it can be answered, else nothing."""
        return self.answer_error(exc)

    # ---- methods ------------------------------------------------------------
    def on_invite(self, msg: Message) -> bytes:
        call_id = msg.call_id
        key = b"dlg:" + call_id.encode("utf-8", "surrogateescape")
        if msg.to_tag:
            # A re-INVITE: only for a dialog the Store holds.
            old = self.get(key)
            if old is None:
                return build_response(msg, 481, "Call/Transaction Does Not Exist", headers=self.server)
            return self.invite_responses(msg, *self.tag_and_target(old))
        target = self.lookup_target(msg.uri)
        tag = f"{self.tag_prefix}.{next(self.counter)}"
        record = "|".join(("E", tag, msg.from_tag or "", str(msg.cseq[0]), str(self.slot),
                           call_id, target or "")).encode("utf-8", "surrogateescape")
        if not self.add(key, record):
            old = self.get(key)  # a repeated INVITE: the same answer as the first time
            if old is not None:
                tag, target = self.tag_and_target(old)
        return self.invite_responses(msg, tag, target)

    @staticmethod
    def tag_and_target(record: bytes) -> tuple[str, Optional[str]]:
        fields = record.split(b"|", 6)
        return (fields[1].decode("utf-8", "surrogateescape"),
                fields[6].decode("utf-8", "surrogateescape") or None)

    def invite_responses(self, msg: Message, tag: str, target: Optional[str]) -> bytes:
        out = []
        if self.cfg.send_100:
            out.append(build_response(msg, 100, "Trying", headers=self.server))
        if self.cfg.send_180:
            out.append(build_response(msg, 180, "Ringing", to_tag=tag, headers=self.hdr_200))
        headers = self.hdr_200 if target is None else self.hdr_200 + (("X-Target", target),)
        body = self.sdp if msg.body else b""
        out.append(build_response(msg, 200, "OK", to_tag=tag, headers=headers, body=body,
                                  content_type=SDP if body else None))
        return b"".join(out)

    def on_ack(self, msg: Message) -> bytes:
        self.update(b"dlg:" + msg.call_id.encode("utf-8", "surrogateescape"), confirm)
        return b""

    def on_bye(self, msg: Message) -> bytes:
        if self.delete(b"dlg:" + msg.call_id.encode("utf-8", "surrogateescape")):
            return build_response(msg, 200, "OK", headers=self.server)
        return build_response(msg, 481, "Call/Transaction Does Not Exist", headers=self.server)

    def on_cancel(self, msg: Message) -> bytes:
        # Every INVITE is answered at once with a final response, so no INVITE is
        # ever pending: a CANCEL never matches a transaction (RFC 3261 §9.2).
        return build_response(msg, 481, "Call/Transaction Does Not Exist", headers=self.server)

    def on_options(self, msg: Message) -> bytes:
        return build_response(msg, 200, "OK", headers=self.hdr_allow)

    def on_register(self, msg: Message) -> bytes:
        try:
            request = registrar.read_request(msg)
        except registrar.BadRegister as exc:
            return build_response(msg, exc.status, exc.reason, headers=self.server)
        now = time.time()
        merge = registrar.merger(request, now)
        key = b"reg:" + request.aor.encode("utf-8", "surrogateescape")
        if request.changes or request.wildcard:
            new = self.update(key, merge, registrar.RECORD_TTL)
        else:
            new = merge(self.get(key))
        contacts = registrar.contact_headers(new, now)
        return build_response(msg, 200, "OK", headers=self.server + tuple(("Contact", c) for c in contacts))

    # ---- helpers --------------------------------------------------------------
    def lookup_target(self, uri: str) -> Optional[str]:
        """The first live binding of the Request-URI's AOR, if it is registered."""
        aor = registrar.aor_of(uri)
        if aor is None:
            return None
        value = self.get(b"reg:" + aor.encode("utf-8", "surrogateescape"))
        return registrar.first_binding(value, time.time()) if value else None

    def respond_problem(self, msg: Message, problem: tuple) -> bytes:
        status, reason, extra = problem
        if msg.method == "ACK":
            return b""  # ACK is never answered
        if status == 400:
            self.stats["400"] += 1
        return self.safe_response(msg, status, reason, tuple(extra))

    def safe_response(self, msg: Message, status: int, reason: str, extra: tuple = ()) -> bytes:
        try:
            return build_response(msg, status, reason, headers=self.server + extra)
        except Exception:  # noqa: BLE001 - headers too broken to copy: a bare response
            return (f"SIP/2.0 {status} {reason}\r\nServer: sipstate (worker {self.slot})\r\n"
                    "Content-Length: 0\r\n\r\n").encode()

    def answer_error(self, exc) -> bytes:
        """The response to a message the parser or framer refused (400, 413 or 505),
        or b"" when nothing should be sent (responses, ACK, garbage without Via)."""
        req = answerable(exc)
        if req is None:
            return b""
        status = exc.status if exc.status in REASONS else 400
        self.stats["400"] += status == 400
        detail = " ".join(str(exc).split())[:80]
        reason = f"{REASONS[status]} ({detail})" if detail and status == 400 else REASONS[status]
        return self.safe_response(req, status, reason)
