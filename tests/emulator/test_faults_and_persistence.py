"""Fault injection, counters, the CLI, restarts, crash safety and concurrent writers."""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import oss2
import pytest
import requests
from oss2.models import PartInfo

from ossencfs.emulator.server import Emulator
from .conftest import AK, SK, BUCKET, expect_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_fail_rate_answers_503_without_effect(emu, bucket):
    emu.set_faults(fail_rate=1.0)
    with expect_error(503, "ServiceUnavailable"):
        bucket.put_object("f", b"x")
    with expect_error(503, "ServiceUnavailable"):
        bucket.delete_object("f")
    emu.set_faults(fail_rate=0.0)
    assert not bucket.object_exists("f")
    bucket.put_object("f", b"x")
    assert bucket.get_object("f").read() == b"x"


def test_admin_endpoint_changes_faults(emu, bucket):
    r = requests.post(f"{emu.endpoint}/-/admin/faults", params={"fail_rate": "1", "latency_ms": "1"}, headers=emu.admin_headers)
    assert r.status_code == 200 and r.json()["fail_rate"] == 1.0 and r.json()["latency_ms"] == 1.0
    assert emu.faults["fail_rate"] == 1.0
    with expect_error(503, "ServiceUnavailable"):
        bucket.get_bucket_info()
    requests.post(f"{emu.endpoint}/-/admin/faults", params={"fail_rate": "0", "latency_ms": "0"}, headers=emu.admin_headers)
    assert requests.get(f"{emu.endpoint}/-/admin/faults", headers=emu.admin_headers).json()["fail_rate"] == 0.0
    bucket.get_bucket_info()
    assert requests.post(f"{emu.endpoint}/-/admin/faults", params={"fail_rate": "2"}, headers=emu.admin_headers).status_code == 400
    assert requests.get(f"{emu.endpoint}/-/admin/nothing", headers=emu.admin_headers).status_code == 404


def test_admin_endpoint_needs_the_admin_token(emu, bucket):
    """Issue 13 item 11: an unsigned request from any local user must not switch on faults."""
    for headers in ({}, {"X-Admin-Token": "guess"}, {"X-Admin-Token": emu.admin_token[:-1]}):
        r = requests.post(f"{emu.endpoint}/-/admin/faults", params={"fail_rate": "1"}, headers=headers)
        assert r.status_code == 403, r.text
        assert "X-Admin-Token" in r.json()["error"]
        assert requests.get(f"{emu.endpoint}/-/admin/stats", headers=headers).status_code == 403
    assert emu.faults["fail_rate"] == 0.0
    bucket.put_object("still-served", b"x")
    path = os.path.join(emu.data_dir, "admin-token")
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as f:
        assert f.read().strip() == emu.admin_token


def test_drop_rate_closes_mid_response(emu, bucket):
    bucket.put_object("big", b"q" * 200000)
    emu.set_faults(drop_rate=1.0)
    url = bucket.sign_url("GET", "big", 60)
    with pytest.raises(requests.exceptions.RequestException):
        r = requests.get(url)
        assert len(r.content) == 200000          # never reached: the body is cut short
    with pytest.raises(oss2.exceptions.RequestError):
        bucket.put_object("dropped", b"x")
    emu.set_faults(drop_rate=0.0)
    assert not bucket.object_exists("dropped")
    assert bucket.get_object("big").read() == b"q" * 200000


def test_bandwidth_cap_still_correct(emu, bucket):
    data = os.urandom(300000)
    emu.set_faults(bandwidth_mbps=200.0, latency_ms=5)
    bucket.put_object("bw", data)
    assert bucket.get_object("bw").read() == data
    assert bucket.get_object("bw", byte_range=(10, 99)).read() == data[10:100]


def test_stats_count_operations_and_bytes(emu, bucket):
    emu.reset_stats()
    bucket.put_object("s", b"12345")
    bucket.get_object("s").read()
    bucket.get_object("s", byte_range=(0, 1)).read()
    bucket.head_object("s")
    list(oss2.ObjectIteratorV2(bucket))
    # the log entry and byte counts are recorded once the response has gone out, which can be
    # a moment after the client has read it
    deadline = time.monotonic() + 5
    while len(emu.request_log) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    st = emu.stats
    assert st["requests"] == {"PutObject": 1, "GetObject": 2, "HeadObject": 1, "ListObjectsV2": 1}
    assert st["bytes_received"] == 5
    assert st["bytes_sent"] >= 5 + 2
    assert [e[1] for e in emu.request_log] == ["PutObject", "GetObject", "GetObject", "HeadObject", "ListObjectsV2"]
    assert requests.get(f"{emu.endpoint}/-/admin/stats", headers=emu.admin_headers).json()["requests"]["GetObject"] == 2


