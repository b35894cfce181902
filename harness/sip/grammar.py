"""The pieces of the RFC 3261 §25 grammar that the parser enforces.

Header values reach these checks unfolded (continuation lines joined with one
space) and stripped. Patterns use possessive quantifiers (Python >= 3.11) where
alternatives could overlap, so matching stays linear even on hostile 8 KiB lines.
Each ``check_*`` returns None when the value is well formed, else a short
description of what is wrong.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]++"
_W = r"[ \t]*+"
_QUOTED = r'"(?:[^"\\]|\\.)*+"'
_PVALUE = r'[^ \t;,"<>]++'
_PARAMS = rf"(?:{_W};{_W}{TOKEN}(?:{_W}={_W}(?:{_QUOTED}|{_PVALUE}))?+)*+{_W}"
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*+"
_DISPLAY = rf"(?:{_QUOTED}|{TOKEN}(?:[ \t]++{TOKEN})*+){_W}"
_NAME_ADDR = rf"(?:{_DISPLAY})?+<{_SCHEME}:[^ \t<>\"]++>"
_ADDR_SPEC = rf"{_SCHEME}:[^ \t<>\";?,]++"
_HOST = r"(?:\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9\-.]++)"
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]++"

TOKEN_RE = re.compile(TOKEN)
ADDRESS_RE = re.compile(rf"(?:{_NAME_ADDR}|{_ADDR_SPEC}){_PARAMS}", re.S)
VIA_RE = re.compile(rf"SIP{_W}/{_W}[0-9]++\.[0-9]++{_W}/{_W}{TOKEN}[ \t]++{_HOST}"
                    rf"(?:{_W}:{_W}[0-9]{{1,5}})?+{_PARAMS}", re.S | re.I)
CSEQ_RE = re.compile(rf"([0-9]{{1,10}})[ \t]++({TOKEN})")
CALL_ID_RE = re.compile(rf"{_WORD}(?:@{_WORD})?+")
# Request-URI: scheme ":" then visible ASCII except the delimiters '"', '<' and '>'.
REQUEST_URI_RE = re.compile(rf"({_SCHEME}):[!#-;=?-~]++")
SIP_VERSION_RE = re.compile(r"SIP/[0-9]{1,4}\.[0-9]{1,4}", re.I)
TAG_RE = re.compile(r";[ \t]*+tag[ \t]*+=[ \t]*+([^ \t;,]++)", re.I)
BRANCH_RE = re.compile(r";[ \t]*+branch[ \t]*+=[ \t]*+([^ \t;,]++)", re.I)
CSEQ_MAX = 2**31 - 1  # RFC 3261 §8.1.1.5: "MUST be less than 2**31"


def check_address(value: str) -> Optional[str]:
    """From, To, Route, Record-Route: name-addr or addr-spec, then ;params."""
    if ADDRESS_RE.fullmatch(value):
        return None
    return "not a name-addr / addr-spec with parameters"


def check_contact(value: str) -> Optional[str]:
    """One Contact entry: '*' or an address."""
    return None if value == "*" else check_address(value)


def check_via(value: str) -> Optional[str]:
    """One Via entry: SIP/2.0/transport sent-by *(;param)."""
    return None if VIA_RE.fullmatch(value) else "not a via-parm"


def check_call_id(value: str) -> Optional[str]:
    return None if CALL_ID_RE.fullmatch(value) else "not a callid (word[@word])"


def check_cseq(value: str) -> Optional[str]:
    """CSeq: a number below 2**31, LWS, a method token."""
    match = CSEQ_RE.fullmatch(value)
    if match is None:
        return "not 'number method'"
    if int(match.group(1)) > CSEQ_MAX:
        return "sequence number not below 2**31"
    return None


def check_content_length(value: str) -> Optional[str]:
    return None if value.isascii() and value.isdigit() and len(value) <= 18 else "not a number"


CHECKS: dict[str, Callable[[str], Optional[str]]] = {
    "via": check_via, "from": check_address, "to": check_address, "contact": check_contact,
    "route": check_address, "record-route": check_address, "call-id": check_call_id,
    "cseq": check_cseq, "content-length": check_content_length,
}


def check_request_uri(uri: str) -> Optional[str]:
    """An absolute URI without LWS or angle brackets; sip/sips ones carry no ?headers
    (RFC 3261 §19.1.1: headers are not allowed in a Request-URI)."""
    match = REQUEST_URI_RE.fullmatch(uri)
    if match is None:
        return "Request-URI is not an absolute URI"
    if match.group(1).lower() in ("sip", "sips") and "?" in uri[uri.rfind("@") + 1:]:
        return "Request-URI carries escaped headers"
    return None


def address_params(value: str) -> str:
    """The header parameters of an address (what follows the URI), for tag lookups.

    In name-addr form they follow the '>' that closes the URI; in addr-spec form
    they start at the first ';' (RFC 3261 §20.10).
    """
    start = 0
    if value.startswith('"'):  # skip the quoted display name, which may hold '<' or ';'
        match = re.match(_QUOTED, value, re.S)
        start = match.end() if match else len(value)
    lt = value.find("<", start)
    if lt >= 0:
        gt = value.find(">", lt)
        return value[gt + 1:] if gt >= 0 else ""
    semi = value.find(";", start)
    return value[semi:] if semi >= 0 else ""


def tag_of(value: Optional[str]) -> Optional[str]:
    """The tag parameter of a From/To value, or None."""
    if not value or "tag" not in value.lower():
        return None
    match = TAG_RE.search(address_params(value))
    return match.group(1) if match else None


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value into stripped entries, keeping commas
    inside quoted strings and <...> URIs (e.g. '"Bell, A." <sip:a@b>')."""
    if '"' not in value and "<" not in value:
        return [part.strip(" \t") for part in value.split(",")]
    parts: list[str] = []
    start = 0
    quoted = angled = escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            escaped = ch == "\\"
            quoted = ch != '"'
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angled = True
        elif ch == ">":
            angled = False
        elif ch == "," and not angled:
            parts.append(value[start:i].strip(" \t"))
            start = i + 1
    parts.append(value[start:].strip(" \t"))
    return parts
