"""One connection's OSS requests: read a request, check it (framing, address, route, injected
faults, STS token, signature), run the operation and send its answer or OSS's error document.

Why it exists: the HTTP plumbing between a socket and the operations (``ops_*``), kept apart from
the emulator's life cycle and settings (``server.py``), connection limits (``connections.py``),
request framing (``request_body.py``), routing (``routing.py``) and writing (``response.py``).
"""
from __future__ import annotations

import base64
import json
import logging
import random
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Callable
from urllib.parse import parse_qsl

from .admin import ADMIN_PREFIX, admin_answer
from .auth import SignedRequest
from .connections import CappedHTTPServer
from .faults import FAIL_CODE_MIXED, FAIL_CODES, Faults, Throttle
from .ops import Ctx, Resp
from .request_body import BodyReader, MalformedRequest, content_length
from .response import head_block, response_length, write_bytes, write_file
from .routing import address, route
from . import s3compat
from .xmlout import OssError, error_xml

if TYPE_CHECKING:
    from .server import Emulator

log = logging.getLogger(__name__)

_DRAIN_LIMIT = 64 << 20


class OssServer(CappedHTTPServer):
    """The emulator's HTTP server: ``OssRequestHandler`` for each connection, limits from ``emu``."""

    def __init__(self, addr: tuple[str, int], emu: Emulator) -> None:
        self.emu = emu
        super().__init__(addr, OssRequestHandler, max_connections=emu.max_connections,
                         idle_timeout=emu.idle_timeout, header_timeout=emu.header_timeout)


@dataclass
class _Request:
    """What routing made of a request; ``op`` stays "Invalid" when it could not be routed."""
    method: str
    headers: dict[str, str]
    op: str = "Invalid"
    bucket: str | None = None
    key: str = ""
    params: dict[str, str] = field(default_factory=dict)
    params_list: list[tuple[str, str]] = field(default_factory=list)
    fn: Callable[[Ctx], Resp] | None = None
    s3: tuple[str, dict[str, str]] | None = None    # an S3 request: its raw path and headers


class OssRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AliyunOSS"
    disable_nagle_algorithm = True
    rbufsize = 256 * 1024
    server: OssServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet by design
        return

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)
        self.server.track(self.connection, True)
        faults = self.server.emu._faults
        self.up = Throttle(faults)
        self.down = Throttle(faults)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def handle_one_request(self) -> None:
        self.server.mark(self.connection, "idle")
        super().handle_one_request()

    def parse_request(self) -> bool:
        self.server.mark(self.connection, "headers")     # the request line is in; headers follow
        return super().parse_request()

    def do_GET(self) -> None:
        self.server.mark(self.connection, "busy")
        self._dispatch()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    # ---- request -----------------------------------------------------------------------
    def _dispatch(self) -> None:
        emu = self.server.emu
        rid = secrets.token_hex(12).upper()
        raw_path, _, raw_query = self.path.partition("?")
        hdrs = {k.lower(): v for k, v in self.headers.items()}
        body, frame_error = self._body(hdrs)
        if raw_path.startswith(ADMIN_PREFIX):
            self._admin(raw_path, raw_query, body, rid)
            return
        faults = Faults(**asdict(emu._faults))
        s3 = s3compat.signed_for_s3(hdrs)
        req, pre_error = self._resolve(raw_path, raw_query, s3compat.oss_headers(hdrs) if s3 else hdrs)
        req.s3 = (raw_path, hdrs) if s3 else None
        pre_error = frame_error or pre_error or _unframed(req.method, hdrs)
        emu._stats.count(req.op)
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000.0)
        pre_error = _injected_failure(faults) or pre_error
        drop = faults.drop_rate > 0 and random.random() < faults.drop_rate
        if drop and req.method != "GET":
            emu._stats.done(req.op, req.method, req.bucket, req.key, 0, 0, 0)
            self._hard_close()
            return
        if pre_error is not None:
            resp: Resp | None = self._error(pre_error, rid, req.bucket, req.key)
        else:
            resp = self._answer(req, body, faults, rid)
        if resp is not None:
            self._reply(req, resp, body, rid, drop)

    def _body(self, hdrs: dict[str, str]) -> tuple[BodyReader, MalformedRequest | None]:
        """The request body's reader and the framing error to answer instead, if any (the
        connection then closes: where the next request starts is unknown)."""
        chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
        length, frame_error = None, None
        try:
            length = content_length(None if chunked else hdrs.get("content-length"))
        except MalformedRequest as e:
            frame_error, self.close_connection = e, True
        return BodyReader(self.rfile, length, chunked, self.up), frame_error

    def _resolve(self, raw_path: str, raw_query: str, hdrs: dict[str, str]) -> tuple[_Request, OssError | None]:
        req = _Request(self.command, hdrs)
        try:
            req.bucket, req.key = address(raw_path, hdrs.get("host", ""))
            req.params_list = parse_qsl(raw_query, keep_blank_values=True)
            req.params = dict(req.params_list)
            req.op, req.fn = route(self.server.emu._ops, req.method, req.bucket, req.key, req.params, hdrs)
        except OssError as e:
            return req, e
        return req, None

    def _answer(self, req: _Request, body: BodyReader, faults: Faults, rid: str) -> Resp | None:
        """Authenticate and run the operation; None when the connection broke (nothing to send)."""
        emu = self.server.emu
        try:
            if emu.sts is not None:
                emu.sts.check_oss(req.headers, req.params)
            if req.s3 is not None:
                s3compat.verify(emu._verifier, emu.s3_compat, req.method, req.s3[0],
                                req.params_list, req.s3[1])
                body = s3compat.checked_body(body, req.s3[1])
            else:
                emu._verifier.verify(SignedRequest(req.method, req.bucket, req.key, req.params_list,
                                                   req.headers))
            if faults.deny_writes and req.method not in ("GET", "HEAD"):
                raise OssError(403, "AccessDenied", "You have no right to access this object "
                               "because of bucket acl.")
            assert req.fn is not None
            return req.fn(Ctx(req.method, req.bucket, req.key, req.params, req.headers, body,
                              req.headers.get("host", ""), s3=req.s3 is not None))
        except OssError as e:
            if isinstance(e, MalformedRequest):
                self.close_connection = True
            return self._error(e, rid, req.bucket, req.key)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
            return None
        except Exception:  # pragma: no cover - logged, answered as OSS would
            log.exception("emulator: %s %s failed", req.method, req.op)
            return self._error(OssError(500, "InternalError", "We encountered an internal error."),
                               rid, req.bucket, req.key)

    def _reply(self, req: _Request, resp: Resp, body: BodyReader, rid: str, drop: bool) -> None:
        """Drain what the operation left of the body (or close), send ``resp``, count it."""
        try:
            if self.close_connection or not body.drain(_DRAIN_LIMIT):
                self.close_connection = True
        except (ConnectionError, ValueError, OSError, OssError):
            self.close_connection = True
        if req.s3 is not None:
            resp.headers = s3compat.s3_headers(resp.headers)
        sent = 0
        try:
            sent = self._send(resp, rid, head=(req.method == "HEAD"), drop=drop)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if resp.file is not None:
                resp.file[0].close()
            self.server.emu._stats.done(req.op, req.method, req.bucket, req.key, resp.status, sent, body.received)

    def _error(self, e: OssError, rid: str, bucket: str | None, key: str) -> Resp:
        if e.status == 304:
            return Resp(304, list(e.headers.items()))
        if bucket and key and e.code in ("NoSuchKey",) and "Key" not in e.extra:
            e.extra["Key"] = key
        host = f"{bucket}.{self.server.emu.host}" if bucket else self.server.emu.host
        body = error_xml(e, rid, host)
        h = [("Content-Type", "application/xml")] + list(e.headers.items())
        if "EC" in e.extra:
            h.append(("x-oss-ec", e.extra["EC"]))
        if self.command == "HEAD":
            h.append(("x-oss-err", base64.b64encode(body).decode()))
            return Resp(e.status, h, b"", content_length=0)
        return Resp(e.status, h, body)

    # ---- response ----------------------------------------------------------------------
    def _hard_close(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, resp: Resp, rid: str, *, head: bool, drop: bool) -> int:
        """Send ``resp``; with ``drop``, only half its body, then cut the connection (the
        drop_rate fault). Body bytes sent."""
        length = response_length(resp, head)
        self.wfile.write(head_block(resp, rid, length, self.close_connection))
        if head or resp.status in (204, 304):
            return 0
        limit = length // 2 if drop else length
        if resp.file is None:
            sent = write_bytes(self.wfile, memoryview(resp.body)[:limit], self.down)
        else:
            obj, offset, _ = resp.file
            sent = write_file(self.wfile, self.connection, obj, offset, limit, self.down)
        if drop or sent < limit:
            self._hard_close()
        return sent

    # ---- admin -------------------------------------------------------------------------
    def _admin(self, path: str, query: str, body: BodyReader, rid: str) -> None:
        status, payload = admin_answer(self.server.emu, self.command, path, dict(parse_qsl(query)),
                                       self.client_address[0], self.headers.get("x-admin-token", ""))
        body.drain(1 << 20)
        data = json.dumps(payload).encode()
        self._send(Resp(status, [("Content-Type", "application/json")], data), rid,
                   head=self.command == "HEAD", drop=False)


def _injected_failure(faults: Faults) -> OssError | None:
    """The error a ``fail_rate`` fault answers this request with (before any effect), or None."""
    if faults.fail_rate > 0 and random.random() < faults.fail_rate:
        code = faults.fail_code
        if code == FAIL_CODE_MIXED or code not in FAIL_CODES:
            code = random.choice(sorted(FAIL_CODES))
        status, message = FAIL_CODES[code]
        return OssError(status, code, message)
    return None


def _unframed(method: str, hdrs: dict[str, str]) -> OssError | None:
    """A PUT or POST with neither Content-Length nor chunked encoding: 411 MissingContentLength,
    EC 0017-00000101 (help.aliyun.com/en/oss/user-guide/http-status-code-411: "The request does
    not use chunked encoding or does not contain a Content-Length header"; the EC's page,
    help.aliyun.com/zh/oss/support/0017-00000101, says it of any OSS API request lacking the
    header). Neither page spares a request without a body (CopyObject, PutSymlink,
    InitiateMultipartUpload), so the stricter reading is modelled: every PUT and POST frames
    its body, also an empty one (``Content-Length: 0``, as oss2 and ``store.transport`` send).
    The one place this is checked: the operations never see an unframed body."""
    if method not in ("PUT", "POST") or "content-length" in hdrs or \
            "chunked" in hdrs.get("transfer-encoding", "").lower():
        return None
    return OssError(411, "MissingContentLength", "You must provide the Content-Length HTTP header.",
                    EC="0017-00000101")
