"""Driving SIPp (Debian package sip-tester) as an independent cross-check generator.

``run_sipp(cfg, transport)`` writes an XML scenario equivalent to the built-in
flow (invite: INVITE, optional 100/180, 200, ACK, pause for the hold time, BYE,
200; or register: REGISTER, 200) into a temporary directory, runs ``sipp`` as a
UAC at the configured rate, and turns its statistics into the result fields of
``harness load``:

* ``-trace_stat -stf stat.csv -fd 1``: cumulative and per-second call counts;
* ``-trace_rtt -rtt_freq 1``: every response time of the response-time
  partitions ``invite`` (INVITE sent -> 200) and ``bye`` (BYE sent -> 200), made
  with ``start_rtd``/``rtd`` attributes in the scenario.

SIPp measures from the actual send time, at 1 ms resolution, and cannot tell a
481 from another unexpected answer nor which worker answered: its latencies fill
both the corrected and the uncorrected fields, and status_481, status_5xx,
lost_dialogs and cross_worker_fraction stay None. SIPp cannot cross connections
(``-t tn`` is a connection per call, ``-t t1`` one for all).
"""
from __future__ import annotations

import csv
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from harness import metrics
from harness.errors import HarnessError, InvalidInput, MissingBinary
from harness.loadgen.config import LoadConfig

TRANSPORTS = ("tn", "t1")
_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="sipstate {name}">\n'
_VIA = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"
_INVITE_FLOW = """\
  <send retrans="500" start_rtd="invite"><![CDATA[
INVITE sip:service@[remote_ip]:[remote_port] SIP/2.0
{via}
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:service@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:sipp@[local_ip]:[local_port];transport=tcp>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="invite"/>
  <send><![CDATA[
ACK sip:service@[remote_ip]:[remote_port] SIP/2.0
{via}
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:service@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause milliseconds="{hold_ms}"/>
  <send retrans="500" start_rtd="bye"><![CDATA[
BYE sip:service@[remote_ip]:[remote_port] SIP/2.0
{via}
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]T[call_number]
To: <sip:service@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" rtd="bye"/>
"""
_REGISTER_FLOW = """\
  <send retrans="500" start_rtd="register"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
{via}
From: <sip:s[pid]u[call_number]@[remote_ip]:[remote_port]>;tag=[pid]T[call_number]
To: <sip:s[pid]u[call_number]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:s[pid]u[call_number]@[local_ip]:[local_port];transport=tcp>
Expires: 3600
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" rtd="register"/>
"""
_TAIL = ('  <ResponseTimeRepartition value="1, 2, 5, 10, 20, 50, 100, 200, 500, 1000"/>\n'
         '  <CallLengthRepartition value="1, 5, 10, 50, 100, 500, 1000, 5000"/>\n</scenario>\n')


def scenario_xml(flow: str, hold: float) -> str:
    """The SIPp scenario of one flow ("invite" or "register")."""
    body = _INVITE_FLOW if flow == "invite" else _REGISTER_FLOW
    return (_HEAD.format(name=flow) + body.format(via=_VIA, hold_ms=int(round(hold * 1000)))
            + _TAIL)


def sipp_binary() -> str:
    """Path of ``sipp``; MissingBinary naming the package sip-tester when absent."""
    path = shutil.which("sipp")
    if path is None:
        raise MissingBinary("sipp", "sip-tester")
    return path


def command(cfg: LoadConfig, scenario: Path, transport: str, workdir: Path) -> list[str]:
    """The sipp command line for ``cfg`` (rate, number of calls, timeouts, traces)."""
    calls = max(1, int(round(cfg.rate * (cfg.warmup + cfg.duration))))
    limit = cfg.warmup + cfg.duration + cfg.hold + 2 * cfg.timeout + 5
    return [sipp_binary(), "-sf", str(scenario), "-t", transport, "-i", "127.0.0.1",
            "-r", f"{cfg.rate:g}", "-rp", "1000", "-m", str(calls),
            "-timeout", f"{limit:.0f}s", "-recv_timeout", f"{int(cfg.timeout * 1000)}",
            "-max_socket", str(_max_sockets()), "-trace_stat", "-stf", str(workdir / "stat.csv"), "-fd", "1",
            "-trace_rtt", "-rtt_freq", "1", "-nostdin", "-trace_err",
            "-error_file", str(workdir / "errors.log"), f"{cfg.host}:{cfg.port}"]


