"""The SIP message model and ``parse`` (RFC 3261 §7, §25).

``parse`` works in two passes over one complete message: a lenient pass that
reads the start line and every header field it can (so a response can still be
built for a broken request), then strict checks of the start line and of the
headers a UAS relies on. Any problem raises ParseError carrying the lenient
result in ``.message``. Nothing else is ever raised: header bytes that are not
UTF-8 are decoded with surrogateescape (and re-encoded the same way by the
builders, so copied headers stay byte-exact), numbers are length-checked before
``int()``, and sizes are bounded by ``Limits``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from harness.sip import grammar
from harness.sip.errors import DEFAULT_LIMITS, Limits, ParseError

# RFC 3261 §7.3.3 and the extensions that registered a compact form (IANA SIP parameters).
COMPACT = {
    "i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
    "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding",
    "o": "event", "u": "allow-events", "r": "refer-to", "b": "referred-by",
    "x": "session-expires", "y": "identity", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition", "n": "identity-info",
}
# Headers whose value is a comma-separated list: each entry becomes its own (name, value).
LIST_HEADERS = frozenset({
    "via", "contact", "route", "record-route", "path", "service-route", "allow", "supported",
    "require", "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
    "allow-events", "content-encoding", "in-reply-to", "alert-info", "call-info", "error-info",
})
_KNOWN = {**COMPACT, **{name: name for name in COMPACT.values()},
          **{name: name for name in LIST_HEADERS},
          **{name: name for name in ("cseq", "max-forwards", "expires", "user-agent", "server",
                                     "date", "timestamp", "authorization", "www-authenticate")}}
_UNFOLD_RE = re.compile(r"\r\n[ \t]++")


def canonical_name(name: str) -> str:
    """Lowercase long form of a header name: 'I' -> 'call-id', 'Via ' -> 'via'."""
    key = name.strip(" \t").lower()
    return COMPACT.get(key, key)


@dataclass(slots=True)
class Message:
    """One SIP request or response. ``headers`` holds (canonical lowercase long
    name, value) pairs in message order, list-valued headers split into entries."""

    method: Optional[str]
    uri: Optional[str]
    status: Optional[int]
    reason: Optional[str]
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    _index: Optional[dict[str, list[str]]] = field(default=None, repr=False, compare=False)
    _cseq: object = field(default=None, repr=False, compare=False)   # cached parse, or False
    _copied: object = field(default=None, repr=False, compare=False)  # see build._copied

    @property
    def is_request(self) -> bool:
        return self.status is None

    @property
    def index(self) -> dict[str, list[str]]:
        """Canonical name -> its values in order (built once; do not modify)."""
        index = self._index
        if index is None:
            index = self._index = _index_of(self.headers)
        return index

    def header_all(self, name: str) -> list[str]:
        """Every value of a header (any case, compact form accepted), in order."""
        index = self._index
        if index is None:
            index = self.index
        values = index.get(name)
        if values is None:
            values = index.get(canonical_name(name))
        return values if values is not None else []

    def header(self, name: str) -> Optional[str]:
        """The first value of a header, or None."""
        values = self.header_all(name)
        return values[0] if values else None

    @property
    def call_id(self) -> Optional[str]:
        return self.header("call-id")

    @property
    def cseq(self) -> Optional[tuple[int, str]]:
        """(number, method) of the first CSeq, or None when absent or malformed."""
        cached = self._cseq
        if cached is None:
            match = grammar.CSEQ_RE.fullmatch(self.header("cseq") or "")
            cached = self._cseq = (int(match.group(1)), match.group(2)) if match else False
        return cached or None

    @property
    def from_tag(self) -> Optional[str]:
        return grammar.tag_of(self.header("from"))

    @property
    def to_tag(self) -> Optional[str]:
        return grammar.tag_of(self.header("to"))

    @property
    def via_branch(self) -> Optional[str]:
        """The branch parameter of the top Via entry, or None."""
        via = self.header("via")
        match = grammar.BRANCH_RE.search(via) if via else None
        return match.group(1) if match else None


def _index_of(headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for name, value in headers:
        values = index.get(name)
        if values is None:
            index[name] = [value]
        else:
            values.append(value)
    return index


def parse(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse one complete message (header section, CRLF CRLF, body).

    The body is cut to Content-Length when present (extra octets are ignored as
    on a datagram); without it the body is the rest. Raises ParseError only:
    status 400 (malformed), 413 (over ``limits.max_size``) or 505 (a SIP version
    other than 2.0, raised only when everything else is well formed).
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ParseError(f"expected bytes, got {type(raw).__name__}", 400)
    raw = bytes(raw)
    if len(raw) > limits.max_size:
        raise ParseError(f"message of {len(raw)} bytes exceeds {limits.max_size}", 413)
    if raw[:1] in (b"\r", b"\n"):  # RFC 3261 §7.5: ignore CRLFs before the start line
        raw = raw.lstrip(b"\r\n")
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise ParseError("no empty line ends the header section")
    head = raw[:end].decode("utf-8", "surrogateescape")
    errors: list[str] = []
    lines = _split_lines(head, limits, errors)
    msg = _read_start_line(lines[0], errors)
    msg.headers, msg._index = _read_headers(lines, errors)
    if not errors:
        _check_headers(msg._index, errors)
    msg.body = _cut_body(raw[end + 4:], msg._index.get("content-length"), errors)
    if errors:
        raise ParseError(errors[0], 400, msg)
    if msg.version != "SIP/2.0":
        raise ParseError(f"SIP version {msg.version} is not supported", 505, msg)
    return msg


def _split_lines(head: str, limits: Limits, errors: list[str]) -> list[str]:
    """Unfold continuation lines and split; note bare CR/LF and limit breaches."""
    if "\r\n " in head or "\r\n\t" in head:
        head = _UNFOLD_RE.sub(" ", head)
    lines = head.split("\r\n")
    if len(lines) > limits.max_headers + 1:
        errors.append(f"more than {limits.max_headers} header fields")
    if len(head) > limits.max_line and max(map(len, lines)) > limits.max_line:
        errors.append(f"a header line is longer than {limits.max_line} bytes")
    crlf = head.count("\r\n")
    if head.count("\r") != crlf or head.count("\n") != crlf:
        errors.append("bare CR or LF inside the header section")
    return lines


def _read_start_line(line: str, errors: list[str]) -> Message:
    """Request-Line or Status-Line; on error, fill what can be guessed."""
    if line[:4].upper() == "SIP/":
        return _read_status_line(line, errors)
    parts = line.split(" ")
    if len(parts) != 3:
        errors.append("Request-Line is not 'Method SP Request-URI SP SIP-Version'")
        words = line.split()
        parts = (words + ["", "", ""])[:3]
    method, uri, version = parts
    if not grammar.TOKEN_RE.fullmatch(method):
        errors.append("method is not a token")
    problem = grammar.check_request_uri(uri)
    if problem:
        errors.append(problem)
    if not grammar.SIP_VERSION_RE.fullmatch(version):
        errors.append("Request-Line has no SIP-Version")
    return Message(method, uri, None, None, version.upper(), [], b"")


def _read_status_line(line: str, errors: list[str]) -> Message:
    parts = line.split(" ", 2)
    version = parts[0].upper()
    code = parts[1] if len(parts) > 1 else ""
    reason = parts[2] if len(parts) > 2 else ""
    status = 0  # a malformed response stays a response (status is not None)
    if not grammar.SIP_VERSION_RE.fullmatch(version):
        errors.append("Status-Line has no SIP-Version")
    if len(code) == 3 and code.isascii() and code.isdigit() and code[0] in "123456":
        status = int(code)
    else:
        errors.append("Status-Code is not three digits from 100 to 699")
    return Message(None, None, status, reason, version, [], b"")


def _read_headers(lines: list[str], errors: list[str]):
    """(name, value) pairs and the name index; lines that are not headers are noted."""
    headers: list[tuple[str, str]] = []
    index: dict[str, list[str]] = {}
    known_names, list_headers, append = _KNOWN.get, LIST_HEADERS, headers.append
    for i, line in enumerate(lines):
        if not i:
            continue  # the start line
        name, sep, value = line.partition(":")
        canon = known_names(name.lower()) if sep else None
        if canon is None:
            canon = canonical_name(name)
            if not sep or not grammar.TOKEN_RE.fullmatch(canon):
                errors.append(f"header line {i} is not 'name: value'")
                continue
        value = value.strip(" \t")
        values = index.get(canon)
        if canon in list_headers and "," in value:
            entries = grammar.split_list(value)
            if values is None:
                values = index[canon] = []
            values.extend(entries)
            headers.extend([(canon, entry) for entry in entries])
        else:  # the usual case: one value
            if values is None:
                index[canon] = [value]
            else:
                values.append(value)
            append((canon, value))
    return headers, index


def _check_headers(index: dict[str, list[str]], errors: list[str]) -> None:
    for name, check in grammar.CHECKS.items():
        values = index.get(name)
        if values:
            for value in values:
                problem = check(value)
                if problem:
                    errors.append(f"{name}: {problem}")
                    return


def _cut_body(body: bytes, lengths: Optional[list[str]], errors: list[str]) -> bytes:
    """The body cut to Content-Length; disagreeing or short lengths are errors."""
    if not lengths:
        return body
    if len(set(lengths)) > 1:
        errors.append("Content-Length given several different values")
        return body
    if grammar.check_content_length(lengths[0]):
        errors.append("Content-Length is not a number")
        return body
    length = int(lengths[0])
    if length > len(body):
        errors.append(f"body shorter than Content-Length {length}")
        return body
    return body[:length]
