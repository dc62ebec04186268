"""Writing an OSS answer on the wire: status line and headers, then the body from memory or
streamed from an object's files (``os.sendfile`` when no bandwidth cap applies).

Kept apart from the request handling (``oss_handler.py``) so the byte-level sending, its
bandwidth throttle and its dropped-connection fault can be read on their own.
"""
from __future__ import annotations

import os
import select
import socket
from io import BufferedIOBase

from .faults import Throttle
from .ops import Resp
from .storage import OpenObject
from .xmlout import http_date

_REASONS = {200: "OK", 204: "No Content", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
            202: "Accepted", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            411: "Length Required", 412: "Precondition Failed", 416: "Requested Range Not Satisfiable",
            429: "Too Many Requests", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable"}


def response_length(resp: Resp, head: bool) -> int:
    """The Content-Length of ``resp`` in bytes (for HEAD: what a GET would send)."""
    if resp.file is not None:
        return resp.file[2]
    if head and resp.content_length is not None:
        return resp.content_length
    return len(resp.body)


def head_block(resp: Resp, rid: str, length: int, close: bool) -> bytes:
    """Status line and headers (OSS's Server, Date, x-oss-request-id, Content-Length added),
    each line latin-1 when it can be, else UTF-8."""
    lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}"]
    headers = list(resp.headers) + [("Server", "AliyunOSS"), ("Date", http_date()),
                                    ("x-oss-request-id", rid), ("Content-Length", str(length))]
    if close:
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
    return bytes(blob)


def write_bytes(wfile: BufferedIOBase, data: memoryview, throttle: Throttle) -> int:
    """Send ``data`` in steps of 1/50 s at the throttle's rate; bytes sent."""
    rate = throttle.rate()
    sent = 0
    step = max(4096, int(rate / 50)) if rate else len(data) or 1
    for i in range(0, len(data), step):
        piece = data[i:i + step]
        throttle.consume(len(piece))
        wfile.write(piece)
        sent += len(piece)
    return sent


def write_file(wfile: BufferedIOBase, conn: socket.socket, obj: OpenObject, offset: int, limit: int,
               throttle: Throttle) -> int:
    """Send ``limit`` bytes of ``obj`` from ``offset``: read and throttled when a bandwidth cap is
    set, else ``os.sendfile``; bytes sent (fewer when the client stopped reading)."""
    rate = throttle.rate()
    out = conn.fileno()
    step = max(4096, min(1 << 20, int(rate / 50))) if rate else 0
    sent = 0
    for fd, off, count in obj.ranges(offset, limit):
        done = 0
        while done < count:
            if step:
                chunk = os.pread(fd, min(step, count - done), off + done)
                if chunk:
                    throttle.consume(len(chunk))
                    wfile.write(chunk)
                n = len(chunk)
            else:
                n = _sendfile(out, fd, off + done, min(count - done, 1 << 30), conn.gettimeout())
            if n == 0:
                break
            done += n
        sent += done
        if done < count:
            break
    return sent


def _sendfile(out: int, fd: int, offset: int, count: int, timeout: float | None) -> int:
    """os.sendfile on the connection, which has a timeout (so is non-blocking underneath):
    wait up to the idle timeout for room, then give up with TimeoutError."""
    while True:
        try:
            return os.sendfile(out, fd, offset, count)
        except BlockingIOError:
            if not select.select([], [out], [], timeout)[1]:
                raise TimeoutError("client stopped reading") from None
