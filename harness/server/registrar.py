"""Registrar logic (RFC 3261 §10.3) as pure functions over the stored bindings.

A binding set is stored under ``reg:<AOR>`` as lines ``<expiry epoch s> <URI>``.
The update function built by :func:`merger` is pure (it may be called more than
once by optimistic stores): it drops expired bindings, applies the request's
contacts, and returns None when nothing is left (which deletes the key).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from harness.sip import Message, header_int

DEFAULT_EXPIRES = 3600
MAX_EXPIRES = 7200


class BadRegister(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class RegisterRequest:
    aor: str
    changes: tuple[tuple[str, int], ...]   # (contact URI, expires seconds; 0 removes)
    wildcard: bool                          # Contact: * with Expires: 0 (remove all)


def aor_of(uri: Optional[str]) -> Optional[str]:
    """Canonical address of record ``sip:user@host`` (no port, parameters or headers)."""
    if not uri:
        return None
    scheme, sep, rest = uri.strip().partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips"):
        return None
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    user, at, host = rest.rpartition("@")
    host = host.lower()
    if host.startswith("["):
        host = host[:host.find("]") + 1]
    else:
        host = host.split(":", 1)[0]
    if not host:
        return None
    return f"sip:{user}@{host}" if at else f"sip:{host}"


def split_contact(entry: str) -> tuple[str, dict[str, str]]:
    """``"Name" <uri>;p=v`` or ``uri;p=v`` -> (uri, lowercase params)."""
    entry = entry.strip()
    lt = entry.find("<")
    if lt >= 0:
        gt = entry.find(">", lt)
        if gt < 0:
            raise BadRegister(400, "Bad Request (unbalanced < in Contact)")
        uri, tail = entry[lt + 1:gt].strip(), entry[gt + 1:]
    else:
        uri, _, tail = entry.partition(";")
        tail = ";" + tail if tail else ""
        if "?" in uri:  # RFC 3261 §20: a URI with headers must be in <>
            raise BadRegister(400, "Bad Request (Contact URI with headers outside <>)")
        uri = uri.strip()
    params = {}
    for part in tail.split(";"):
        name, _, value = part.partition("=")
        if name.strip():
            params[name.strip().lower()] = value.strip()
    return uri, params


def expires_value(raw: Optional[str], default: int) -> int:
    """A Contact ;expires= value: absent or malformed -> default; huge -> capped (§10.3 step 7)."""
    raw = (raw or "").strip()
    if not raw.isascii() or not raw.isdigit():
        return default
    return min(int(raw[:12]), MAX_EXPIRES)


def read_request(msg: Message) -> RegisterRequest:
    """The REGISTER's AOR and contact changes; BadRegister names what is wrong."""
    aor = aor_of(to_uri(msg.header("to") or ""))
    if aor is None:
        # §10.3 step 5: an AOR that is not a SIP URI of this registrar is "not found".
        raise BadRegister(404, "Not Found")
    default = min(header_int(msg, "expires", DEFAULT_EXPIRES), MAX_EXPIRES)
    entries = [e for e in msg.header_all("contact") if e.strip()]
    if any(e.strip() == "*" for e in entries):
        if len(entries) != 1 or default != 0:
            raise BadRegister(400, "Bad Request (Contact: * needs Expires: 0 and no other contact)")
        return RegisterRequest(aor, (), True)
    changes = []
    for entry in entries:
        uri, params = split_contact(entry)
        if not uri:
            raise BadRegister(400, "Bad Request (empty Contact URI)")
        changes.append((uri, expires_value(params.get("expires"), default)))
    return RegisterRequest(aor, tuple(changes), False)


def to_uri(value: str) -> str:
    value = value.strip()
    lt = value.find("<")
    if lt >= 0:
        return value[lt + 1:value.find(">", lt)]
    return value.split(";", 1)[0]


def decode(value: Optional[bytes], now: float) -> list[tuple[int, str]]:
    """Live bindings of a stored value, as (expiry, URI)."""
    out = []
    for line in (value or b"").decode("utf-8", "surrogateescape").split("\n"):
        expiry, _, uri = line.partition(" ")
        if expiry.isdigit() and int(expiry) > now and uri:
            out.append((int(expiry), uri))
    return out


def encode(bindings: list[tuple[int, str]]) -> Optional[bytes]:
    if not bindings:
        return None
    return "\n".join(f"{expiry} {uri}" for expiry, uri in bindings).encode("utf-8", "surrogateescape")


def merger(request: RegisterRequest, now: float) -> Callable[[Optional[bytes]], Optional[bytes]]:
    """The pure update function applying ``request`` to a stored binding set."""
    def merge(old: Optional[bytes]) -> Optional[bytes]:
        if request.wildcard:
            return None
        bindings = decode(old, now)
        for uri, expires in request.changes:
            bindings = [b for b in bindings if b[1] != uri]
            if expires > 0:
                bindings.append((int(now) + expires, uri))
        return encode(bindings)
    return merge


# TTL of a binding record: no binding outlives MAX_EXPIRES, so the record need not either.
RECORD_TTL = float(MAX_EXPIRES + 1)


def contact_headers(value: Optional[bytes], now: float) -> list[str]:
    return [f"<{uri}>;expires={max(0, expiry - int(now))}" for expiry, uri in decode(value, now)]


def first_binding(value: bytes, now: float) -> Optional[str]:
    live = decode(value, now)
    return live[0][1] if live else None
