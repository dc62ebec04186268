"""Files being written: a sparse local file of *ciphertext* under the new object's data key.

Why this shape:
- Plaintext never rests on local disk: every write is encrypted at its offset with the fresh
  key/IV that the uploaded object will carry (``KeyRing.new_object``), so the staging file is
  byte-for-byte the future object body wherever it was written.
- Ranges the writer did not touch come from the old object (fetched through the block cache,
  decrypted with the old key) and are re-encrypted with the new key only when the object is
  assembled for upload (``materialize``); beyond the old length (or after a truncate) they are
  zeros.
- Every upload needs a fresh key and IV. Once a staging has been uploaded it is *sealed*; a
  later write starts a successor (``StagingArea.rekey``) that re-encrypts the sealed file under
  a new key locally (no download), so no (key, IV) ever covers two different uploaded
  plaintexts at one offset. ``sealed`` is set (and journaled) before the bytes are sent and is
  restored from the entry after a crash; a successor started while the last attempt's fate is
  unknown remembers its wrapped key (``prior_keys``) so the uploader knows that object as ours.
- Each staging has a JSON manifest beside its data file (object key, base ETag, size, dirty
  extents, the *wrapped* key headers, POSIX attributes): the write-back journal entry
  (``fs.journal``). It is written durably (fsync file + directory) when a close or fsync is
  acknowledged (``committed``) and replayed after a crash (``StagingArea.restore``); it is
  removed once the upload landed, even while the file stays open.
- Disk calls that may be slow (create/truncate, unlink + directory fsync, quarantine) run in
  worker threads, never on the trio loop.
- Staged bytes count against the cache limit (``--cache-size``) and are never evicted: when
  a write would pass the limit, clean cache blocks are evicted first, and if the staged data
  alone would pass it the write fails with ENOSPC.
"""
from __future__ import annotations

import bisect
import errno
import functools
import logging
import os
import uuid
from typing import Any, Awaitable, Callable, Mapping, Protocol

import trio

from ..envelope import format as fmt
from ..envelope.ctr import crypt_at
from .journal import Journal, MountIdentity

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class PlainSource(Protocol):
    async def read(self, off: int, n: int) -> bytes: ...


