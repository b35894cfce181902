"""Parser, validator and framer checked against data files.

Each ``cases/NAME.json`` describes the expected handling of one raw message:
``cases/NAME.sip`` next to it, or ``source`` (a path under tests.support.TESTDATA,
the RFC 4475 torture messages). Keys:

- ``parse``: the message given whole to ``parse``: either expected attributes
  (method, uri, status, reason, version, call_id, cseq, from_tag, to_tag,
  via_branch, body_length; ``headers``: exact value lists by canonical name;
  ``header``: first value by any-case/compact name; ``counts``: number of
  values) or ``{"error": STATUS, "answerable": BOOL}`` (ParseError status and
  whether ``answerable`` offers a request to answer).
- ``validate``: null, or [status, reason] from ``validate_request`` with the
  server's methods (only for parsed requests; null when omitted).
- ``framing``: the bytes fed to a Framer in one piece: ``{"messages": N,
  "pending": BYTES}`` or ``{"error": STATUS, "answerable": BOOL, "messages": N}``
  (default: one message, nothing pending).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.sip import (FramingError, Framer, ParseError, answerable, parse,
                         validate_request)
from tests.support import TESTDATA

CASES = Path(__file__).parent / "cases"
METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER")
ATTRS = ("method", "uri", "status", "reason", "version", "call_id", "from_tag", "to_tag",
         "via_branch")
CASE_FILES = sorted(CASES.glob("*.json"))


def load_case(path: Path) -> tuple[bytes, dict]:
    spec = json.loads(path.read_text())
    source = TESTDATA / spec["source"] if "source" in spec else path.with_suffix(".sip")
    return source.read_bytes(), spec


def test_every_rfc4475_message_has_a_case():
    names = {p.name for p in (TESTDATA / "rfc4475").glob("*.dat")}
    covered = {json.loads(p.read_text()).get("source", "").split("/")[-1] for p in CASE_FILES}
    assert len(names) == 49
    assert names <= covered, sorted(names - covered)


def check_parsed(msg, want: dict) -> None:
    for attr in ATTRS:
        if attr in want:
            assert getattr(msg, attr) == want[attr], attr
    if "cseq" in want:
        assert msg.cseq == (tuple(want["cseq"]) if want["cseq"] else None)
    if "body_length" in want:
        assert len(msg.body) == want["body_length"]
    for name, values in want.get("headers", {}).items():
        assert msg.header_all(name) == values, name
    for name, value in want.get("header", {}).items():
        assert msg.header(name) == value, name
    for name, count in want.get("counts", {}).items():
        assert len(msg.header_all(name)) == count, name
    assert [v for n, v in msg.headers if n == "via"] == msg.header_all("via")


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_parse(path: Path):
    raw, spec = load_case(path)
    want = spec["parse"]
    if "error" in want:
        with pytest.raises(ParseError) as info:
            parse(raw)
        assert info.value.status == want["error"]
        assert (answerable(info.value) is not None) == want["answerable"]
        return
    msg = parse(raw)
    check_parsed(msg, want)
    rejection = validate_request(msg, methods=METHODS)
    expected = spec.get("validate")
    assert (list(rejection[:2]) if rejection else None) == expected


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_framing(path: Path):
    raw, spec = load_case(path)
    want = spec.get("framing", {"messages": 1, "pending": 0})
    framer = Framer()
    if "error" in want:
        with pytest.raises(FramingError) as info:
            framer.feed(raw)
        assert info.value.status == want["error"]
        assert (answerable(info.value) is not None) == want["answerable"]
        assert len(info.value.messages) == want.get("messages", 0)
        with pytest.raises(FramingError):  # a failed stream stays failed
            framer.feed(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        return
    out = framer.feed(raw)
    assert len(out) == want["messages"]
    assert framer.pending == want["pending"]
    if want["messages"]:
        assert b"".join(out) + raw[len(raw) - framer.pending:] in (raw, raw.lstrip(b"\r\n"))


def tcp_outcome(raw: bytes) -> tuple[str, object]:
    """What a TCP UAS built on harness.sip does with the first message of these bytes:
    ('pending', None), ('close', status or None), ('drop', None) for responses and
    unanswerable input, ('answer', status) or ('process', method)."""
    framer = Framer()
    try:
        msgs = framer.feed(raw)
    except FramingError as exc:
        if not exc.messages:
            return "close", exc.status if answerable(exc) else None
        msgs = exc.messages
    if not msgs:
        return "pending", None
    try:
        msg = parse(msgs[0])
    except ParseError as exc:
        return ("answer", exc.status) if answerable(exc) else ("drop", None)
    if not msg.is_request:
        return "drop", None
    rejection = validate_request(msg, methods=METHODS)
    return ("answer", rejection[0]) if rejection else ("process", msg.method)


def allowed_outcomes(expected: str) -> set:
    """expected.tsv's prose turned into the outcomes it allows."""
    table = [
        ("parsed; unknown method", {("answer", 501)}),
        ("parsed; a final response other than 400",  # e.g. MESSAGE (mpart01) gets 501
         {("process", m) for m in METHODS} | {("answer", s) for s in (415, 416, 420, 501)}),
        ("first message answered", {("process", "REGISTER")}),
        ("stray", {("drop", None)}),
        ("body shorter", {("pending", None)}),
        ("negative Content-Length: 400", {("close", 400)}),
        ("multiple Content-Length values: 400", {("close", 400)}),
        ("400 (a lenient element may process it)",
         {("answer", 400)} | {("process", m) for m in METHODS}),
        ("400 or 501", {("answer", 400), ("answer", 501)}),
        ("400", {("answer", 400)}),
        ("505", {("answer", 505)}),
        ("416", {("answer", 416)}),
        ("420", {("answer", 420)}),
        ("415", {("answer", 415)}),
        ("processed (RFC 2543 syntax) or 400", {("process", "INVITE"), ("close", 400)}),
    ]
    for prefix, outcomes in table:
        if expected.startswith(prefix):
            return outcomes
    return {("process", m) for m in METHODS}  # processed normally / 401 or processed / 406 or 200


def test_rfc4475_outcomes_match_expected_tsv():
    """Independent of the JSON files: every torture message against expected.tsv."""
    rows = (TESTDATA / "rfc4475" / "expected.tsv").read_text().splitlines()[1:]
    assert len(rows) == 49
    for row in rows:
        name, _section, _kind, expected = row.split("\t")
        outcome = tcp_outcome((TESTDATA / "rfc4475" / name).read_bytes())
        assert outcome in allowed_outcomes(expected), (name, expected, outcome)
