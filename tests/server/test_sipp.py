"""SIPp (Debian sip-tester, a tool nobody here wrote) drives `harness serve`."""
from __future__ import annotations

from tests.server.sipp_run import run_sipp
from tests.support import running_server


def test_sipp_uac_against_two_workers_with_lmdb(tmp_path):
    with running_server("lmdb", workers=2) as srv:
        stats = run_sipp("uac", f"127.0.0.1:{srv['port']}", tmp_path, transport="tn", rate=50, calls=200)
        assert srv["proc"].poll() is None
    assert stats.get("SuccessfulCall(C)") == "200", stats
    assert stats.get("FailedCall(C)") == "0", stats
    assert stats["exit_code"] == 0, stats["stderr"]
