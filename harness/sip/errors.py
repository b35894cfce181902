"""Errors and size limits shared by the SIP framer, parser and validator.

Every error carries ``status``: the response code a server should answer with
(400, 413, 505, ...), or None when no answer makes sense. The parser raises only
ParseError and the framer only FramingError, whatever bytes they are given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from harness.sip.message import Message


@dataclass(frozen=True)
class Limits:
    """Bounds on what one peer may make us buffer or parse (RFC 3261 leaves them to us).

    max_line: longest header line in bytes (after the CRLF is removed);
    max_headers: most header fields (folded lines count once);
    max_size: largest whole message, header section plus body.
    """

    max_line: int = 8192
    max_headers: int = 100
    max_size: int = 65536

    def __post_init__(self) -> None:
        for name in ("max_line", "max_headers", "max_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name}: {value!r} is not allowed; a positive integer is")


DEFAULT_LIMITS = Limits()


class SipError(Exception):
    """Base of the SIP errors; ``status`` is the suggested response code or None."""

    def __init__(self, detail: str, status: Optional[int] = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class ParseError(SipError):
    """The message is malformed (status 400), too large (413) or of another SIP version (505).

    ``message`` is the leniently parsed message when its header section was
    readable, so that a server can still build the response (see
    ``harness.sip.answerable``); None when the bytes are not a SIP message at all.
    """

    def __init__(self, detail: str, status: Optional[int] = 400,
                 message: Optional["Message"] = None) -> None:
        super().__init__(detail, status)
        self.message = message


class FramingError(SipError):
    """The byte stream cannot be split into messages any more: answer, then close.

    ``head``: the offending message's header section (ending in CRLF CRLF) when
    it was complete and within the limits, so that a 400 can be built from it.
    ``messages``: complete messages that preceded the error in the same
    ``Framer.feed`` call; handle them before answering the error.
    """

    def __init__(self, detail: str, status: Optional[int] = 400, head: Optional[bytes] = None,
                 messages: Optional[list[bytes]] = None) -> None:
        super().__init__(detail, status)
        self.head = head
        self.messages = messages if messages is not None else []
