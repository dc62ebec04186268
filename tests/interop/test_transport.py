"""``store.transport``: oss2's requests sent with urllib3 directly reach OSS exactly as they did
through ``requests``, reuse their connections, and step aside for a proxy.

A recording HTTP server on loopback (real sockets, HTTP/1.1 keep-alive) captures what each
client sends; it answers every request with an empty 200 (oss2 may then fail to parse a result
it expected: only the request matters here)."""
from __future__ import annotations

import http.server
import threading
from typing import Any, Callable, Iterator

from pathlib import Path

import oss2
import pytest
import trio

from ossencfs.errors import OssEncError, StoreError
from ossencfs.store import ObjectStore
from ossencfs.store.session import cache_environment
from ossencfs.store.transport import DirectSession, direct_session
from tests.conftest import AK, BUCKET, SK

#: headers that differ between two runs of the same request (time, signature over it) or that
#: only ``requests`` adds and OSS ignores
_VARYING = {"date", "authorization", "accept", "connection", "host"}


class Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, tuple[tuple[str, str], ...], bytes]] = []
        self.connections = 0
        self.signed = True
        #: (status, extra headers) of the answers, instead of an empty 200
        self.answer: tuple[int, list[tuple[str, str]]] = (200, [])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def _any(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        headers = tuple(sorted((k.lower(), v) for k, v in self.headers.items()
                               if k.lower() not in _VARYING))
        self.server.signed &= self.headers.get("Authorization", "").startswith("OSS ")
        self.server.seen.append((self.command, self.path, headers, body))
        payload = b"" if self.command == "HEAD" else b"0123456789" * 10
        status, extra = self.server.answer
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("ETag", '"E"')
        self.send_header("x-oss-request-id", "R")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder(no_proxy_env: None) -> Iterator[Recorder]:
    server = Recorder()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _calls(b: oss2.Bucket) -> None:
    """Requests of every shape the store sends: bodies of bytes, of a file-like reader and
    none; query strings with and without values; keys that need quoting. oss2's CRC off, as
    on the store's bucket (its adapter would wrap every body)."""
    b.enable_crc = False
    def attempt(fn: Callable[[], object]) -> None:
        try:
            fn()
        except (oss2.exceptions.OssError, SyntaxError):
            pass                    # the recorder's answer is not what oss2 parses (XML)
    attempt(lambda: b.put_object("dir/a b+c%d/é.bin", b"x" * 1000,
                                 headers={"x-oss-meta-mode": "33188", "Content-Type": "text/x"}))
    attempt(lambda: b.put_object("empty", b""))
    attempt(lambda: b.put_object("lower", b"abc", headers={"content-length": "3"}))
    attempt(lambda: b.head_object("dir/a b+c%d/é.bin"))
    attempt(lambda: b.get_object("k", byte_range=(0, 99),
                                 headers={"x-oss-range-behavior": "standard"}).read())
    attempt(lambda: b.list_objects_v2(prefix="dir/ä &=?", delimiter="/", continuation_token="t/1",
                                      max_keys=1000))
    attempt(lambda: b.copy_object(BUCKET, "src key", "dst", headers={"x-oss-forbid-overwrite": "true"}))
    attempt(lambda: b.init_multipart_upload("mp"))
    attempt(lambda: b.upload_part("mp", "U1", 1, _Reader(b"p" * 5000)))
    attempt(lambda: b.upload_part("mp", "U1", 2, _Reader(b"")))
    attempt(lambda: b.batch_delete_objects(["a", "b c"]))
    attempt(lambda: b.put_symlink("target", "link"))
    attempt(lambda: b.delete_object("gone"))


class _Reader:
    """A sized body read as it is sent (like ``store.bodies.PartBody``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def read(self, n: int = -1) -> bytes:
        out, self.data = (self.data, b"") if n < 0 else (self.data[:n], self.data[n:])
        return out


def test_requests_reach_the_server_as_through_requests(recorder: Recorder) -> None:
    through_requests = oss2.Bucket(oss2.Auth(AK, SK), recorder.endpoint, BUCKET)
    cache_environment(through_requests)
    _calls(through_requests)
    expected, recorder.seen = recorder.seen, []
    direct = oss2.Bucket(oss2.Auth(AK, SK), recorder.endpoint, BUCKET,
                         session=direct_session(recorder.endpoint, 4))
    _calls(direct)
    assert len(expected) == 13
    assert recorder.seen == expected
    assert recorder.signed
    lengths = {(m, p.split("?")[0]): dict(h).get("content-length") for m, p, h, _ in expected}
    assert lengths[("PUT", f"/{BUCKET}/link")] == "0" and lengths[("POST", f"/{BUCKET}/mp")] == "0"


def test_connections_are_kept_and_reused(recorder: Recorder) -> None:
    b = oss2.Bucket(oss2.Auth(AK, SK), recorder.endpoint, BUCKET,
                    session=direct_session(recorder.endpoint, 4))
    for i in range(20):
        b.head_object(f"k{i}")
        assert b.get_object(f"k{i}").read() == b"0123456789" * 10
    assert recorder.connections == 1
    r = b.get_object("half")
    assert r.read(10) == b"0123456789"
    r.resp.response.close()          # body left unread: that connection cannot be reused
    b.head_object("after")
    assert recorder.connections == 2


def test_the_store_uses_it_unless_a_proxy_applies(recorder: Recorder,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = ObjectStore.connect(recorder.endpoint, BUCKET, AK, SK)
    assert isinstance(store.bucket.session, DirectSession)

    async def head() -> None:
        await store.head("k")
    trio.run(head)
    assert [m for m, *_ in recorder.seen] == ["HEAD"]
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert direct_session(recorder.endpoint, 4) is None      # requests honours the proxy
    assert not isinstance(ObjectStore.connect(recorder.endpoint, BUCKET, AK, SK).bucket.session,
                          DirectSession)
    assert direct_session("https://127.0.0.1:1", 4) is not None     # HTTP_PROXY: http only
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert isinstance(direct_session(recorder.endpoint, 4), DirectSession)


def test_answers_as_requests_shapes_them_and_redirects_are_refused(recorder: Recorder) -> None:
    store = ObjectStore.connect(recorder.endpoint, BUCKET, AK, SK, retries=1)
    recorder.answer = (200, [("x-oss-meta-a", "1"), ("x-oss-meta-a", "2")])

    async def main() -> None:
        info = await store.head("k")
        assert info is not None and info.headers["x-oss-meta-a"] == "1, 2"   # joined, not the last
        recorder.answer = (302, [("Location", "http://127.0.0.1:1/elsewhere")])
        recorder.seen.clear()
        with pytest.raises(StoreError, match="redirected to http://127.0.0.1:1/elsewhere"):
            await store.put("dir/f", b"data", {})
        # not followed (requests turned a 302 PUT into a GET and oss2 took its answer for the
        # upload's), and not retried
        assert [m for m, *_ in recorder.seen] == ["PUT"]
    trio.run(main)


def test_a_missing_ca_bundle_is_a_configuration_error(recorder: Recorder,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "nope.pem"))
    with pytest.raises(OssEncError, match=r"TLS CA bundle not found: .*nope.pem \(from REQUESTS_CA_BUNDLE\)"):
        ObjectStore.connect(recorder.endpoint, BUCKET, AK, SK)
