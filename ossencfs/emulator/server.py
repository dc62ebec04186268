"""A local OSS server for tests and benchmarks: real HTTP, real signatures, data on disk.

``Emulator`` runs a threaded HTTP/1.1 keep-alive server in background threads. Bodies are
streamed (``os.sendfile`` for GET, large ``readinto`` for PUT), so the emulator is not what
limits a benchmark. Faults (latency before the first response byte, a per-connection bandwidth
cap in both directions, a fraction of requests answered 503 before any effect, a fraction of
connections dropped mid-response) can be changed while it runs, in-process with
``set_faults(...)`` or from another process through the admin endpoint:

    POST http://127.0.0.1:PORT/-/admin/faults?latency_ms=50&bandwidth_mbps=100&fail_rate=0.1&drop_rate=0
         (also fail_code=<503/429 Code or "mixed">, copy_limit=<bytes>, restore_seconds=<s>)
    GET  http://127.0.0.1:PORT/-/admin/faults        -> current faults (JSON)
    GET  http://127.0.0.1:PORT/-/admin/stats         -> request counters and byte counts (JSON)
    POST http://127.0.0.1:PORT/-/admin/stats/reset

The admin endpoint answers only loopback clients that send the emulator's admin token in an
``X-Admin-Token`` header; the token is made at start and written to ``DATA_DIR/admin-token``
(mode 0600, readable only by the emulator's user), so other local users cannot change faults.
It cannot collide with a bucket (bucket names never start with ``-``). ``bandwidth_mbps`` is in
megabits per second.
"""
from __future__ import annotations

import base64
import collections
import errno
import hmac
import ipaddress
import json
import logging
import os
import random
import re
import resource
import secrets
import select
import socket
import sys
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence
from urllib.parse import parse_qsl, unquote, unquote_to_bytes

from .auth import SUBRESOURCES, SignedRequest, Verifier
from .faults import FAIL_CODE_MIXED, FAIL_CODES, Faults, Stats, Throttle
from .ops import Ctx, Ops, Resp, valid_bucket_name
from .ops_base import DEFAULT_COPY_LIMIT, DEFAULT_RESTORE_SECONDS
from .storage import Storage
from .xmlout import OssError, error_xml, http_date

log = logging.getLogger(__name__)

_DRAIN_LIMIT = 64 << 20
# Connection hygiene (issue 13 item 9): a read or write that makes no progress for IDLE_TIMEOUT
# seconds (also an idle keep-alive connection) ends the connection; a request whose headers are
# not complete HEADER_TIMEOUT seconds after its request line is closed; at most max_connections
# are open (default: what the file limit allows), and a new one at the cap first evicts the
# connection that has waited longest for a request, so clients that send whole requests are served.
IDLE_TIMEOUT = 60.0
HEADER_TIMEOUT = 10.0
ADMIN_TOKEN_FILE = "admin-token"
_HANDLED = frozenset({"restore", "acl", "uploads", "location", "delete", "append", "position", "objectMeta", "uploadId",
                      "partNumber", "security-token", "symlink", "bucketInfo", "continuation-token",
                      "response-content-type", "response-content-language", "response-expires",
                      "response-cache-control", "response-content-disposition", "response-content-encoding"})
