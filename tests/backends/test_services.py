"""harness.services with real redis-server and memcached, and what is specific to the
redis, memcached and ultradict backends (the shared contract is in test_contract.py)."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import redis as redis_py

import backends
from backends.base import ConfigError, StoreFull, StoreUnavailable
from harness import services
from harness.errors import EXIT_MISSING, InvalidInput, MissingBinary
from harness.services import ServiceError, start_service
from tests.support import ROOT, harness_cmd


def listening(pid: int, kind: str = "inet") -> list:
    return [c for c in psutil.Process(pid).net_connections(kind=kind)
            if c.status in (psutil.CONN_LISTEN, psutil.CONN_NONE)]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---- redis-server ----------------------------------------------------------------------
def test_redis_on_loopback_with_protected_mode_and_fsync_always(tmp_path: Path) -> None:
    svc = start_service("redis", tmp_path, fsync=True, memory_mb=32)
    try:
        assert svc.host == "127.0.0.1" and svc.port and svc.unix_path is None
        assert {c.laddr.ip for c in listening(svc.pid)} == {"127.0.0.1"}
        client = redis_py.Redis(host=svc.host, port=svc.port)
        conf = {k: client.config_get(k)[k] for k in
                ("protected-mode", "save", "appendonly", "appendfsync", "maxmemory", "maxmemory-policy", "dir")}
        assert conf == {"protected-mode": "yes", "save": "", "appendonly": "yes", "appendfsync": "always",
                        "maxmemory": str(32 << 20), "maxmemory-policy": "noeviction", "dir": str(svc.directory)}
        assert stat.S_IMODE(svc.directory.stat().st_mode) == 0o700
        expected = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        assert f"v={svc.version} " in expected
        assert svc.describe()["fsync"] is True
        client.close()
    finally:
        svc.stop()
    assert gone(svc.pid) and not svc.directory.exists() and tmp_path.exists()
    svc.stop()  # idempotent


def test_redis_fsync_off_keeps_the_aof_but_not_the_flush(tmp_path: Path) -> None:
    with start_service("redis", tmp_path) as svc:
        client = redis_py.Redis(host=svc.host, port=svc.port)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("appendfsync")["appendfsync"] == "no"
        client.close()


def test_redis_on_a_unix_socket_opens_no_tcp_port(tmp_path: Path) -> None:
    with start_service("redis", tmp_path, unix=True) as svc:
        assert svc.port is None and svc.unix_path and listening(svc.pid) == []
        mode = os.stat(svc.unix_path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) & 0o077 == 0
        assert svc.store_options() == {"url": f"unix://{svc.unix_path}"}
        store = backends.create("redis", **svc.store_options())
        store.prepare()
        store.connect()
        assert store.add(b"k", b"v") and store.get(b"k") == b"v"
        store.close()
        store.destroy()


def test_a_service_that_dies_at_start_reports_its_log(tmp_path: Path, monkeypatch) -> None:
    broken = services.redis_config
    monkeypatch.setattr(services, "redis_config", lambda *a: broken(*a) + "no-such-directive yes\n")
    with pytest.raises(ServiceError, match=r"redis exited with status \d+ before it was ready; log: .*"
                                           r"no-such-directive"):
        start_service("redis", tmp_path)
    assert list(tmp_path.iterdir()) == []  # its private directory is removed too


def test_a_taken_port_is_retried_on_another(tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        ports = iter([taken, 0])
        real_free_port = services._free_port
        monkeypatch.setattr(services, "_free_port", lambda: next(ports) or real_free_port())
        with start_service("redis", tmp_path) as svc:
            assert svc.port != taken


def test_stop_kills_a_service_that_ignores_sigterm(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(services, "STOP_GRACE_S", 0.5)
    svc = start_service("memcached", tmp_path)
    os.kill(svc.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    started = time.monotonic()
    svc.stop()
    assert gone(svc.pid) and time.monotonic() - started < 10


# ---- memcached ----------------------------------------------------------------------------
def _stats_settings(host: str, port: int) -> dict[str, str]:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"stats settings\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            data += s.recv(65536)
    return {ln.split()[1].decode(): ln.split()[2].decode() for ln in data.splitlines() if ln.startswith(b"STAT")}


def test_memcached_on_loopback_without_udp_and_with_a_memory_cap(tmp_path: Path) -> None:
    with start_service("memcached", tmp_path, memory_mb=48) as svc:
        assert {c.laddr.ip for c in listening(svc.pid, "tcp")} == {"127.0.0.1"}
        assert listening(svc.pid, "udp") == []
        settings = _stats_settings(svc.host, svc.port)
        assert settings["udpport"] == "0" and settings["maxbytes"] == str(48 << 20)
        expected = subprocess.run(["memcached", "-V"], capture_output=True, text=True).stdout.split()[-1]
        assert svc.version == expected
        assert svc.store_options() == {"servers": [f"127.0.0.1:{svc.port}"]}


def test_memcached_on_a_unix_socket(tmp_path: Path) -> None:
    with start_service("memcached", tmp_path, unix=True) as svc:
        assert listening(svc.pid, "tcp") == []
        assert stat.S_IMODE(os.stat(svc.unix_path).st_mode) == 0o600
        store = backends.create("memcached", **svc.store_options())
        store.prepare()
        store.connect()
        assert store.add(b"k", b"v") and store.count() == 1
        store.close()
        store.destroy()


def test_memcached_refuses_fsync_and_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="memcached keeps nothing on disk"):
        start_service("memcached", tmp_path, fsync=True)
    with pytest.raises(InvalidInput, match="memory_mb 0: allowed"):
        start_service("redis", tmp_path, memory_mb=0)
    with pytest.raises(InvalidInput, match="unknown service 'postgres'; allowed: redis, memcached"):
        start_service("postgres", tmp_path)


def test_missing_binary_names_the_apt_package(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingBinary, match=r"^redis-server not found; install it with: "
                                            r"sudo apt-get install -y redis-server$"):
        start_service("redis", tmp_path)
    with pytest.raises(MissingBinary, match="apt-get install -y memcached$"):
        start_service("memcached", tmp_path)


def test_bench_store_without_redis_server_is_one_line_and_exit_3(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = subprocess.run(harness_cmd("bench-store", "--backend", "redis", "--ops", "10"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_MISSING
    assert proc.stderr.strip().splitlines() == [
        "harness bench-store: error: redis-server not found; install it with: sudo apt-get install -y redis-server"]


# ---- backend specifics ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["redis", "memcached"])
def test_prefixes_isolate_runs_on_one_server(name: str, service_options) -> None:
    opts = service_options(name)
    mine = backends.create(name, **opts)
    other = backends.create(name, **{**opts, "prefix": "other-" + opts["prefix"]})
    for store in (mine, other):
        store.prepare()
        store.connect()
    mine.put(b"a", b"1")
    mine.put(b"b", b"2")
    other.put(b"a", b"other")
    assert mine.count() == 2 and other.count() == 1 and mine.get(b"a") == b"1"
    mine.close()
    mine.destroy()
    assert other.count() == 1 and other.get(b"a") == b"other"
    other.close()
    other.destroy()


@pytest.mark.parametrize("name,option", [("redis", "url"), ("memcached", "servers")])
def test_a_user_server_means_no_service_is_started(name: str, option: str, service_options) -> None:
    assert backends.create(name).service == name
    assert backends.create(name, **service_options(name)).service is None


@pytest.mark.parametrize("options,fragment", [
    ({"url": "http://example.org"}, "option 'url'"), ({"timeout": "0"}, "option 'timeout'")])
def test_redis_bad_options(options: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        backends.create("redis", **options)


@pytest.mark.parametrize("options,fragment", [
    ({"servers": "localhost"}, "option 'servers'"), ({"servers": "h:99999"}, "option 'servers'"),
    ({"prefix": "has space"}, "option 'prefix'"), ({"fsync": "true"}, "option 'fsync'")])
def test_memcached_bad_options(options: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        backends.create("memcached", **options)


def test_redis_full_is_store_full_and_a_dead_server_is_unavailable(tmp_path: Path) -> None:
    svc = start_service("redis", tmp_path, memory_mb=1)
    store = backends.create("redis", **svc.store_options())
    store.prepare()
    store.connect()
    try:
        with pytest.raises(StoreFull, match="redis refused the write"):
            for i in range(100):
                store.put(b"big-%d" % i, b"x" * 100_000)
        assert store.get(b"big-0") in (None, b"x" * 100_000)  # reads still work when full
        assert store.delete(b"absent") is False
    finally:
        svc.stop()
    with pytest.raises(StoreUnavailable, match="redis"):
        store.get(b"k")
    store.close()


def test_memcached_dead_server_is_unavailable(tmp_path: Path) -> None:
    svc = start_service("memcached", tmp_path)
    store = backends.create("memcached", **svc.store_options())
    store.prepare()
    store.connect()
    store.put(b"k", b"v")
    svc.stop()
    with pytest.raises(StoreUnavailable, match="memcached"):
        store.get(b"k")
    store.close()


def test_memcached_key_mapping_is_one_to_one_and_legal() -> None:
    store = backends.create("memcached", servers="127.0.0.1:1", prefix="p:")
    keys = [b"plain", b"~plain", b"#x", b"with space", b"\x00", bytes(range(256)), b"k" * 248, b"k" * 249,
            b"k" * 2000, b"k" * 2001]
    mapped = [store.mkey(k) for k in keys]
    assert len(set(mapped)) == len(keys)
    assert store.mkey(b"plain") == b"p:plain"
    for m in mapped:
        assert len(m) <= 250 and all(0x21 <= c <= 0x7e for c in m), m


def test_ultradict_with_its_shared_lock_is_atomic_across_processes() -> None:
    """The contrast to the xfailed default: UltraDict(shared_lock=True) counts to 4 x 1500."""
    store = backends.create("ultradict", shared_lock=True)
    store.prepare()
    store.connect()
    store.put(b"counter", b"0")
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                store.connect()
                for _ in range(1500):
                    store.update(b"counter", lambda old: b"%d" % (int(old) + 1))
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitpid(pid, 0)[1] for pid in pids]
    try:
        assert codes == [0, 0, 0, 0] and store.get(b"counter") == b"6000"
    finally:
        store.close()
        store.destroy()
    assert not Path(f"/dev/shm/{store.segment_name}").exists()


def test_ultradict_connect_before_prepare_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="connect\\(\\) before prepare\\(\\)"):
        backends.create("ultradict").connect()
    with pytest.raises(ConfigError, match="option 'buffer_size'"):
        backends.create("ultradict", buffer_size="10")