def test_restart_in_the_middle(tmp_path):
    data_dir = str(tmp_path / "data")
    creds = {AK: SK}
    with Emulator(data_dir, credentials=creds, buckets=[BUCKET]) as emu:
        port = emu.port
        b = oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, BUCKET)
        for i in range(20):
            b.put_object(f"k/{i:02d} é+", f"v{i}".encode(), headers={"x-oss-meta-i": str(i)})
        b.put_symlink("k/00 é+", "link")
        b.append_object("app", 0, b"ab")
        uid = b.init_multipart_upload("mp", headers={"x-oss-meta-from": "init"}).upload_id
        e1 = b.upload_part("mp", uid, 1, b"1" * (100 * 1024)).etag
    with Emulator(data_dir, credentials=creds, port=port) as emu2:    # same port: clients reconnect
        b2 = oss2.Bucket(oss2.Auth(AK, SK), emu2.endpoint, BUCKET)
        keys = [o.key for o in oss2.ObjectIteratorV2(b2)]
        assert keys == sorted([f"k/{i:02d} é+" for i in range(20)] + ["link", "app"])
        g = b2.get_object("k/07 é+")
        assert g.read() == b"v7" and g.headers["x-oss-meta-i"] == "7"
        assert b2.get_object("link").read() == b"v0"
        assert b2.append_object("app", 2, b"cd").next_position == 4
        e2 = b2.upload_part("mp", uid, 2, b"2").etag
        b2.complete_multipart_upload("mp", uid, [PartInfo(1, e1), PartInfo(2, e2)])
        assert b2.get_object("mp").read() == b"1" * (100 * 1024) + b"2"
        assert b2.head_object("mp").headers["x-oss-meta-from"] == "init"
        b.get_object("app").read()            # the old client object reconnects transparently


def _start_cli(data_dir: str, *extra: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "ossencfs", "emulator", "--data", data_dir, "--port", "0",
                          "--access-key-id", AK, "--access-key-secret", SK, "--bucket", BUCKET, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = p.stdout.readline()
    assert line.startswith("OSS endpoint: http://127.0.0.1:"), (line, p.stderr.read() if p.poll() is not None else "")
    return p, line.split(": ", 1)[1].strip()


def test_cli_runs_until_sigterm_and_data_persists(tmp_path):
    data_dir = str(tmp_path / "cli")
    p, endpoint = _start_cli(data_dir, "--bucket", "second-bucket")
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), endpoint, BUCKET)
        b.put_object("persist", b"across restarts")
        svc = oss2.Service(oss2.Auth(AK, SK), endpoint)
        assert [x.name for x in oss2.BucketIterator(svc)] == [BUCKET, "second-bucket"]
        assert requests.post(f"{endpoint}/-/admin/faults", params={"fail_rate": "1"}).status_code == 403
        token_file = os.path.join(data_dir, "admin-token")
        assert os.stat(token_file).st_mode & 0o777 == 0o600
        with open(token_file) as f:
            token = f.read().strip()
        r = requests.post(f"{endpoint}/-/admin/faults", params={"fail_rate": "1"}, headers={"X-Admin-Token": token})
        assert r.status_code == 200
        with expect_error(503, "ServiceUnavailable"):
            b.get_object("persist")
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
    p, endpoint = _start_cli(data_dir)
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), endpoint, BUCKET)
        assert b.get_object("persist").read() == b"across restarts"
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=20) == 0


def test_killed_mid_upload_leaves_nothing_visible(tmp_path):
    data_dir = str(tmp_path / "kill")
    p, endpoint = _start_cli(data_dir)
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), endpoint, BUCKET)
        b.put_object("half", b"old version")
        url = b.sign_url("PUT", "half", 60)
        path = url.split(endpoint, 1)[1]
        port = int(endpoint.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port))
        size = 8 << 20
        s.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n\r\n".encode())
        s.sendall(b"N" * (size // 2))
        url2 = b.sign_url("PUT", "never", 60)
        s2 = socket.create_connection(("127.0.0.1", port))
        s2.sendall(f"PUT {url2.split(endpoint, 1)[1]} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode())
        s2.sendall(b"n" * 50)
        assert b.get_object("half").read() == b"old version"
    finally:
        p.kill()
        p.wait(timeout=20)
    p, endpoint = _start_cli(data_dir)
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), endpoint, BUCKET)
        assert b.get_object("half").read() == b"old version"
        assert [o.key for o in oss2.ObjectIteratorV2(b)] == ["half"]
        assert os.listdir(os.path.join(data_dir, "oss", "tmp")) == []
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=20)


