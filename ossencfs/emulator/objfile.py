"""The emulator's object file format and the two ways it is handled: being written, being read.

An object file is ``data || json-metadata || 4-byte BE json length || MAGIC``. Putting the
metadata in a trailer lets a PUT stream its body straight into a temporary file and append the
metadata once the hashes are known; one ``rename`` then makes both visible together. A
completed multipart object is a trailer-only file whose metadata lists its part files
("segments"), so Complete never copies data.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..checksums import crc64

MAGIC = b"OSSEMU01"
_TRAILER = struct.Struct(">I8s")
_COPY_CHUNK = 8 << 20


@dataclass
class Entry:
    """Metadata of one stored object (or one multipart part)."""

    key: str
    size: int
    etag: str                                   # without quotes
    crc64: int | None                           # None: not computed (emulator run with crc=False)
    mtime: float
    type: str = "Normal"                        # Normal | Multipart | Appendable | Symlink
    headers: dict[str, str] = field(default_factory=dict)   # lower-case names
    target: str | None = None                   # symlink target
    storage_class: str = "Standard"
    segments: list[tuple[str, int]] | None = None   # multipart data: (path under the bucket, length)
    path: str = ""                              # file holding it (not serialised)

    def to_json(self) -> bytes:
        d = {"key": self.key, "size": self.size, "etag": self.etag, "crc64": None if self.crc64 is None else str(self.crc64),
             "mtime": self.mtime, "type": self.type, "headers": self.headers,
             "target": self.target, "storage_class": self.storage_class}
        if self.segments is not None:
            d["segments"] = [[p, n] for p, n in self.segments]
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, path: str) -> "Entry":
        d = json.loads(raw.decode("utf-8"))
        return cls(key=d["key"], size=int(d["size"]), etag=d["etag"], crc64=None if d.get("crc64") is None else int(d["crc64"]),
                   mtime=float(d["mtime"]), type=d.get("type", "Normal"),
                   headers=dict(d.get("headers") or {}), target=d.get("target"),
                   storage_class=d.get("storage_class", "Standard"), path=path,
                   segments=[(str(p), int(n)) for p, n in d["segments"]] if d.get("segments") is not None else None)


def read_trailer(fd: int) -> Entry | None:
    """Parse the metadata trailer of an object file (None when absent or damaged)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end < _TRAILER.size:
        return None
    tail = os.pread(fd, _TRAILER.size, end - _TRAILER.size)
    n, magic = _TRAILER.unpack(tail)
    if magic != MAGIC or n > end - _TRAILER.size:
        return None
    raw = os.pread(fd, n, end - _TRAILER.size - n)
    return Entry.from_json(raw, "")