class Extents:
    """Sorted, merged, half-open byte ranges that hold staged ciphertext."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self.ends, start)          # first range ending at/after start
        j = bisect.bisect_right(self.starts, end)         # ranges starting at/before end
        if i < j:
            start = min(start, self.starts[i])
            end = max(end, self.ends[j - 1])
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def truncate(self, size: int) -> None:
        i = bisect.bisect_left(self.ends, size)
        del self.starts[i + 1:], self.ends[i + 1:]
        if i < len(self.starts):
            if self.starts[i] >= size:
                del self.starts[i], self.ends[i]
            else:
                self.ends[i] = min(self.ends[i], size)

    def segments(self, start: int, end: int) -> list[tuple[int, int, bool]]:
        """Split [start, end) into (s, e, staged?) pieces."""
        out: list[tuple[int, int, bool]] = []
        pos = start
        i = bisect.bisect_right(self.ends, start)
        while pos < end:
            if i < len(self.starts) and self.starts[i] <= pos:
                e = min(self.ends[i], end)
                out.append((pos, e, True))
                pos = e
                i += 1
            else:
                nxt = self.starts[i] if i < len(self.starts) else end
                e = min(nxt, end)
                out.append((pos, e, False))
                pos = e
        return out

    def as_list(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self.starts, self.ends)]

    def total(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends))

    def uncovered(self, start: int, end: int) -> int:
        return sum(e - s for s, e, staged in self.segments(start, end) if not staged)


class Staging:
    def __init__(self, area: "StagingArea", ident: str, key: str, material: Any,
                 crypto_headers: Mapping[str, str], size: int, base: PlainSource | None,
                 base_len: int, base_etag: str | None, *, restore: bool = False) -> None:
        self.area = area
        self.ident = ident
        self.key = key
        self.material = material
        self.crypto_headers = dict(crypto_headers)
        self.size = size
        self.base = base
        self.base_len = base_len if base is not None else 0
        self.base_etag = base_etag
        self.extents = Extents()
        self.sealed = False          # uploaded: the next change needs a successor (new key)
        self.committed = False       # a close/fsync was acknowledged: replay after a crash
        self.changed = False         # written since the last journal entry
        self.synced = False          # the last entry (and the data) were fsynced
        self.usage = 0               # staged bytes counted against the cache limit
        self.posix: dict[str, str] = {}
        # wrapped keys of earlier stagings of this file whose upload may have landed (reply
        # lost, crash): an object carrying one of them is ours, not another client's
        self.prior_keys: list[str] = []
        self.data_path = os.path.join(area.directory, ident + ".data")
        self.manifest_path = os.path.join(area.directory, ident + ".json")
        flags = os.O_RDWR if restore else os.O_RDWR | os.O_CREAT | os.O_TRUNC
        self._fd = os.open(self.data_path, flags, 0o600)

    @property
    def wrapped_key(self) -> str | None:
        """The wrapped data key header: unique to this staging, so it identifies its uploads."""
        return {k.lower(): v for k, v in self.crypto_headers.items()}.get(fmt.H_KEY)

    # -- crypto helpers ----------------------------------------------------------------------
    def _enc(self, off: int, data: bytes) -> bytes:
        return crypt_at(self.material.key, self.material.counter0, off, data)

    def _write_sync(self, off: int, data: bytes) -> None:
        cipher = self._enc(off, data)
        view = memoryview(cipher)
        while view:
            n = os.pwrite(self._fd, view, off)
            view = view[n:]
            off += n

    def _read_plain_sync(self, off: int, n: int) -> bytes:
        return self._enc(off, os.pread(self._fd, n, off))

    def _read_cipher_sync(self, off: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = os.pread(self._fd, n - len(out), off + len(out))
            if not chunk:
                break
            out += chunk
        if len(out) < n:
            out += bytes(n - len(out))     # unreachable after materialize; keeps lengths exact
        return bytes(out)

    # -- file operations ---------------------------------------------------------------------
    def _account(self) -> None:
        new = self.extents.total()
        self.area.used += new - self.usage
        self.usage = new

    async def write(self, off: int, data: bytes) -> None:
        assert not self.sealed
        await self.area.reserve(self.extents.uncovered(off, off + len(data)))
        await trio.to_thread.run_sync(self._write_sync, off, data)
        self.extents.add(off, off + len(data))
        self._account()
        if off + len(data) > self.size:
            self.size = off + len(data)

    async def truncate(self, size: int) -> None:
        assert not self.sealed
        if size < self.size:
            self.extents.truncate(size)
            self.base_len = min(self.base_len, size)
            await trio.to_thread.run_sync(os.ftruncate, self._fd, size)
            self._account()
        self.size = size

    async def read(self, off: int, n: int) -> bytes:
        end = min(off + n, self.size)
        parts: list[bytes] = []
        for s, e, staged in self.extents.segments(off, end) if end > off else []:
            if staged:
                parts.append(await trio.to_thread.run_sync(self._read_plain_sync, s, e - s))
            else:
                parts.append(await self._base_plain(s, e))
        return b"".join(parts)

    async def _base_plain(self, s: int, e: int) -> bytes:
        if self.base is None or s >= self.base_len:
            return bytes(e - s)
        b_end = min(e, self.base_len)
        data = await self.base.read(s, b_end - s)
        if len(data) < b_end - s:
            data += bytes(b_end - s - len(data))
        return data + bytes(e - b_end)

    @property
    def complete(self) -> bool:
        return self.extents.uncovered(0, self.size) == 0

    async def materialize(self, alive: Callable[[], None] | None = None) -> None:
        """Fill every hole with the old object's bytes (or zeros) re-encrypted under the new key.

        Each filled range is recorded as it lands, so an interrupted materialize (network,
        ENOSPC) resumes where it stopped; ``alive`` is called after each chunk (progress)."""
        for s, e, staged in self.extents.segments(0, self.size):
            if staged:
                continue
            pos = s
            while pos < e:
                n = min(CHUNK, e - pos)
                plain = await self._base_plain(pos, pos + n)
                await self.area.reserve(n)
                await trio.to_thread.run_sync(self._write_sync, pos, plain)
                self.extents.add(pos, pos + n)
                self._account()
                pos += n
                if alive is not None:
                    alive()
        self.extents.add(0, self.size)
        self._account()
        self.base = None
        self.base_len = 0

    def sync_data(self) -> None:
        """fsync the ciphertext (blocking; call in a thread) before the entry says it is there."""
        if self._fd >= 0:
            os.fsync(self._fd)

    async def read_cipher(self, off: int, n: int) -> bytes:
        """The uploader's callback: the future object's bytes, after ``materialize``."""
        return await trio.to_thread.run_sync(self._read_cipher_sync, off, n)

    # -- bookkeeping -------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return {
            "key": self.key, "base_etag": self.base_etag, "size": self.size,
            "base_len": self.base_len, "extents": self.extents.as_list(),
            "crypto_headers": self.crypto_headers, "posix": dict(self.posix),
            "sealed": self.sealed, "committed": self.committed,
            "prior_keys": list(self.prior_keys),
        }

    async def save_manifest(self, posix: Mapping[str, str] | None = None, *,
                            durable: bool = False) -> None:
        """The journal entry; ``durable`` fsyncs data, entry and directory (acknowledgements)."""
        if posix is not None:
            self.posix = dict(posix)
        entry = self.manifest()

        def write() -> None:
            if durable:
                self.sync_data()
            self.area.journal.write(self.ident, entry, durable=durable)
        self.synced = False
        await trio.to_thread.run_sync(write)
        self.synced = durable

    async def discard(self) -> None:
        """Free the data file and the entry; the unlinks and directory fsync run in a worker
        thread (shielded: a cancelled caller must not leave a stale entry behind)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.area.used -= self.usage
        self.usage = 0
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(functools.partial(
                self.area.journal.remove, self.ident, durable=self.synced))