def test_kms_port(tmp_path):
    if not _kms_available():
        p = subprocess.run([sys.executable, "-m", "ossencfs", "emulator", "--data", str(tmp_path / "k"),
                            "--access-key-id", AK, "--access-key-secret", SK, "--kms-port", "0"],
                           capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert p.returncode == 1 and "KMS emulator" in p.stderr
        return
    with Emulator(str(tmp_path / "inproc"), credentials={AK: SK}, kms_port=0) as emu:
        assert emu.kms_endpoint and emu.kms_endpoint.startswith("http://127.0.0.1:")
        assert emu.kms_endpoint != emu.endpoint
        assert os.path.isdir(os.path.join(str(tmp_path / "inproc"), "kms"))
    p, _ = _start_cli(str(tmp_path / "cli"), "--kms-port", "0")
    try:
        assert p.stdout.readline().startswith("KMS endpoint: http://127.0.0.1:")
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0


def _kms_available() -> bool:
    try:
        import ossencfs.emulator.kms  # noqa: F401
        return True
    except ImportError:
        return False


def test_concurrent_writers_same_and_different_keys(emu, bucket):
    payloads = [bytes([i]) * (50000 + i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: bucket.put_object("same", payloads[i]), range(16)))
        list(pool.map(lambda i: bucket.put_object(f"diff/{i}", payloads[i]), range(16)))
        reads = list(pool.map(lambda i: bucket.get_object("same").read(), range(16)))
    final = bucket.get_object("same").read()
    assert final in payloads
    assert all(r in payloads for r in reads)
    h = bucket.head_object("same")
    assert h.content_length == len(final)
    for i in range(16):
        assert bucket.get_object(f"diff/{i}").read() == payloads[i]
    # forbid-overwrite race: exactly one creator wins
    results = []
    lock = threading.Lock()

    def create(i):
        try:
            bucket.put_object("once", payloads[i], headers={"x-oss-forbid-overwrite": "true"})
            ok = True
        except oss2.exceptions.ServerError as e:
            assert e.code == "FileAlreadyExists"
            ok = False
        with lock:
            results.append(ok)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(16)))
    assert results.count(True) == 1


def test_no_crc_mode_omits_header_and_sdk_accepts(tmp_path):
    data_dir = str(tmp_path / "nocrc")
    with Emulator(data_dir, credentials={AK: SK}, buckets=[BUCKET], crc=False) as emu:
        b = oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, BUCKET)
        r = b.put_object("k", b"no crc here")
        assert r.crc is None and "x-oss-hash-crc64ecma" not in r.headers
        big = os.urandom(3 << 20)                    # several chunks: the pipelined path
        assert b.put_object("big", big).etag == hashlib.md5(big).hexdigest().upper()
        assert b.get_object("big").read() == big
        b.get_object_to_file("k", str(tmp_path / "out"))
        assert (tmp_path / "out").read_bytes() == b"no crc here"
        uid = b.init_multipart_upload("mp").upload_id
        p1 = b.upload_part("mp", uid, 1, b"a" * (100 * 1024))
        p2 = b.upload_part("mp", uid, 2, b"b")
        res = b.complete_multipart_upload("mp", uid, [PartInfo(1, p1.etag), PartInfo(2, p2.etag)])
        assert res.crc is None
        assert b.append_object("ap", 0, b"x").crc is None
    with Emulator(data_dir, credentials={AK: SK}) as emu:      # CRC back on: old objects still readable
        b = oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, BUCKET)
        assert "x-oss-hash-crc64ecma" not in b.head_object("k").headers
        assert b.get_object("mp").read() == b"a" * (100 * 1024) + b"b"
        assert b.put_object("k2", b"123456789").crc == 11051210869376104954


def test_throttle_paces_to_the_configured_rate():
    from ossencfs.emulator.faults import Faults, Throttle
    now = [100.0]
    slept: list[float] = []

    def sleep(d: float) -> None:
        slept.append(d)
        now[0] += d
    faults = Faults(bandwidth_mbps=8.0)                 # 1,000,000 bytes/s
    t = Throttle(faults, sleep=sleep, clock=lambda: now[0])
    for _ in range(10):
        t.consume(100_000)
    assert abs(sum(slept) - 1.0) < 1e-9
    faults.bandwidth_mbps = 0.0                         # changed at run time: unlimited
    slept.clear()
    t.consume(10_000_000)
    assert slept == []