class TempObject:
    """A file being written outside the visible namespace; hashes are computed while streaming."""

    def __init__(self, path: str, *, hashing: bool = True, crc: bool = True) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0
        self._md5 = hashlib.md5() if hashing else None
        self._crc: int | None = 0 if hashing and crc else None
        self.closed = False

    def write(self, data: bytes | memoryview) -> None:
        """Append body bytes, updating MD5 and CRC-64."""
        if self._md5 is not None:
            self._md5.update(data)
        if self._crc is not None:
            self._crc = crc64(data, self._crc)
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)

    def stream_from(self, readinto: Callable[[memoryview], int], limit: int, chunk: int = 1 << 20,
                    expected: int | None = None) -> None:
        """Append a whole body read with ``readinto``; raises OverflowError beyond ``limit`` bytes.

        For bodies larger than one chunk the file write runs in a helper thread while this
        thread receives the next chunk and hashes it. (Moving the hashing to the helper as well
        peaked higher on an idle machine but burned more CPU in GIL hand-offs; the benchmark
        runs the mount on the same cores, so CPU is what counts.)
        """
        if self._md5 is None or (expected is not None and expected <= chunk):
            self._stream_direct(readinto, limit, max(1, min(chunk, expected if expected is not None else chunk)))
        else:
            self._stream_pipelined(readinto, limit, chunk)

    def _stream_direct(self, readinto: Callable[[memoryview], int], limit: int, size: int) -> None:
        """Receive, hash and write in this thread, ``size`` bytes at a time."""
        buf = memoryview(bytearray(size))
        while True:
            n = readinto(buf)
            if not n:
                break
            self.write(buf[:n])
            if self.size > limit:
                raise OverflowError(self.size)

    def _stream_pipelined(self, readinto: Callable[[memoryview], int], limit: int, chunk: int) -> None:
        """Receive and hash in this thread while a helper writes the other of two buffers."""
        assert self._md5 is not None
        md5_update = self._md5.update
        q: queue.Queue[tuple[memoryview, threading.Semaphore] | None] = queue.Queue()
        errors: list[BaseException] = []
        bufs = [memoryview(bytearray(chunk)), memoryview(bytearray(chunk))]
        free = [threading.Semaphore(1), threading.Semaphore(1)]
        t = threading.Thread(target=self._write_queued, args=(q, errors), name="emu-put-writer", daemon=True)
        t.start()
        i = 0
        try:
            while not errors:
                free[i].acquire()                 # the worker is done with buffer i
                n = readinto(bufs[i])
                if not n:
                    free[i].release()
                    break
                view = bufs[i][:n]
                q.put((view, free[i]))
                md5_update(view)
                if self._crc is not None:
                    self._crc = crc64(view, self._crc)
                self.size += n
                if self.size > limit:
                    raise OverflowError(self.size)
                i ^= 1
        finally:
            q.put(None)
            t.join()
        if errors:
            raise errors[0]

    def _write_queued(self, q: queue.Queue[tuple[memoryview, threading.Semaphore] | None],
                      errors: list[BaseException]) -> None:
        """The helper thread of ``_stream_pipelined``: write each queued buffer (nothing more after
        an error, which the caller raises), then hand the buffer back; None ends it."""
        while True:
            item = q.get()
            if item is None:
                return
            view, done = item
            try:
                if not errors:
                    while view:
                        k = os.write(self.fd, view)
                        view = view[k:]
            except BaseException as e:  # reported by the caller
                errors.append(e)
            finally:
                done.release()

    def copy_from(self, src_fd: int, offset: int, length: int) -> None:
        """Append bytes of another file without passing them through Python (no hashing)."""
        remaining = length
        while remaining > 0:
            try:
                n = os.copy_file_range(src_fd, self.fd, min(remaining, 1 << 30), offset)
            except OSError:
                n = 0
            if n <= 0:  # fall back to plain copy
                buf = os.pread(src_fd, min(remaining, _COPY_CHUNK), offset)
                if not buf:
                    raise OSError("short source file")
                os.write(self.fd, buf)
                n = len(buf)
            offset += n
            remaining -= n
            self.size += n

    @property
    def md5_hex(self) -> str:
        return self._md5.hexdigest().upper() if self._md5 else ""

    @property
    def md5_digest(self) -> bytes:
        return self._md5.digest() if self._md5 else b""

    @property
    def crc64(self) -> int | None:
        return self._crc

    def finish(self, entry: Entry, fsync: bool) -> None:
        """Append the metadata trailer and make the bytes durable (still invisible)."""
        if self.closed:
            return
        raw = entry.to_json()
        os.write(self.fd, raw + _TRAILER.pack(len(raw), MAGIC))
        if fsync:
            os.fsync(self.fd)
        os.close(self.fd)
        self.closed = True

    def discard(self) -> None:
        if not self.closed:
            os.close(self.fd)
            self.closed = True
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class OpenObject:
    """One consistent version of an object: its entry and open descriptors of its data.

    A completed multipart object keeps its parts as segment files (no copy at Complete), so
    its data is a list of (fd, length) pieces, each starting at offset 0 of its file.
    """

    def __init__(self, entry: Entry, pieces: list[tuple[int, int]]) -> None:
        self.entry = entry
        self.pieces = pieces
        self._fds = sorted({fd for fd, _ in pieces})

    def ranges(self, start: int, length: int) -> Iterator[tuple[int, int, int]]:
        """(fd, offset, count) covering [start, start+length)."""
        base = 0
        end = start + length
        for fd, n in self.pieces:
            lo, hi = max(start, base), min(end, base + n)
            if lo < hi:
                yield fd, lo - base, hi - lo
            base += n
            if base >= end:
                return

    def pread(self, offset: int, n: int) -> bytes:
        return b"".join(os.pread(fd, k, off) for fd, off, k in self.ranges(offset, n))

    def copy_to(self, tmp: TempObject, start: int = 0, length: int | None = None) -> None:
        for fd, off, k in self.ranges(start, self.entry.size - start if length is None else length):
            tmp.copy_from(fd, off, k)

    def close(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
