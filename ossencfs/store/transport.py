"""oss2's requests sent with urllib3 directly, not through ``requests``.

oss2 builds and signs every request and parses every answer; it hands the HTTP exchange to a
``Session`` object (``oss2.http.Session.do_request``, the SDK's documented way to bring one's
own: ``oss2.Bucket(..., session=...)``). Its own session goes through ``requests``, which
costs more client CPU than the exchange itself: per request it merges session settings,
consults the cookie jar twice, re-parses the URL, runs runtime ``Protocol`` checks and
builds a second response object. Measured against the emulator on this machine, one request's
client CPU (oss2 included, CRC off as ``calls.StoreBase`` sets it): HEAD 2.35 -> 1.33 ms,
GET of 1 KiB 2.23 -> 1.40 ms, PUT of 4 KiB 2.57 -> 1.41 ms. The mount is CPU-bound on many
small requests (a first ``ls -l`` sends one per entry), so this is most of their cost.

What ``requests`` would have done and this does the same way (so what reaches OSS is
unchanged): the query string is encoded by requests' own encoder and the URL re-quoted by
its ``requote_uri``; headers set to None are left out (oss2 sets ``Accept-Encoding: None``);
a sized body gets ``Content-Length`` (a PUT or POST without a body ``Content-Length: 0``:
OSS answers 411 MissingContentLength without one); no retries and no redirects are
followed by the transport (``calls`` retries; a redirect would need a new signature);
``(connect, read)`` timeouts; TLS verified against ``REQUESTS_CA_BUNDLE`` /
``CURL_CA_BUNDLE`` or certifi's bundle, as requests does. Environment proxies: when one
applies to the endpoint (requests' rules, ``NO_PROXY`` honoured), the bucket keeps the
requests session (``direct_session`` returns None) rather than re-implement proxy
tunnelling. Failures are raised as oss2 raises them (``RequestError`` wrapping urllib3's
exception), which ``failures.classify`` already maps.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Protocol

import oss2.http
import urllib3
from oss2.exceptions import RequestError
from requests.models import RequestEncodingMixin
from requests.utils import (DEFAULT_CA_BUNDLE_PATH, get_environ_proxies, requote_uri, select_proxy,
                            super_len)

_NO_BODY_METHODS = frozenset({"GET", "HEAD"})


class HttpReply(Protocol):
    """What the store reads of an answer (``r.resp.response`` of an oss2 result): the status,
    the headers (case-insensitive), the urllib3 response (``raw``) and ``close``. Both this
    module's ``Reply`` and ``requests.Response`` (a caller-made bucket) have it."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def raw(self) -> Any: ...
    def close(self) -> None: ...


class Reply:
    """An answer as oss2 reads it (``status_code``, ``headers``, ``iter_content``) over the
    urllib3 response."""
    __slots__ = ("raw", "status_code", "headers")

    def __init__(self, raw: urllib3.BaseHTTPResponse) -> None:
        self.raw = raw
        self.status_code = raw.status
        self.headers = raw.headers

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        """The body in pieces of up to ``chunk_size`` bytes (decoded as requests would)."""
        return self.raw.stream(chunk_size, decode_content=True)

    def close(self) -> None:
        """Give the connection back: kept for reuse when the body was read to its end,
        closed otherwise (requests' ``Response.close``)."""
        self.raw.close()
        self.raw.release_conn()


class Answer(oss2.http.Response):
    """``oss2.http.Response`` without its eager debug line: its ``__init__`` formats every
    answer's headers into a string for ``logger.debug`` whether or not DEBUG is on."""

    def __init__(self, reply: Reply) -> None:       # super().__init__ skipped on purpose
        self.response = reply
        self.status = reply.status_code
        self.headers = reply.headers
        self.request_id = reply.headers.get("x-oss-request-id", "")
        self._Response__all_read = False              # the name-mangled flag of its read()


class DirectSession(oss2.http.Session):
    """An oss2 session whose requests go out through one urllib3 pool manager."""

    def __init__(self, pool_size: int, ca_bundle: str) -> None:       # no requests.Session
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
        tls["ca_cert_dir" if os.path.isdir(ca_bundle) else "ca_certs"] = ca_bundle
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, block=False, **tls)

    def do_request(self, req: oss2.http.Request, timeout: Any) -> oss2.http.Response:
        """Send one request oss2 built and signed; its answer, body not yet read. oss2
        ``RequestError`` when no answer came (connection refused or reset, timeout)."""
        url = req.url
        if req.params:
            url += ("&" if "?" in url else "?") + RequestEncodingMixin._encode_params(req.params)
        headers = {k: v for k, v in req.headers.items() if v is not None}
        body = req.data
        if "Content-Length" not in headers:
            if body is not None:
                size = super_len(body)
                if size or isinstance(body, (bytes, bytearray, memoryview)):
                    headers["Content-Length"] = str(size)
                # else: an iterable of unknown length, sent chunked (as requests does)
            elif req.method not in _NO_BODY_METHODS:
                headers["Content-Length"] = "0"
        if isinstance(timeout, tuple):
            limits = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        else:
            limits = urllib3.Timeout(connect=timeout, read=timeout)
        try:
            raw = self.pool.urlopen(req.method, requote_uri(url), body=body, headers=headers,
                                    retries=False, redirect=False, preload_content=False,
                                    decode_content=False, timeout=limits)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RequestError(exc) from exc
        return Answer(Reply(raw))


def direct_session(endpoint: str, pool_size: int) -> DirectSession | None:
    """The session for a bucket at ``endpoint`` (a URL), or None when the environment routes
    it through a proxy (the bucket then keeps oss2's requests session). Settings are read once,
    here: ``requests`` would read them again for every request."""
    url = endpoint if "://" in endpoint else f"http://{endpoint}"     # oss2's default scheme
    if select_proxy(url, get_environ_proxies(url)):
        return None
    ca_bundle = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                 or DEFAULT_CA_BUNDLE_PATH)
    return DirectSession(pool_size, ca_bundle)