def _max_sockets() -> int:
    """SIPp refuses to start unless -max_socket is below the open-files limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, min(50000, soft - 64))


def _flow_of(cfg: LoadConfig) -> str:
    flows = [name for name, _ in cfg.mix]
    if len(flows) != 1 or flows[0] not in ("invite", "register"):
        raise InvalidInput(f"--mix: the sipp generator runs one flow, invite or register; "
                           f"got {','.join(flows)}")
    return flows[0]


def run_sipp(cfg: LoadConfig, transport: str = "tn", live: bool = False,
             workdir: Optional[Path] = None) -> dict:
    """Run SIPp for ``cfg`` and return the result dict (``_histograms`` included)."""
    if transport not in TRANSPORTS:
        raise InvalidInput(f"--sipp-transport: {transport!r}; allowed: tn, t1")
    flow = _flow_of(cfg)
    if cfg.mode != "open" or cfg.rate <= 0:
        raise InvalidInput(f"--mode {cfg.mode} --rate {cfg.rate:g}: the sipp generator runs "
                           "an open loop at a rate > 0 only")
    with tempfile.TemporaryDirectory(prefix="sipstate-sipp-") as tmp:
        work = Path(workdir or tmp)
        os.chmod(work, 0o700)
        scenario = work / f"{flow}.xml"
        scenario.write_text(scenario_xml(flow, cfg.hold))
        cmd = command(cfg, scenario, transport, work)
        started = time.monotonic()
        with (work / "stderr.txt").open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err)
            cpu, status = _wait_cpu(proc)
        wall = time.monotonic() - started
        stderr = (work / "stderr.txt").read_text(errors="replace")
        stats = read_stats(work / "stat.csv")
        if not stats:
            raise HarnessError(f"sipp exited with {status} and wrote no statistics: "
                               f"{stderr.strip()[-300:] or 'no message'}")
        rtts = read_rtt(next(iter(sorted(work.glob("*_rtt.csv"))), None))
        return build_result(cfg, flow, transport, stats, rtts, cpu, wall, status)


def _wait_cpu(proc: subprocess.Popen) -> tuple[float, int]:
    """Wait for sipp; its CPU (user + system): /proc while alive, exact from wait4 at exit."""
    last = 0.0
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return max(last, usage.ru_utime + usage.ru_stime), proc.returncode
            try:
                last = metrics.cpu_seconds(proc.pid)
            except ProcessLookupError:
                pass
            time.sleep(0.1)
    finally:
        if proc.returncode is None:  # interrupted: never leave sipp behind
            proc.kill()
            proc.wait()


def read_stats(path: Path) -> list[dict]:
    """Rows of SIPp's -trace_stat CSV (';'-separated, header first) as dicts."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f, delimiter=";") if row.get("ElapsedTime(C)")]


def read_rtt(path: Optional[Path]) -> list[tuple[float, float, str]]:
    """(time since start in s, response time in s, partition) from SIPp's -trace_rtt CSV."""
    if path is None:
        return []
    out = []
    for line in path.read_text().splitlines()[1:]:
        parts = line.split(";")
        if len(parts) >= 3:
            try:
                out.append((float(parts[0]) / 1000, float(parts[1]) / 1000, parts[2].strip()))
            except ValueError:
                continue
    return out


def _seconds(hms: str) -> float:
    parts = [float(p) for p in hms.split(":")]
    total = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return total + (parts[3] / 1e6 if len(parts) > 3 else 0.0)


def _int(row: dict, key: str) -> int:
    try:
        return int(float(row.get(key) or 0))
    except ValueError:
        return 0


