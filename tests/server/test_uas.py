"""The UAS in-process on a real LocalStore: fuzzed input never raises and never
hits the 500 path; registrar expiry; odd bytes in Call-IDs and Contacts."""
from __future__ import annotations

import random
import time

import backends
from harness.server.config import ServerConfig
from harness.server.uas import Uas
from tests.server.sipclient import SDP, Dialog, request


def make_uas(**cfg) -> Uas:
    store = backends.create("local")
    store.prepare()
    store.connect()
    return Uas(ServerConfig(**cfg), store, 3, "127.0.0.1", 5060)


def test_fuzzed_messages_never_raise_nor_give_500():
    uas = make_uas()
    rng = random.Random(3261)
    seeds = [request(m, Dialog(), 5060, body=SDP if m == "INVITE" else "")
             for m in ("INVITE", "ACK", "BYE", "OPTIONS", "REGISTER", "CANCEL")]
    for _ in range(3000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(raw))
            action = rng.random()
            if action < 0.4:
                raw[pos] = rng.randrange(256)
            elif action < 0.7:
                del raw[pos:pos + rng.randint(1, 20)]
            else:
                raw[pos:pos] = rng.choice([b";", b",", b"<", b">", b"\r\n", b" ", b"\xff", b"\x00", b":"])
        out = uas.handle(bytes(raw))
        assert isinstance(out, bytes)
        if out:
            assert out.startswith(b"SIP/2.0 ")
            assert b"Server: sipstate (worker 3)" in out
    assert uas.stats["500"] == 0


def test_switches_for_100_and_180():
    dlg = Dialog()
    full = make_uas().handle(request("INVITE", dlg, 5060, body=SDP))
    assert [line.split(b" ")[1] for line in full.split(b"\r\n") if line.startswith(b"SIP/2.0")] == \
        [b"100", b"180", b"200"]
    bare = make_uas(send_100=False, send_180=False).handle(request("INVITE", Dialog(), 5060, body=SDP))
    assert bare.count(b"SIP/2.0 ") == 1 and bare.startswith(b"SIP/2.0 200 OK")


def test_non_ascii_call_id_and_contact_are_handled():
    uas = make_uas()
    dlg = Dialog(call_id="abc")
    raw = request("INVITE", dlg, 5060, body=SDP).replace(b"Call-ID: abc", b"Call-ID: ab\xffc")
    out = uas.handle(raw)
    # Not a valid callid (RFC 3261 word): a 400 that still copies the bytes back.
    assert out.startswith(b"SIP/2.0 400") and b"Call-ID: ab\xffc\r\n" in out
    reg = request("REGISTER", Dialog(user="bob"), 5060, uri="sip:127.0.0.1").replace(
        b"<sip:tester@127.0.0.1:5999;transport=tcp>", b"<sip:b\xe9b@10.0.0.9>;expires=60")
    out = uas.handle(reg)
    assert out.startswith(b"SIP/2.0 200 OK") and b"b\xe9b@10.0.0.9" in out
    assert uas.stats["500"] == 0


def test_expired_bindings_disappear():
    uas = make_uas()
    reg = request("REGISTER", Dialog(user="carol"), 5060, uri="sip:127.0.0.1").replace(
        b"<sip:tester@127.0.0.1:5999;transport=tcp>", b"<sip:carol@10.0.0.3>;expires=1")
    assert b"expires=1" in uas.handle(reg) or b"expires=0" in uas.handle(reg)
    inv = request("INVITE", Dialog(), 5060, to_user="carol", body=SDP)
    assert b"X-Target: sip:carol@10.0.0.3" in uas.handle(inv)
    time.sleep(2.1)
    inv = request("INVITE", Dialog(), 5060, to_user="carol", body=SDP)
    assert b"X-Target" not in uas.handle(inv)
