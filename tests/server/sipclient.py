"""A small, independent SIP-over-TCP client for the server tests.

It builds requests from plain text templates and frames responses by
Content-Length itself, so the tests do not rely on harness.sip (the code
under test) to judge the server.
"""
from __future__ import annotations

import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

CRLF = "\r\n"
SDP = ("v=0\r\no=test 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
       "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\n")


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, list[str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> Optional[str]:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def worker(self) -> Optional[int]:
        m = re.search(r"worker (\d+)", self.header("server") or "")
        return int(m.group(1)) if m else None

    @property
    def to_tag(self) -> Optional[str]:
        m = re.search(r";\s*tag=([^;\s]+)", self.header("to") or "")
        return m.group(1) if m else None


@dataclass
class Dialog:
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    from_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    to_tag: Optional[str] = None
    cseq: int = 1
    user: str = "service"


def request(method: str, dlg: Dialog, port: int, *, cseq: Optional[int] = None, uri: Optional[str] = None,
            extra: str = "", body: str = "", content_type: Optional[str] = None,
            to_user: Optional[str] = None) -> bytes:
    """A well-formed request of ``dlg`` (To-tag included once known)."""
    n = dlg.cseq if cseq is None else cseq
    user = to_user or dlg.user
    uri = uri or f"sip:{user}@127.0.0.1:{port}"
    to = f"<sip:{user}@127.0.0.1>" + (f";tag={dlg.to_tag}" if dlg.to_tag else "")
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch={branch}",
             "Max-Forwards: 70",
             f"From: <sip:tester@127.0.0.1>;tag={dlg.from_tag}",
             f"To: {to}",
             f"Call-ID: {dlg.call_id}",
             f"CSeq: {n} {method}",
             "Contact: <sip:tester@127.0.0.1:5999;transport=tcp>"]
    if extra:
        lines += [x for x in extra.split(CRLF) if x]
    if body:
        lines.append(f"Content-Type: {content_type or 'application/sdp'}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return (CRLF.join(lines) + CRLF + CRLF + body).encode()


class Conn:
    """One TCP connection with a response reader."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = 5.0) -> Optional[Response]:
        """The next response, or None if the peer closed the connection first."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self._take()
            if resp is not None:
                return resp
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete response in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def read_final(self, timeout: float = 5.0) -> Optional[Response]:
        """Skip provisional responses; the final one (or None on close)."""
        while True:
            resp = self.read(timeout)
            if resp is None or resp.status >= 200:
                return resp

    def is_closed(self, timeout: float = 1.0) -> bool:
        """True if the server closes the connection within ``timeout`` (data is discarded)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except (socket.timeout, TimeoutError):
            return False

    def _take(self) -> Optional[Response]:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buf[:end].decode("latin-1")
        lines = head.split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = int((headers.get("content-length") or headers.get("l") or ["0"])[0])
        if len(self.buf) < end + 4 + length:
            return None
        raw = self.buf[:end + 4 + length]
        body = raw[end + 4:]
        self.buf = self.buf[end + 4 + length:]
        _, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        return Response(int(status), reason, headers, body, raw)


def transact(port: int, data: bytes, timeout: float = 5.0) -> Optional[Response]:
    """Send on a fresh connection; the final response."""
    with Conn(port, timeout) as conn:
        conn.send(data)
        return conn.read_final(timeout)


def options_ok(port: int) -> bool:
    """True if OPTIONS on a fresh connection gets 200."""
    resp = transact(port, request("OPTIONS", Dialog(), port))
    return resp is not None and resp.status == 200
