"""Connection hygiene of the OSS emulator's HTTP server: timeouts, the connection cap, eviction.

Kept apart from request handling (``oss_handler.py``) because it is about sockets, not OSS:
which connections are open, what each is doing (waiting for a request, reading headers, busy),
and which one to end when the server is full or a client is too slow.
"""
from __future__ import annotations

import errno
import logging
import resource
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

# Connection hygiene (issue 13 item 9): a read or write that makes no progress for IDLE_TIMEOUT
# seconds (also an idle keep-alive connection) ends the connection; a request whose headers are
# not complete HEADER_TIMEOUT seconds after its request line is closed; at most max_connections
# are open (default: what the file limit allows), and a new one at the cap first evicts the
# connection that has waited longest for a request, so clients that send whole requests are served.
IDLE_TIMEOUT = 60.0
HEADER_TIMEOUT = 10.0


class CappedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that tracks each connection's state ("idle": waiting for a
    request, "headers": reading one, "busy": serving one) and enforces the limits above."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 max_connections: int, idle_timeout: float, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout        # seconds without progress on one connection
        self.header_timeout = header_timeout    # seconds from request line to the end of headers
        self._conns: dict[socket.socket, tuple[str, float]] = {}    # -> (state, since (monotonic))
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as exc:       # EMFILE/ENFILE: the listening socket stays readable; do not spin
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(0.05)
            raise

    def verify_request(self, request: Any, client_address: object) -> bool:
        """At the connection cap, evict the connection waiting longest for a request; refuse
        (503, then close) when every connection is busy with a request."""
        with self._conns_lock:
            if len(self._conns) < self.max_connections:
                return True
            waiting = [(since, c) for c, (state, since) in self._conns.items() if state != "busy"]
        if waiting:
            shutdown_socket(min(waiting, key=lambda t: t[0])[1])
            return True
        try:
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        return False

    def service_actions(self) -> None:
        """Called by serve_forever every poll interval: close requests with overdue headers."""
        super().service_actions()
        limit = time.monotonic() - self.header_timeout
        with self._conns_lock:
            late = [c for c, (state, since) in self._conns.items() if state == "headers" and since < limit]
        for c in late:
            shutdown_socket(c)

    def mark(self, conn: socket.socket, state: str) -> None:
        with self._conns_lock:
            if conn in self._conns:
                self._conns[conn] = (state, time.monotonic())

    def handle_error(self, request: object, client_address: object) -> None:
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
            shutdown_socket(c)


def shutdown_socket(conn: socket.socket) -> None:
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
