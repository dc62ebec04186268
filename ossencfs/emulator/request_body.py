"""Request framing: where a request's body starts and ends (Content-Length or chunked).

Kept apart from the connection handling (``oss_handler.py``) so the rules for reading a body,
and the 400 answers for bodies that cannot be framed, can be read and tested on their own.
"""
from __future__ import annotations

import re
from io import BufferedIOBase

from .faults import Throttle
from .xmlout import OssError

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

    def __init__(self, rfile: BufferedIOBase, length: int | None, chunked: bool, throttle: Throttle) -> None:
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