async def _no_room(target: int) -> None:
    return None


class StagingArea:
    """Creates stagings with fresh key material, in one directory per mounted bucket/prefix."""

    def __init__(self, directory: str, keyring: Any, journal: Journal | None = None, *,
                 limit: int = 1 << 62) -> None:
        self.directory = directory
        self.keyring = keyring
        self.journal = journal or Journal(directory, os.path.join(directory, "quarantine"),
                                          MountIdentity("", "", ""))
        self.limit = limit
        self.used = 0                 # staged bytes (never evicted)
        self.make_room: Callable[[int], Awaitable[None]] = _no_room   # evicts clean blocks
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.active: set[Staging] = set()

    async def reserve(self, n: int) -> None:
        """Room for ``n`` more staged bytes: evict clean cache blocks, else ENOSPC."""
        if n <= 0:
            return
        if self.used + n > self.limit:
            raise OSError(errno.ENOSPC, f"cache limit reached: {self.used} bytes staged and not "
                                        f"yet uploaded, limit {self.limit}")
        await self.make_room(self.limit - self.used - n)

    async def _fresh(self) -> tuple[Any, dict[str, str]]:
        material, headers = await trio.to_thread.run_sync(lambda: self.keyring.new_object())
        return material, headers

    async def new(self, key: str, size: int, base: PlainSource | None, base_len: int,
                  base_etag: str | None) -> Staging:
        material, headers = await self._fresh()
        st = await trio.to_thread.run_sync(functools.partial(
            Staging, self, uuid.uuid4().hex, key, material, headers, size, base, base_len,
            base_etag))
        try:
            await st.save_manifest()
        except BaseException:
            await st.discard()
            raise
        self.active.add(st)
        return st

    def restore(self, entry: Mapping[str, Any], material: Any, base: PlainSource | None) -> Staging:
        """A staging from a replayed journal entry (its data file is kept as it is)."""
        st = Staging(self, entry["id"], entry["key"], material, entry["crypto_headers"],
                     entry["size"], base, entry["base_len"], entry.get("base_etag"), restore=True)
        for s, e in entry["extents"]:
            st.extents.add(s, e)
        st.sealed = bool(entry["sealed"])     # sent before: a change needs a new key
        st.prior_keys = [k for k in entry.get("prior_keys", []) if isinstance(k, str)]
        st.committed = True
        st.synced = True
        st.posix = dict(entry["posix"])
        st._account()
        self.active.add(st)
        return st

    async def rekey(self, old: Staging, base_etag: str | None, *, committed: bool = False,
                    unconfirmed: bool = False) -> Staging:
        """A successor of a sealed (sent, fully materialized) staging under a fresh key.

        ``committed``: the old content is acknowledged but not in the bucket (its upload
        failed), so the successor takes over its journal entry durably before the old goes.
        ``unconfirmed``: the old upload's fate is unknown (it may have landed); the successor
        remembers its wrapped key so that such an object is recognised as ours."""
        material, headers = await self._fresh()
        st = await trio.to_thread.run_sync(functools.partial(
            Staging, self, uuid.uuid4().hex, old.key, material, headers, old.size, None, 0,
            base_etag))
        st.committed = committed
        st.posix = dict(old.posix)
        if unconfirmed:
            st.prior_keys = [k for k in [*old.prior_keys, old.wrapped_key] if k]

        def transcode() -> None:
            pos = 0
            while pos < old.size:
                n = min(CHUNK, old.size - pos)
                st._write_sync(pos, old._read_plain_sync(pos, n))
                pos += n
        try:
            await self.reserve(max(0, old.size - old.usage))    # old is dropped right after
            await trio.to_thread.run_sync(transcode)
            st.extents.add(0, old.size)
            st._account()
            await st.save_manifest(durable=committed)
        except BaseException:
            await st.discard()
            raise
        self.active.add(st)
        await self.drop(old)
        return st

    async def drop(self, st: Staging) -> None:
        self.active.discard(st)
        await st.discard()

    async def quarantine(self, st: Staging, reason: str) -> str:
        """Keep a staging that can no longer be uploaded aside (reported by status)."""
        if st._fd >= 0:
            os.close(st._fd)
            st._fd = -1
        self.used -= st.usage
        st.usage = 0
        self.active.discard(st)
        with trio.CancelScope(shield=True):
            return await trio.to_thread.run_sync(self.journal.quarantine, st.ident, reason)
