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
a sized body gets ``Content-Length`` (also 0: a PUT or POST without a body too, OSS answers
411 MissingContentLength without one), an iterable of unknown length goes chunked; no
retries in the transport (``calls`` retries); ``(connect, read)`` timeouts; TLS verified
against ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` or certifi's bundle; repeated answer
headers joined with ", ". Environment proxies: when one applies to the endpoint (requests'
rules, ``NO_PROXY`` honoured), the bucket keeps the requests session (``direct_session``
returns None) rather than re-implement proxy tunnelling. Failures are raised as oss2 raises
them (``RequestError`` wrapping urllib3's exception), which ``failures.classify`` maps.

One difference on purpose: a redirect is not followed. ``requests`` followed it, re-sending
a request signed for one resource to another, a 301 PUT without its body, and a 302 PUT as a
GET, whose answer oss2 took for the upload's (an upload reported done that never happened).
A 3xx is now an error naming where it pointed (``failures``). OSS does not redirect API
requests: a wrong endpoint gets 403 AccessDenied ("The bucket you are attempting to access must
be addressed using the specified endpoint", help/en/oss/support/http-status-code-403).
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Protocol

import oss2.http
import urllib3
from oss2.exceptions import RequestError
from requests.models import RequestEncodingMixin
from requests.structures import CaseInsensitiveDict
from requests.utils import (DEFAULT_CA_BUNDLE_PATH, get_environ_proxies, requote_uri, select_proxy,
                            super_len)

from ..errors import OssEncError

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
        # a plain case-insensitive dict, repeated headers joined (urllib3's lists each value
        # apart in items()), as requests builds it
        self.headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(raw.headers)

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        """The body in pieces of up to ``chunk_size`` bytes (decoded as requests would)."""
        return self.raw.stream(chunk_size, decode_content=True)

    def close(self) -> None:
        """Give the connection back: kept for reuse when the body was read to its end,
        closed otherwise (requests' ``Response.close``)."""
        self.raw.close()
        self.raw.release_conn()


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
        if "Content-Length" not in req.headers:          # oss2's dict: case-insensitive
            if body is not None:
                size = super_len(body)
                if size or not _is_stream(body):
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
        return oss2.http.Response(Reply(raw))


def _is_stream(body: object) -> bool:
    """requests' test: an iterable that is not a string or a container is sent as it comes."""
    return hasattr(body, "__iter__") and not isinstance(body, (str, bytes, bytearray, list,
                                                                 tuple, Mapping))


def direct_session(endpoint: str, pool_size: int) -> DirectSession | None:
    """The session for a bucket at ``endpoint`` (a URL), or None when the environment routes
    it through a proxy (the bucket then keeps oss2's requests session). Settings are read once,
    here: ``requests`` would read them again for every request. OssEncError when the CA bundle
    the environment names does not exist (a configuration mistake, not a network outage to
    retry)."""
    url = endpoint if "://" in endpoint else f"http://{endpoint}"     # oss2's default scheme
    if select_proxy(url, get_environ_proxies(url)):
        return None
    named = [v for v in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if os.environ.get(v)]
    ca_bundle = os.environ[named[0]] if named else DEFAULT_CA_BUNDLE_PATH
    if not os.path.exists(ca_bundle):
        raise OssEncError(f"TLS CA bundle not found: {ca_bundle}"
                          + (f" (from {named[0]})" if named else ""))
    return DirectSession(pool_size, ca_bundle)
