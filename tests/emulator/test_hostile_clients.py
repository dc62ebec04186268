"""Clients that send malformed or unfinished requests (issue 13 items 9 and 10).

Each malformed request gets the 4xx answer OSS gives (or the answer OSS documents, see the
comments in ossencfs/emulator/request_body.py, connections.py and ops_base.py) and never a 500,
a hang or a silent close; connections that hold the server with unfinished headers cannot stop
other clients from being served.
"""
from __future__ import annotations

import resource
import socket
import subprocess
import sys

import oss2
import pytest

from .conftest import AK, SK, BUCKET, raw
from .test_faults_and_persistence import ROOT

TIMEOUT = 30      # socket timeout of the raw clients: an answer that never comes fails the test


def _signed(emu, method: str, key: str, headers: dict | None = None) -> bytes:
    """The request line and headers of a request signed by oss2 (V1), without the final blank line."""
    req = oss2.http.Request(method, f"{emu.endpoint}/{BUCKET}/{key}", headers=dict(headers or {}), params={})
    oss2.Auth(AK, SK)._sign_request(req, BUCKET, key)
    lines = [f"{method} /{BUCKET}/{key} HTTP/1.1", f"Host: 127.0.0.1:{emu.port}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items()]
    return ("\r\n".join(lines) + "\r\n").encode()


def _exchange(emu, data: bytes) -> tuple[int, bytes]:
    """Send raw bytes; (status, everything the server sent until it closed)."""
    with socket.create_connection(("127.0.0.1", emu.port), timeout=TIMEOUT) as s:
        s.sendall(data)
        got = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            got += part
    assert got.startswith(b"HTTP/1.1 "), got[:200]
    return int(got.split(b" ", 2)[1]), got


def test_range_with_5000_digits_is_an_out_of_range_range(emu, bucket):
    bucket.put_object("r", b"0123456789")
    huge = "9" * 5000
    r = raw(emu, "GET", BUCKET, "r", headers={"Range": f"bytes={huge}-"})
    assert r.status_code == 200 and r.content == b"0123456789"         # ignored, as OSS does
    r = raw(emu, "GET", BUCKET, "r", headers={"Range": f"bytes=2-{huge}"})
    assert r.status_code == 200 and r.content == b"0123456789"
    r = raw(emu, "GET", BUCKET, "r", headers={"Range": f"bytes={huge}-", "x-oss-range-behavior": "standard"})
    assert r.status_code == 416 and b"InvalidRange" in r.content
    r = raw(emu, "GET", BUCKET, "r", headers={"Range": f"bytes=2-{huge}", "x-oss-range-behavior": "standard"})
    assert r.status_code == 206 and r.content == b"23456789"
    r = raw(emu, "GET", BUCKET, "r", headers={"Range": f"bytes=-{huge}", "x-oss-range-behavior": "standard"})
    assert r.status_code == 206 and r.content == b"0123456789"
    r = raw(emu, "GET", BUCKET, "r", headers={"Range": "bytes=000-002"})
    assert r.status_code == 206 and r.content == b"012"


@pytest.mark.parametrize("chunks", [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXY0\r\n\r\n", b"-1\r\n\r\n"],
                         ids=["size-zz", "no-crlf-after-data", "negative-size"])
def test_malformed_chunked_body_is_answered_400(emu, bucket, chunks):
    head = _signed(emu, "PUT", "chunky", {"Transfer-Encoding": "chunked"})
    status, got = _exchange(emu, head + b"\r\n" + chunks)
    assert status == 400 and b"<Code>InvalidArgument</Code>" in got and b"chunked" in got
    assert not bucket.object_exists("chunky")


@pytest.mark.parametrize("value", ["-1", "+5", "abc", "1e3", "9" * 40])
def test_content_length_that_is_not_an_integer_is_answered_400(emu, bucket, value):
    head = _signed(emu, "PUT", "cl", {"Content-Length": value})
    status, got = _exchange(emu, head + b"\r\nxyz")
    assert status == 400 and b"Content-Length is not a valid integer" in got
    assert b"x-oss-ec: 0017-00000103" in got
    assert not bucket.object_exists("cl")


def _start_limited(data_dir: str, nofile: int) -> tuple[subprocess.Popen, int]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    p = subprocess.Popen([sys.executable, "-m", "ossencfs", "emulator", "--data", data_dir, "--port", "0",
                          "--access-key-id", AK, "--access-key-secret", SK, "--bucket", BUCKET, "--no-fsync"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=limit)
    line = p.stdout.readline()
    assert line.startswith("OSS endpoint: http://127.0.0.1:"), (line, p.stderr.read() if p.poll() is not None else "")
    return p, int(line.rsplit(":", 1)[1])


def test_unfinished_headers_on_300_connections_do_not_starve_other_clients(tmp_path):
    p, port = _start_limited(str(tmp_path / "emu"), 256)
    hogs: list[socket.socket] = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            s.sendall(f"GET /{BUCKET}/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode())
            hogs.append(s)
        b = oss2.Bucket(oss2.Auth(AK, SK), f"http://127.0.0.1:{port}", BUCKET, connect_timeout=TIMEOUT)
        for i in range(5):
            b.put_object(f"served-{i}", b"still served")
            assert b.get_object(f"served-{i}").read() == b"still served"
        # the hogs were closed (evicted at the cap, or after the header timeout), not served
        closed = 0
        for s in hogs:
            try:
                s.settimeout(TIMEOUT)
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(hogs)
    finally:
        for s in hogs:
            s.close()
        p.terminate()
        assert p.wait(timeout=30) == 0
        err = p.stderr.read()
        assert "Traceback" not in err, err


@pytest.mark.parametrize("headers", [{}, {"x-oss-copy-source": f"/{BUCKET}/src"}], ids=["put", "copy"])
def test_put_without_content_length_or_chunked_is_answered_411(emu, bucket, headers):
    """Even without a body (the stricter reading of OSS's 411 page, see ``_unframed``); the
    same request with ``Content-Length: 0`` is served."""
    bucket.put_object("src", b"source")
    head = _signed(emu, "PUT", "dst", {**headers, "Connection": "close"})
    status, got = _exchange(emu, head + b"\r\n")
    assert status == 411 and b"<Code>MissingContentLength</Code>" in got and b"<EC>0017-00000101</EC>" in got
    assert not bucket.object_exists("dst")
    head = _signed(emu, "PUT", "dst", {**headers, "Connection": "close", "Content-Length": "0"})
    status, got = _exchange(emu, head + b"\r\n")
    assert status == 200, got[:300]
    assert bucket.get_object("dst").read() == (b"source" if headers else b"")