def build_result(cfg: LoadConfig, flow: str, transport: str, stats: list[dict],
                 rtts: list, cpu: float, wall: float, status: int) -> dict:
    """Map SIPp's statistics onto the load result fields (None where SIPp cannot tell)."""
    from harness.loadgen.result import latency_fields

    last = stats[-1]
    warm = [r for r in stats if _seconds(r["ElapsedTime(C)"]) <= cfg.warmup] if cfg.warmup else []
    base = warm[-1] if warm else {}
    created = _int(last, "OutgoingCall(C)") - _int(base, "OutgoingCall(C)")
    ok = _int(last, "SuccessfulCall(C)") - _int(base, "SuccessfulCall(C)")
    failed = _int(last, "FailedCall(C)") - _int(base, "FailedCall(C)")
    hists = {t: metrics.new_histogram() for t in ("invite", "bye", "register")}
    series = metrics.TimeSeries()
    final = "bye" if flow == "invite" else "register"
    for at, rtt, part in rtts:  # a call completes with its last 200 ("bye" / "register")
        if at >= cfg.warmup and part in hists:
            metrics.record_us(hists[part], rtt)
            second = int(at - cfg.warmup)
            if part == flow:
                series.completed(second, rtt, count=int(part == final))
            elif part == final:
                series.completed(second, None)
    for row in stats:
        at = _seconds(row["ElapsedTime(C)"])
        for _ in range(_int(row, "FailedCall(P)") if at > cfg.warmup else 0):
            series.failed(max(0, int(at - cfg.warmup) - 1))
    hists = {t: h for t, h in hists.items() if h.get_total_count()}
    cpu_share = cpu / wall if wall > 0 else None
    rate = float(last.get("CallRate(C)") or 0)
    reasons = []
    if cpu_share is not None and cpu_share > 0.9:
        reasons.append(f"sipp CPU {cpu_share:.0%} of its core > 90%")
    if created and rate < 0.9 * cfg.rate:
        reasons.append(f"sipp call rate {rate:.0f}/s < 90% of {cfg.rate:g}/s")
    res = {
        "generator": f"sipp-{transport}", "mode": "open", "rate_target": cfg.rate,
        "duration_s": cfg.duration, "calls_attempted": created, "calls_completed": ok,
        "calls_failed": failed, "throughput_cps": round(ok / cfg.duration, 3),
        **latency_fields(hists, "invite"),
        "bye_p50_ms": latency_fields(hists, "bye")["bye_p50_ms"],
        "bye_p99_ms": latency_fields(hists, "bye")["bye_p99_ms"],
        "status_481": None, "status_5xx": None,
        "timeouts": _int(last, "FailedTimeoutOnRecv(C)") - _int(base, "FailedTimeoutOnRecv(C)"),
        "lost_dialogs": None, "cross_worker_fraction": None,
        "cpu_loadgen_s": round(cpu, 4), "generator_saturated": bool(reasons),
    }
    inv_rtts = [rtt for at, rtt, part in rtts if part == "invite" and at >= cfg.warmup]
    # The mean of 1 ms-quantised samples stays unbiased where the median cannot.
    res["invite_mean_ms"] = round(1000 * sum(inv_rtts) / len(inv_rtts), 3) if inv_rtts else None
    res.update(latency_fields(hists, "invite", "_uncorrected"))
    res.update(latency_fields(hists, "register"))
    res.update({
        "schedule_lag_p99_ms": None, "schedule_lag_max_ms": None, "loop_lag_max_ms": None,
        "cpu_loadgen_total_s": round(cpu, 4), "cpu_loadgen_share": cpu_share and round(cpu_share, 4),
        "cpu_us_per_call_loadgen": round(cpu * 1e6 / ok, 1) if ok else None,
        "saturation_reasons": reasons, "latency_basis": "send time, 1 ms resolution",
        "sipp_exit_status": status, "sipp_call_rate": rate,
        "sipp_failed_unexpected": _int(last, "FailedUnexpectedMessage(C)"),
        "procs": 1, "connections": None, "warmup_s": cfg.warmup, "hold_s": cfg.hold,
        "cross_connection": 0.0, "target": f"{cfg.host}:{cfg.port}", "mix": {flow: 1.0},
        "timeseries": metrics.TimeSeries.merge_exports([series.export()]),
        "_histograms": hists,
    })
    return res