_REASONS = {200: "OK", 204: "No Content", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
            202: "Accepted", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            411: "Length Required", 412: "Precondition Failed", 416: "Requested Range Not Satisfiable",
            429: "Too Many Requests", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable"}


class MalformedRequest(OssError):
    """A request whose framing (Content-Length, chunk sizes) cannot be read: answered with a 400,
    then the connection is closed, since where the next request starts is unknown."""


# Content-Length that is not a decimal integer (negative, sign, junk): 400 InvalidArgument, error
# page 0017-00000103 ("Content-Length is not a valid integer").
_BAD_LENGTH = ("InvalidArgument", "Content-Length is not a valid integer.", "0017-00000103")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r?\n")


def content_length(value: str | None) -> int | None:
    """The request's Content-Length in bytes, None when absent; MalformedRequest when not 0..10^18."""
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", value.strip()):
        code, message, ec = _BAD_LENGTH
        raise MalformedRequest(400, code, message, EC=ec)
    return int(value)


def _bad_chunk() -> MalformedRequest:
    """A chunk-size line that is not hex digits (RFC 9112 section 7.1). OSS's HTTP front end
    answers a request it cannot frame with 400 before any effect; modelled as 400 InvalidArgument."""
    return MalformedRequest(400, "InvalidArgument", "The chunked request body is malformed.")


class BodyReader:
    """The request body: Content-Length or chunked, throttled; remembers whether it was consumed."""

    def __init__(self, rfile: Any, length: int | None, chunked: bool, throttle: Throttle) -> None:
        self.rfile = rfile
        self.length = length
        self.chunked = chunked
        self.throttle = throttle
        self.remaining = length if length is not None else 0
        self.chunk_left = 0
        self.eof = not chunked and not self.remaining
        self.received = 0

    def _next_chunk(self) -> None:
        line = self.rfile.readline(4097)
        if not line:
            raise ConnectionError("eof in chunked body")
        m = _CHUNK_LINE.fullmatch(line)
        if not m:
            raise _bad_chunk()
        size = int(m.group(1), 16)
        if size == 0:
            while True:                       # trailers up to the blank line
                t = self.rfile.readline(65537)
                if not t or t in (b"\r\n", b"\n"):
                    break
            self.eof = True
        self.chunk_left = size

    def readinto(self, view: memoryview) -> int:
        if self.eof or not len(view):
            return 0
        if self.chunked:
            if self.chunk_left == 0:
                self._next_chunk()
                if self.eof:
                    return 0
            want = min(len(view), self.chunk_left)
        else:
            want = min(len(view), self.remaining)
        n = self.rfile.readinto(view[:want])
        if not n:
            raise ConnectionError("eof in request body")
        self.received += n
        self.throttle.consume(n)
        if self.chunked:
            self.chunk_left -= n
            if self.chunk_left == 0 and self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _bad_chunk()            # CRLF after the chunk
        else:
            self.remaining -= n
            if self.remaining == 0:
                self.eof = True
        return n

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (reads until ``n`` or the end; used for small XML bodies)."""
        buf = bytearray(min(n, 1 << 20))
        out = bytearray()
        while len(out) < n:
            view = memoryview(buf)[:min(len(buf), n - len(out))]
            k = self.readinto(view)
            if not k:
                break
            out += view[:k]
        return bytes(out)

    def drain(self, limit: int) -> bool:
        """Discard what is left; False when more than ``limit`` bytes remain (close instead)."""
        if self.eof:
            return True
        if not self.chunked and self.remaining > limit:
            return False
        buf = memoryview(bytearray(1 << 20))
        total = 0
        while not self.eof:
            k = self.readinto(buf)
            if not k:
                break
            total += k
            if total > limit:
                return False
        return True


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def route(ops: Ops, method: str, bucket: str | None, key: str, p: dict[str, str], h: dict[str, str]
          ) -> tuple[str, Callable[[Ctx], Resp]]:
    """Operation name (for counters) and the function implementing it."""
    unknown = (set(p) & SUBRESOURCES) - _HANDLED
    if unknown:
        raise OssError(501, "NotImplemented", f"Subresource {sorted(unknown)[0]} is not supported by the emulator.")
    if bucket is None:
        if method == "GET":
            return "ListBuckets", ops.list_buckets
    elif not key:
        if method == "PUT":
            return ("PutBucketAcl", ops.put_acl) if "acl" in p else ("CreateBucket", ops.create_bucket)
        if method == "DELETE":
            return "DeleteBucket", ops.delete_bucket
        if method == "GET":
            if "bucketInfo" in p:
                return "GetBucketInfo", ops.bucket_info
            if "location" in p:
                return "GetBucketLocation", ops.bucket_location
            if "uploads" in p:
                return "ListMultipartUploads", ops.list_uploads
            if "acl" in p:
                return "GetBucketAcl", ops.get_acl
            if p.get("list-type") == "2":
                return "ListObjectsV2", ops.list_objects
            return "ListObjects", ops.list_objects
        if method == "HEAD":
            return "HeadBucket", ops.bucket_location
        if method == "POST" and "delete" in p:
            return "DeleteMultipleObjects", ops.delete_multiple
    else:
        if method == "PUT":
            if "symlink" in p:
                return "PutSymlink", ops.put_symlink
            if "uploadId" in p:
                if "x-oss-copy-source" in h:
                    return "UploadPartCopy", ops.upload_part_copy
                return "UploadPart", ops.upload_part
            if "acl" in p:
                return "PutObjectAcl", ops.put_acl
            if "x-oss-copy-source" in h:
                return "CopyObject", ops.copy_object
            return "PutObject", ops.put_object
        if method == "POST":
            if "uploads" in p:
                return "InitiateMultipartUpload", ops.init_multipart
            if "uploadId" in p:
                return "CompleteMultipartUpload", ops.complete_multipart
            if "append" in p:
                return "AppendObject", ops.append_object
            if "restore" in p:
                return "RestoreObject", ops.restore_object
        if method == "GET":
            if "symlink" in p:
                return "GetSymlink", ops.get_symlink
            if "uploadId" in p:
                return "ListParts", ops.list_parts
            if "acl" in p:
                return "GetObjectAcl", ops.get_acl
            return "GetObject", ops.get_object
        if method == "HEAD":
            if "objectMeta" in p:
                return "GetObjectMeta", ops.get_object_meta
            return "HeadObject", ops.head_object
        if method == "DELETE":
            if "uploadId" in p:
                return "AbortMultipartUpload", ops.abort_multipart
            return "DeleteObject", ops.delete_object
    raise OssError(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AliyunOSS"
    disable_nagle_algorithm = True
    rbufsize = 256 * 1024
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
        return

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.emu.idle_timeout)
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
    def _address(self, raw_path: str, host: str) -> tuple[str | None, str]:
        hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        vbucket = None
        if "." in hostname and not _is_ip(hostname):
            first = hostname.split(".", 1)[0]
            if valid_bucket_name(first):
                vbucket = first
        path = raw_path
        if not path.startswith("/"):
            raise OssError(400, "InvalidURI", "Could not parse the specified URI.")
        if vbucket is not None:
            bucket, rest = vbucket, path[1:]
        else:
            p = path[1:]
            if not p:
                return None, ""
            b, _, rest = p.partition("/")
            bucket = unquote(b)
        try:
            key = unquote_to_bytes(rest).decode("utf-8")
        except UnicodeDecodeError:
            raise OssError(400, "InvalidURI", "The object name is not valid UTF-8.") from None
        return bucket, key

    def _dispatch(self) -> None:
        emu = self.server.emu
        rid = secrets.token_hex(12).upper()
        method = self.command
        raw_path, _, raw_query = self.path.partition("?")
        hdrs = {k.lower(): v for k, v in self.headers.items()}
        chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
        length, frame_error = None, None
        try:
            length = content_length(None if chunked else hdrs.get("content-length"))
        except MalformedRequest as e:
            frame_error, self.close_connection = e, True
        body = BodyReader(self.rfile, length, chunked, self.up)
        if raw_path.startswith("/-/admin/"):
            self._admin(raw_path, raw_query, body, rid)
            return
        faults = Faults(**asdict(emu._faults))
        op, bucket, key = "Invalid", None, ""
        fn: Callable[[Ctx], Resp] | None = None
        params: dict[str, str] = {}
        params_list: list[tuple[str, str]] = []
        pre_error: OssError | None = None
        try:
            bucket, key = self._address(raw_path, hdrs.get("host", ""))
            params_list = parse_qsl(raw_query, keep_blank_values=True)
            params = dict(params_list)
            op, fn = route(emu._ops, method, bucket, key, params, hdrs)
        except OssError as e:
            pre_error = e
        pre_error = frame_error or pre_error
        emu._stats.count(op)
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000.0)
        if faults.fail_rate > 0 and random.random() < faults.fail_rate:
            code = faults.fail_code
            if code == FAIL_CODE_MIXED or code not in FAIL_CODES:
                code = random.choice(sorted(FAIL_CODES))
            status, message = FAIL_CODES[code]
            pre_error = OssError(status, code, message)
        drop = faults.drop_rate > 0 and random.random() < faults.drop_rate
        if drop and method != "GET":
            emu._stats.done(op, method, bucket, key, 0, 0, 0)
            self._hard_close()
            return
        if pre_error is not None:
            resp = self._error(pre_error, rid, bucket, key)
        else:
            ctx = Ctx(method, bucket, key, params, hdrs, body, hdrs.get("host", ""))
            try:
                emu._verifier.verify(SignedRequest(method, bucket, key, params_list, hdrs))
                if faults.deny_writes and method not in ("GET", "HEAD"):
                    raise OssError(403, "AccessDenied", "You have no right to access this object "
                                   "because of bucket acl.")
                assert fn is not None
                resp = fn(ctx)
            except OssError as e:
                if isinstance(e, MalformedRequest):
                    self.close_connection = True
                resp = self._error(e, rid, bucket, key)
            except (ConnectionError, socket.timeout):
                self.close_connection = True
                return
            except Exception:  # pragma: no cover - logged, answered as OSS would
                log.exception("emulator: %s %s failed", method, op)
                resp = self._error(OssError(500, "InternalError", "We encountered an internal error."), rid, bucket, key)
        try:
            if self.close_connection or not body.drain(_DRAIN_LIMIT):
                self.close_connection = True
        except (ConnectionError, ValueError, OSError, OssError):
            self.close_connection = True
        sent = 0
        try:
            sent = self._send(resp, rid, head=(method == "HEAD"), drop=drop)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if resp.file is not None:
                resp.file[0].close()
            emu._stats.done(op, method, bucket, key, resp.status, sent, body.received)

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
        if resp.file is not None:
            length = resp.file[2]
        elif head and resp.content_length is not None:
            length = resp.content_length
        else:
            length = len(resp.body)
        lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}"]
        headers = list(resp.headers) + [("Server", "AliyunOSS"), ("Date", http_date()),
                                        ("x-oss-request-id", rid), ("Content-Length", str(length))]
        if self.close_connection:
            headers.append(("Connection", "close"))
        for k, v in headers:
            lines.append(f"{k}: {v}")
        blob = bytearray()
        for line in lines:
            try:
                blob += line.encode("latin-1")
            except UnicodeEncodeError:
                blob += line.encode("utf-8")
            blob += b"\r\n"
        blob += b"\r\n"
        self.wfile.write(blob)
        if head or resp.status in (204, 304):
            return 0
        limit = length // 2 if drop else length
        sent = 0
        rate = self.down.rate()
        if resp.file is None:
            data = memoryview(resp.body)[:limit]
            step = max(4096, int(rate / 50)) if rate else len(data) or 1
            for i in range(0, len(data), step):
                piece = data[i:i + step]
                self.down.consume(len(piece))
                self.wfile.write(piece)
                sent += len(piece)
        else:
            obj, offset, _ = resp.file
            out = self.connection.fileno()
            step = max(4096, min(1 << 20, int(rate / 50))) if rate else 0
            for fd, off, count in obj.ranges(offset, limit):
                done = 0
                while done < count:
                    if step:
                        chunk = os.pread(fd, min(step, count - done), off + done)
                        if chunk:
                            self.down.consume(len(chunk))
                            self.wfile.write(chunk)
                        n = len(chunk)
                    else:
                        n = self._sendfile(out, fd, off + done, min(count - done, 1 << 30))
                    if n == 0:
                        break
                    done += n
                sent += done
                if done < count:
                    break
        if drop or sent < limit:
            self._hard_close()
        return sent

    def _sendfile(self, out: int, fd: int, offset: int, count: int) -> int:
        """os.sendfile on the connection, which has a timeout (so is non-blocking underneath):
        wait up to the idle timeout for room, then give up with TimeoutError."""
        while True:
            try:
                return os.sendfile(out, fd, offset, count)
            except BlockingIOError:
                if not select.select([], [out], [], self.connection.gettimeout())[1]:
                    raise TimeoutError("client stopped reading") from None

    # ---- admin -------------------------------------------------------------------------
    def _admin(self, path: str, query: str, body: BodyReader, rid: str) -> None:
        emu = self.server.emu
        status, payload = 200, dict[str, Any]()
        if not _is_ip(self.client_address[0]) or not ipaddress.ip_address(self.client_address[0]).is_loopback:
            status, payload = 403, {"error": "admin endpoint is loopback-only"}
        elif not hmac.compare_digest(self.headers.get("x-admin-token", "").encode("latin-1", "replace"),
                                     emu.admin_token.encode()):
            status, payload = 403, {"error": "admin endpoint needs the X-Admin-Token header "
                                             f"(the token is in {ADMIN_TOKEN_FILE} in the data directory)"}
        elif path == "/-/admin/faults":
            if self.command == "POST":
                q = dict(parse_qsl(query))
                try:
                    kw: dict[str, Any] = {k: float(v) for k, v in q.items()
                                          if k in ("latency_ms", "bandwidth_mbps", "fail_rate", "drop_rate",
                                                   "restore_seconds")}
                    if "copy_limit" in q:
                        kw["copy_limit"] = int(q["copy_limit"])
                    if "fail_code" in q:
                        kw["fail_code"] = q["fail_code"]
                    if "deny_writes" in q:
                        kw["deny_writes"] = q["deny_writes"].lower() in ("1", "true", "yes")
                    emu.set_faults(**kw)
                except ValueError as e:
                    status, payload = 400, {"error": str(e)}
            if status == 200:
                payload = asdict(emu._faults)
        elif path == "/-/admin/stats":
            payload = emu.stats
        elif path == "/-/admin/stats/reset" and self.command == "POST":
            emu.reset_stats()
            payload = {"ok": True}
        else:
            status, payload = 404, {"error": "unknown admin path"}
        body.drain(1 << 20)
        data = json.dumps(payload).encode()
        self._send(Resp(status, [("Content-Type", "application/json")], data), rid,
                   head=self.command == "HEAD", drop=False)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], emu: "Emulator") -> None:
        self.emu = emu
        self._conns: dict[socket.socket, tuple[str, float]] = {}    # -> (state, since (monotonic))
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:       # EMFILE/ENFILE: the listening socket stays readable; do not spin
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(0.05)
            raise

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """At the connection cap, evict the connection waiting longest for a request; refuse
        (503, then close) when every connection is busy with a request."""
        with self._conns_lock:
            if len(self._conns) < self.emu.max_connections:
                return True
            waiting = [(since, c) for c, (state, since) in self._conns.items() if state != "busy"]
        if waiting:
            _shutdown(min(waiting, key=lambda t: t[0])[1])
            return True
        try:
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        return False

    def service_actions(self) -> None:
        """Called by serve_forever every poll interval: close requests with overdue headers."""
        super().service_actions()
        limit = time.monotonic() - self.emu.header_timeout
        with self._conns_lock:
            late = [c for c, (state, since) in self._conns.items() if state == "headers" and since < limit]
        for c in late:
            _shutdown(c)

    def mark(self, conn: socket.socket, state: str) -> None:
        with self._conns_lock:
            if conn in self._conns:
                self._conns[conn] = (state, time.monotonic())

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients closing or resetting idle keep-alive connections is normal, not an error."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        log.exception("emulator: unexpected error serving %s", client_address)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns[conn] = ("idle", time.monotonic())
            else:
                self._conns.pop(conn, None)

    def close_all(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            _shutdown(c)


def _shutdown(conn: socket.socket) -> None:
    """End a connection from another thread (its handler sees EOF or an error and exits)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def default_max_connections() -> int:
    """Open connections the file limit allows: each takes a socket and up to two object files
    while it is served; a margin is kept for the data files and the KMS server."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(8, min(1024, (soft - 64) // 3))


class Emulator:
    """Local OSS (and optionally KMS) server in background threads; a context manager."""

    def __init__(self, data_dir: str, *, host: str = "127.0.0.1", port: int = 0,
                 credentials: dict[str, str], sts_tokens: dict[str, str] | None = None,
                 buckets: Sequence[str] = (), latency_ms: float = 0, bandwidth_mbps: float = 0.0,
                 fail_rate: float = 0.0, kms_port: int | None = None, drop_rate: float = 0.0,
                 fsync: bool = True, crc: bool = True, region: str = "oss-cn-hangzhou",
                 fail_code: str = "ServiceUnavailable", copy_limit: int = DEFAULT_COPY_LIMIT,
                 restore_seconds: float = DEFAULT_RESTORE_SECONDS, max_connections: int | None = None,
                 idle_timeout: float = IDLE_TIMEOUT, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.data_dir = os.path.abspath(str(data_dir))
        self.max_connections = max_connections or default_max_connections()
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.host = host
        self.port = port
        self.credentials = dict(credentials)
        self.sts_tokens = dict(sts_tokens or {})
        self.buckets = list(buckets)
        self.kms_port = kms_port
        self.fsync = fsync
        self.crc = crc
        self.region = region
        self._faults = Faults(float(latency_ms), float(bandwidth_mbps), float(fail_rate), float(drop_rate))
        self.set_faults(fail_code=fail_code, copy_limit=copy_limit, restore_seconds=restore_seconds)
        self._stats = Stats()
        self._verifier = Verifier(self.credentials, self.sts_tokens, region=self.region)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._kms: Any = None
        self.endpoint = ""
        self.kms_endpoint: str | None = None
        self.storage: Storage | None = None
        self.admin_token = ""

    @property
    def admin_headers(self) -> dict[str, str]:
        """The header that authorises admin endpoint requests (valid while this emulator runs)."""
        return {"X-Admin-Token": self.admin_token}

    def _write_admin_token(self) -> None:
        """A fresh random token in DATA_DIR/admin-token, created 0600 (never through a symlink)."""
        self.admin_token = secrets.token_hex(24)
        path = os.path.join(self.data_dir, ADMIN_TOKEN_FILE)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.admin_token + "\n")

    def start(self) -> "Emulator":
        if self._server is not None:
            return self
        os.makedirs(self.data_dir, exist_ok=True)
        self._write_admin_token()
        self.storage = Storage(os.path.join(self.data_dir, "oss"), fsync=self.fsync, crc=self.crc)
        for b in self.buckets:
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", b):   # oss2 itself needs >= 3 chars
                raise ValueError(f"invalid bucket name: {b!r}")
            self.storage.create_bucket(b)
        self._ops = Ops(self.storage, region=self.region, endpoint_host=self.host, settings=self._faults)
        if self.kms_port is not None:
            try:
                from .kms import KmsServer  # owned by the KMS helper; optional until it lands
            except ImportError as exc:
                raise RuntimeError("the KMS emulator (ossencfs/emulator/kms.py) is not available: "
                                   f"{exc}") from exc
            self._kms = KmsServer(os.path.join(self.data_dir, "kms"), host=self.host, port=self.kms_port,
                                  credentials=self.credentials, sts_tokens=self.sts_tokens or None)
            self._kms.start()
            self.kms_endpoint = self._kms.endpoint
        try:
            self._server = _Server((self.host, self.port), self)
        except BaseException:
            if self._kms is not None:
                self._kms.stop()
            raise
        self.port = self._server.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.endpoint = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"oss-emulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
            srv.close_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._kms is not None:
            try:
                self._kms.stop()
            finally:
                self._kms = None

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults and stats ----------------------------------------------------------------
    def set_faults(self, *, latency_ms: float | None = None, bandwidth_mbps: float | None = None,
                   fail_rate: float | None = None, drop_rate: float | None = None, fail_code: str | None = None,
                   copy_limit: int | None = None, restore_seconds: float | None = None,
                   deny_writes: bool | None = None) -> None:
        """Change faults and limits while running; None leaves a setting unchanged.

        ``fail_code`` picks what injected failures answer: one of ``faults.FAIL_CODES`` (503
        ServiceUnavailable (default), TotalQpsLimitExceeded, MetaOperationQpsLimitExceeded,
        DownloadTrafficRateLimitExceeded, UploadTrafficRateLimitExceeded, ActiveRequestLimitExceeded;
        429 QpsLimitExceeded) or "mixed". ``copy_limit``: CopyObject source size limit in bytes.
        ``restore_seconds``: how long a RestoreObject takes. ``deny_writes``: every request
        that is not a GET or HEAD is refused with 403 AccessDenied, as for credentials whose
        RAM policy allows reads only (error page "AccessDenied", SPEC D.5).
        """
        if deny_writes is not None:
            self._faults.deny_writes = bool(deny_writes)
        for name, v in (("latency_ms", latency_ms), ("bandwidth_mbps", bandwidth_mbps),
                        ("fail_rate", fail_rate), ("drop_rate", drop_rate), ("restore_seconds", restore_seconds)):
            if v is None:
                continue
            v = float(v)
            if v < 0 or (name in ("fail_rate", "drop_rate") and v > 1):
                raise ValueError(f"{name} out of range: {v}")
            setattr(self._faults, name, v)
        if copy_limit is not None:
            if int(copy_limit) < 0:
                raise ValueError(f"copy_limit out of range: {copy_limit}")
            self._faults.copy_limit = int(copy_limit)
        if fail_code is not None:
            if fail_code != FAIL_CODE_MIXED and fail_code not in FAIL_CODES:
                raise ValueError(f"unknown fail_code: {fail_code!r} (one of {sorted(FAIL_CODES)} or 'mixed')")
            self._faults.fail_code = fail_code

    @property
    def faults(self) -> dict[str, Any]:
        return asdict(self._faults)

    @property
    def stats(self) -> dict[str, Any]:
        """{"requests": {op: count}, "total_requests", "bytes_sent", "bytes_received"}."""
        return self._stats.snapshot()

    @property
    def request_counts(self) -> collections.Counter[str]:
        return collections.Counter(self._stats.snapshot()["requests"])

    @property
    def request_log(self) -> list[tuple[float, str, str, str | None, str, int]]:
        """(time, operation, method, bucket, key, status) of recent requests, oldest first."""
        with self._stats._lock:
            return list(self._stats.log)

    def reset_stats(self) -> None:
        self._stats.reset()
