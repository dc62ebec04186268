"""Request and response bodies: the CRC-64 every body is checked with, a part read from its
source while it is sent (``PartBody``), and a GET's body read whole (or in pieces) and checked.
"""
from __future__ import annotations

from typing import Callable

from ..checksums import crc64
from .failures import Transient
from .transport import HttpReply

# oss2's own CRC check builds its 256-entry table in pure Python on every request (~0.3 ms of
# GIL time per PUT or GET, more than the rest of a small upload's client-side work) and runs
# at crcmod's speed, so it is off on our bucket (``enable_crc = False``) and every body is
# checked here with ``checksums.crc64`` instead.


def check_crc(what: str, data: bytes, result: object) -> None:
    """What oss2 does with enable_crc: the server's CRC of what it stored must be ours."""
    server = getattr(result, "crc", None)
    if server is not None and server != crc64(data):
        raise Transient(f"{what}: CRC-64 of the sent body does not match x-oss-hash-crc64ecma")


class PartBody:
    """A request body of ``size`` bytes read from ``read(offset, n)`` (blocking) a ``PIECE`` at
    a time as the HTTP client asks for it, with its CRC-64 computed on the way (``crc``).
    One per attempt: a retry starts again from ``offset``."""

    PIECE = 256 << 10           # x ``multipart.STREAMED_PARTS`` (32) parts sent at once: 8 MiB

    def __init__(self, read: Callable[[int, int], bytes], offset: int, size: int) -> None:
        self._read, self._next, self.left = read, offset, size
        self._buf = memoryview(b"")
        self.crc = 0
        #: a local read failure: the HTTP client reports it as a network error, which would be
        #: retried; ``upload_part`` raises this instead (a staging file cut short is for good)
        self.local_error: OSError | None = None

    def __len__(self) -> int:           # the Content-Length (``transport``, requests)
        return self.left + len(self._buf)

    def read(self, n: int = -1) -> bytes:
        if not self._buf and self.left:
            try:
                piece = self._read(self._next, min(self.PIECE, self.left))
            except OSError as exc:
                self.local_error = exc
                raise
            if not piece:
                return b""
            self._next += len(piece)
            self.left -= len(piece)
            self.crc = crc64(piece, self.crc)
            self._buf = memoryview(piece)
        n = len(self._buf) if n is None or n < 0 else n
        out, self._buf = self._buf[:n], self._buf[n:]
        return bytes(out)


def read_body(raw: HttpReply, want: int, *, whole: bool) -> bytes:
    """Exactly ``want`` bytes of a GET's body (closes the response); its CRC-64 checked
    against x-oss-hash-crc64ecma (the whole object's) when ``whole``. Transient otherwise."""
    return b"".join(read_body_pieces(raw, want, max(want, 1), whole=whole))   # one: no copy


def read_body_pieces(raw: HttpReply, want: int, piece: int, *, whole: bool) -> list[bytes]:
    """``read_body`` as ``piece``-byte pieces (the last may be shorter), each read from the
    socket as it arrives: a read-ahead GET of 2 MiB then never holds a 2 MiB buffer, and its
    pieces are the block cache's blocks as they are (no join, no split).

    Why: http.client answers ``read(n)`` with a zeroed ``bytearray(n)`` filled and then copied,
    so each GET under way held its whole size from its first byte, and each one done was copied
    twice more (joined bytes, then blocks). The 16 GETs of a 32 MiB window over the cloud
    profile's slow connections held up to 32 MiB besides the blocks waiting for their reader:
    peak RSS of a 256 MiB read 115-118 MiB, 104-107 MiB read in pieces (issue 17)."""
    pieces: list[bytes] = []
    crc = 0
    got = 0
    try:
        while got < want:
            n = min(piece, want - got)
            data = _read_all(raw, n)
            if len(data) != n:
                raise Transient(f"short body: {got + len(data)} of {want} bytes")
            if whole:
                crc = crc64(data, crc)
            pieces.append(data)
            got += n
    finally:
        raw.close()
    server_crc = raw.headers.get("x-oss-hash-crc64ecma")
    if whole and server_crc and crc != int(server_crc):
        raise Transient("CRC-64 of the body does not match x-oss-hash-crc64ecma")
    return pieces


def _read_all(raw: HttpReply, expected: int) -> bytes:
    """Read a body of known length straight from urllib3 into one bytes object.

    No 8 KiB iteration and no join: one read of the exact size (urllib3 loops internally),
    topped up only if the socket hands back less. A short result is detected by the caller.
    """
    body = raw.raw
    data = body.read(expected, decode_content=False)
    if len(data) >= expected:
        return data
    parts = [data]
    got = len(data)
    while got < expected:
        more = body.read(expected - got, decode_content=False)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
