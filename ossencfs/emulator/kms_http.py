"""The local KMS's HTTP front: a threading HTTP/1.1 keep-alive server whose handler turns a
``POST /`` (parameters in the query string or a form body) into ``KmsServer.handle`` and writes
its JSON answer, and the outage faults ("hang", "reset") that answer nothing.

Why it exists: the socket and HTTP plumbing, apart from what a request means (``kms.py``).
"""
from __future__ import annotations

import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from .kms import KmsServer

_MAX_BODY = 1 << 20               # RPC bodies are tiny; refuse anything that is not


class KmsHTTPServer(ThreadingHTTPServer):
    """Tracks open connections so ``close_all`` can cut keep-alive ones at stop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(addr, handler)
        self.open_connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()

    def close_all(self) -> None:
        """Cut keep-alive connections too, so a stopped server really answers nothing more."""
        with self.conn_lock:
            conns = list(self.open_connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class KmsHTTPServer6(KmsHTTPServer):
    address_family = socket.AF_INET6


class KmsHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler; all logic is in ``KmsServer.handle``."""

    kms: KmsServer                 # set on a subclass per server (KmsServer.start)
    protocol_version = "HTTP/1.1"
    server_version = "ossencfs-local-kms"
    server: KmsHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence per-request logs
        pass

    def setup(self) -> None:
        super().setup()
        srv = self.server
        with srv.conn_lock:
            srv.open_connections.add(self.connection)

    def finish(self) -> None:
        srv = self.server
        with srv.conn_lock:
            srv.open_connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _serve(self) -> None:
        if self.kms.outage:
            if self.kms.outage == "hang":
                self.kms.wait_outage_end()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self.send_error(413 if length > 0 else 400)
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        params: dict[str, str] = {}
        doc: dict[str, object]
        if parts.path not in ("/", ""):
            status, doc = 404, {"RequestId": str(uuid.uuid4()).upper(), "Code": "InvalidAction.NotFound",
                                "Message": "Specified api is not found, please check your url and method."}
        else:
            params.update(parse_qsl(parts.query, keep_blank_values=True))
            ctype = (self.headers.get("Content-Type") or "").lower()
            if body and "application/x-www-form-urlencoded" in ctype:
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            status, doc = self.kms.handle(self.command, params)
        out = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("x-acs-request-id", str(doc.get("RequestId", "")))
        self.end_headers()
        self.wfile.write(out)

    do_POST = _serve
    do_GET = _serve
