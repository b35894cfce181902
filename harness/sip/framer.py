"""Incremental framing of a SIP TCP byte stream (RFC 3261 §7.5, §18.3, §20.14).

Over a stream the only message boundary is Content-Length, so it is mandatory;
CRLFs between messages are keep-alives (RFC 5626 §3.5.1 "\\r\\n\\r\\n" pings
included) and skipped. Memory stays bounded by ``Limits``: an unfinished header
line longer than ``max_line`` or a header section longer than ``max_size`` fails
at the ``feed`` call that crosses the limit, so at most one read chunk beyond the
limit is ever held. A body that never arrives just stays pending.
"""
from __future__ import annotations

import re
from typing import Optional, Union

from harness.sip.errors import DEFAULT_LIMITS, FramingError, Limits

_CONTENT_LENGTH_RE = re.compile(rb"\r\n(?:content-length|l)[ \t]*+:[ \t]*+([^\r\n]*)", re.I)
_UNFOLD_RE = re.compile(rb"\r\n[ \t]++")
_MAX_DIGITS = 18  # anything longer is absurd (2**63 has 19 digits)


class Framer:
    """Feed it the bytes of one connection; it returns complete raw messages.

    After a FramingError the framer stays failed: every later ``feed`` raises
    the same error, since the stream position of the next message is unknown.
    """

    __slots__ = ("limits", "_buf", "_scan", "_line", "_need", "_failed")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._scan = 0     # bytes of the current message already searched for CRLF CRLF
        self._line = 0     # offset (in the current message) where its last line starts
        self._need: Optional[int] = None  # whole length of the current message, once known
        self._failed: Optional[FramingError] = None

    @property
    def pending(self) -> int:
        """Bytes buffered that do not form a complete message yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the messages they complete (possibly none).

        Raises FramingError (with ``.messages`` holding the complete messages
        that preceded the problem in this call).
        """
        if self._failed is not None:
            raise self._failed
        buf: Union[bytes, bytearray] = data
        if self._buf:
            self._buf += data
            buf = self._buf
        out: list[bytes] = []
        pos = 0
        try:
            while True:
                if self._need is None and self._scan == 0:
                    pos = _skip_crlf(buf, pos)
                end = self._message_end(buf, pos)
                if end is None:
                    break
                out.append(bytes(buf[pos:end]))
                pos = end
        except FramingError as exc:
            exc.messages = out
            self._failed = exc
            self._buf = bytearray()
            raise
        self._buf = bytearray(buf[pos:]) if pos < len(buf) else bytearray()
        return out

    def _message_end(self, buf: Union[bytes, bytearray], pos: int) -> Optional[int]:
        """Offset just past the message starting at pos, or None if incomplete."""
        need = self._need
        if need is None:
            head_end = buf.find(b"\r\n\r\n", pos + max(0, self._scan - 3))
            if head_end < 0:
                self._check_partial_head(buf, pos)
                return None
            head = bytes(buf[pos:head_end + 4])
            need = self._need = len(head) + content_length(head, self.limits)
        if len(buf) - pos < need:
            return None
        self._need = None
        self._scan = self._line = 0
        return pos + need

    def _check_partial_head(self, buf: Union[bytes, bytearray], pos: int) -> None:
        """Fail as soon as an unfinished header section breaks a limit."""
        size = len(buf) - pos
        newline = buf.rfind(b"\n", pos + self._scan)
        if newline >= 0:
            self._line = newline + 1 - pos
        self._scan = size
        if size - self._line > self.limits.max_line:
            raise FramingError(f"header line longer than {self.limits.max_line} bytes", 400)
        if size > self.limits.max_size:
            raise FramingError(f"header section longer than {self.limits.max_size} bytes", 400)


def _skip_crlf(buf: Union[bytes, bytearray], pos: int) -> int:
    end = len(buf)
    while pos < end and buf[pos] in (13, 10):
        pos += 1
    return pos


def content_length(head: bytes, limits: Limits = DEFAULT_LIMITS) -> int:
    """Body length declared by a complete header section (ending in CRLF CRLF).

    Checks the header-section limits too. Raises FramingError: 400 for a missing,
    negative, non-numeric, absurd or ambiguous Content-Length, 413 when the
    message would exceed ``limits.max_size``.
    """
    _check_head_limits(head, limits)
    if b"\r\n " in head or b"\r\n\t" in head:
        head = _UNFOLD_RE.sub(b" ", head)
    values = {value.strip(b" \t") for value in _CONTENT_LENGTH_RE.findall(head)}
    if not values:
        raise FramingError("Content-Length is mandatory over TCP", 400, head)
    if len(values) > 1:
        raise FramingError("Content-Length given several different values", 400, head)
    value = values.pop()
    if not value.isdigit() or len(value) > _MAX_DIGITS:
        raise FramingError(f"Content-Length {value[:40]!r} is not a sane number", 400, head)
    length = int(value)
    if len(head) + length > limits.max_size:
        raise FramingError(f"message of {len(head) + length} bytes exceeds {limits.max_size}",
                           413, head)
    return length


def _check_head_limits(head: bytes, limits: Limits) -> None:
    """Line length, field count and size of a complete header section."""
    if len(head) > limits.max_size:
        raise FramingError(f"header section longer than {limits.max_size} bytes", 400)
    if len(head) > limits.max_line and max(map(len, head.split(b"\r\n"))) > limits.max_line:
        raise FramingError(f"header line longer than {limits.max_line} bytes", 400)
    fields = head.count(b"\r\n") - 2  # the start line's and the empty line's CRLFs
    if fields > limits.max_headers:
        fields -= head.count(b"\r\n ") + head.count(b"\r\n\t")  # folded lines count once
        if fields > limits.max_headers:
            raise FramingError(f"more than {limits.max_headers} header fields", 400)
