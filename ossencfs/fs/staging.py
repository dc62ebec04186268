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
  worker threads, never on the trio loop. The data file is created by the first operation
  that needs it (a write, a commit), in that operation's worker call, together with a first
  entry that is not committed (data on disk always has an entry: kept aside after a crash),
  so that creating a file costs no thread hop of its own; with a local master key (RSA) the
  fresh data key is made on the loop as well (CPU only, less than a hop costs). Until then,
  the ciphertext of a small file (up to ``BUFFER_FILE``, ``BUFFER_TOTAL`` for all) is kept in
  memory: writing it costs no hop either, and it goes to disk with the close's commit (or
  whatever needs the file first), fsynced before the entry that acknowledges it. Nothing of
  it is on disk before that commit, so a crash before the close leaves nothing to keep aside.
- Staged bytes count against the cache limit (``--cache-size``) and are never evicted: when
  a write would pass the limit, clean cache blocks are evicted first, and if the staged data
  alone would pass it the write fails with ENOSPC. The same on the cache file system: clean
  blocks are evicted until the write fits (``make_disk_room``); ENOSPC from the OS means
  staged data (and other programs) fill it.
"""
from __future__ import annotations

import bisect
import errno
import logging
import os
import threading
import uuid
from typing import Any, Awaitable, Callable, Mapping, Protocol

import trio

from ..atomicfile import fsync_dir
from ..envelope import format as fmt
from ..envelope.ctr import crypt_at
from . import dirtystate
from .dirtystate import KeyState
from .journal import Journal, JournalEntry, Manifest, MountIdentity

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: A complete staging up to this size is sealed when it is committed for an upload that follows
#: (``Staging.sealable``): the entry then says so already, so the upload writes no entry before
#: sending; a later change re-keys it, which for a small file is a cheap local transcode.
SEAL_AT_COMMIT = 1 << 20
BUFFER_FILE = 64 << 10      # ciphertext kept in memory until the data file is needed ...
BUFFER_TOTAL = 32 << 20     # ... for all stagings together


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
    relay = False                    # a ``fs.reupload.Reupload``: no data of its own

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
        # sealed (the next change needs a successor under a new key) and committed (replay
        # after a crash): changed only by fs.dirtystate's transitions
        self.key_state = KeyState.OPEN
        self.changed = False         # written since the last journal entry
        self.synced = False          # the last entry (and the data) were fsynced
        self.entry_sealed = False    # the last entry written says ``sealed``
        self.entry_committed = False  # the entry on disk may say ``committed``
        self.entry_written = restore  # an entry may be on disk (else the first one is new)
        self.usage = 0               # staged bytes counted against the cache limit
        self.posix: dict[str, str] = {}
        # wrapped keys of earlier stagings of this file whose upload may have landed (reply
        # lost, crash): an object carrying one of them is ours, not another client's
        self.prior_keys: list[str] = []
        self.data_path = os.path.join(area.directory, ident + ".data")
        self.manifest_path = os.path.join(area.directory, ident + ".json")
        self._file_lock = threading.Lock()
        self._gone = False           # discarded or quarantined: no file is made any more
        # a new staging's data file is made on first use (``_file``)
        self._fd = os.open(self.data_path, os.O_RDWR) if restore else -1
        # the ciphertext of [0, len) while there is no data file (valid where extents say so)
        self._buf: bytearray | None = None if restore else bytearray()

    @property
    def sealed(self) -> bool:
        """Its key/IV may be in the bucket: it never encrypts other plaintext."""
        return self.key_state.sealed

    @property
    def committed(self) -> bool:
        """A close/fsync/setattr was acknowledged on it: its entry is replayed."""
        return self.key_state.committed

    @property
    def wrapped_key(self) -> str | None:
        """The wrapped data key header: unique to this staging, so it identifies its uploads."""
        return {k.lower(): v for k, v in self.crypto_headers.items()}.get(fmt.H_KEY)

    # -- crypto helpers ----------------------------------------------------------------------
    def _enc(self, off: int, data: bytes) -> bytes:
        return crypt_at(self.material.key, self.material.counter0, off, data)

    def _file(self, *, first_entry: bool = True) -> int:
        """The data file (blocking; worker thread), made on first use: with a first entry,
        not committed, unless the caller writes an entry itself (``first_entry=False``)."""
        if self._fd >= 0:
            return self._fd
        with self._file_lock:
            if self._fd >= 0:
                return self._fd
            if self._gone:
                raise OSError(errno.EBADF, "staging already discarded")
            journal = self.area.journal
            removed = journal.was_removed(self.ident)
            # (removed while it stays open, as by an unlink: nothing of it may be journaled
            # any more, so the data goes to an anonymous file)
            fd = journal.anonymous_file() if removed else journal.create_data(self.ident)
            try:
                if first_entry and not removed and not self.entry_written:
                    self._write_entry({**self.manifest(), "committed": False}, False)
                if self._buf:
                    view, off = memoryview(self._buf), 0
                    while off < len(view):
                        off += os.pwrite(fd, view[off:], off)
            except BaseException:
                os.close(fd)
                if not removed:
                    try:
                        os.unlink(self.data_path)
                    except OSError:
                        pass
                raise
            self._fd = fd
            self._unbuffer()
            return fd

    def _unbuffer(self) -> None:
        if self._buf is not None:
            self.area.buffered(-len(self._buf))
            self._buf = None

    def _write_sync(self, off: int, data: bytes) -> None:
        cipher = self._enc(off, data)
        fd = self._file()
        view = memoryview(cipher)
        while view:
            n = os.pwrite(fd, view, off)
            view = view[n:]
            off += n

    def _read_plain_sync(self, off: int, n: int) -> bytes:
        buf = self._buf
        if buf is not None:                  # reading needs no file (nor disk space)
            return self._enc(off, bytes(buf[off:off + n]))
        return self._enc(off, os.pread(self._file(), n, off))

    def _read_cipher_sync(self, off: int, n: int) -> bytes:
        buf = self._buf
        if buf is not None:
            out = bytearray(buf[off:off + n])
            return bytes(out + bytes(n - len(out)))
        fd = self._file()
        out = bytearray()
        while len(out) < n:
            chunk = os.pread(fd, n - len(out), off + len(out))
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
        end = off + len(data)
        buf = self._buf
        if buf is not None and end <= BUFFER_FILE and \
                self.area.buffered(max(0, end - len(buf))):
            if end > len(buf):                   # (counted just above)
                buf.extend(bytes(end - len(buf)))
            buf[off:end] = self._enc(off, data)  # CPU only: no thread hop
        else:
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
            if self._buf is not None:
                if len(self._buf) > size:
                    self.area.buffered(size - len(self._buf))
                    del self._buf[size:]
            elif self._fd >= 0:
                await trio.to_thread.run_sync(os.ftruncate, self._fd, size)
            self._account()
        self.size = size

    async def read(self, off: int, n: int) -> bytes:
        end = min(off + n, self.size)
        parts: list[bytes] = []
        for s, e, staged in self.extents.segments(off, end) if end > off else []:
            buf = self._buf                  # (a worker may be writing it out meanwhile)
            if staged and buf is not None:
                parts.append(self._enc(s, bytes(buf[s:e])))
            elif staged:
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

    @property
    def sealable(self) -> bool:
        """Small and complete: may be sealed at commit, ahead of its upload."""
        return self.size <= SEAL_AT_COMMIT and self.complete

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

    def read_cipher_sync(self, off: int, n: int) -> bytes:
        """``read_cipher`` for a worker thread that is sending the bytes anyway."""
        return self._read_cipher_sync(off, n)

    # -- bookkeeping -------------------------------------------------------------------------
    def manifest(self) -> Manifest:
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
        self.synced = False
        await trio.to_thread.run_sync(self._save_sync, entry, durable)

    def _save_sync(self, entry: Manifest, durable: bool) -> None:
        self._file(first_entry=False)        # an entry names a data file that exists
        if durable:
            self.sync_data()
        self._write_entry(entry, durable)

    def _write_entry(self, entry: Manifest, durable: bool) -> None:
        # an entry that acknowledges nothing yet is overwritten in place (``Journal.write``)
        in_place = self.entry_written and not self.entry_committed
        self.entry_written = True
        self.entry_committed = self.entry_committed or entry["committed"]
        self.area.journal.write(self.ident, entry, durable=durable, in_place=in_place)
        self.synced = durable
        self.entry_sealed = entry["sealed"]

    def close_for_good(self) -> bool:
        """Stop using the data file: close it and give its bytes back to the area's budget
        (False: it was not open)."""
        with self._file_lock:
            self._gone = True
            fd, self._fd = self._fd, -1
            self._unbuffer()
        if fd >= 0:
            os.close(fd)
        self.area.used -= self.usage
        self.usage = 0
        return fd >= 0

    async def discard(self) -> None:
        """Free the data file and the entry; the unlinks and directory fsync run in a worker
        thread (shielded: a cancelled caller must not leave a stale entry behind)."""
        if not self.close_for_good() and not self.entry_written:
            self.area.journal.forget_removed(self.ident)
            return                           # never made it to disk
        with trio.CancelScope(shield=True):
            await self.area.remove(self.ident, durable=self.synced)


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
        # evicts clean blocks until the cache file system has room for n more bytes
        self.make_disk_room: Callable[[int], Awaitable[None]] = _no_room
        self._buffered = 0            # bytes of ciphertext kept in memory (``BUFFER_TOTAL``)
        self._buffered_lock = threading.Lock()
        # removals of discarded stagings, grouped into one worker call while one runs
        self._rm_queue: list[list[Any]] = []      # [ident, durable, done event, error]
        self._rm_busy = False
        self._rm_idle = trio.Event()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.active: set[Staging] = set()

    async def remove(self, ident: str, *, durable: bool) -> None:
        """``Journal.remove`` of a discarded staging (descriptor closed) in a worker thread.
        Removals asked for while one is running go together in the next worker call, with
        one directory fsync for those that need it: a stream of finished uploads would
        otherwise cost a thread hop each."""
        item: list[Any] = [ident, durable, trio.Event(), None]
        self._rm_queue.append(item)
        while not item[2].is_set():
            if self._rm_busy:
                await self._rm_idle.wait()
                continue
            self._rm_busy = True
            batch, self._rm_queue = self._rm_queue, []
            try:
                await trio.to_thread.run_sync(self._remove_batch, batch)
            finally:
                self._rm_busy = False
                for it in batch:
                    it[2].set()
                self._rm_idle.set()
                self._rm_idle = trio.Event()
        if item[3] is not None:
            raise item[3]

    def _remove_batch(self, batch: list[list[Any]]) -> None:
        for it in batch:
            try:
                self.journal.remove(it[0], durable=False, data_closed=True)
            except Exception as exc:             # reported to its own caller
                it[3] = exc
        if any(it[1] and it[3] is None for it in batch):
            try:
                fsync_dir(self.journal.directory)
            except OSError as exc:
                log.warning("journal: cannot fsync %s: %s", self.journal.directory, exc)

    def buffered(self, n: int) -> bool:
        """Count ``n`` more (or, negative, fewer) bytes kept in memory; False: over the cap."""
        with self._buffered_lock:
            if n > 0 and self._buffered + n > BUFFER_TOTAL:
                return False
            self._buffered += n
            return True

    async def reserve(self, n: int) -> None:
        """Room for ``n`` more staged bytes, under the limit and on the disk: evict clean
        cache blocks, else ENOSPC (from the limit here, or from the disk when written)."""
        if n <= 0:
            return
        if self.used + n > self.limit:
            raise OSError(errno.ENOSPC, f"cache limit reached: {self.used} bytes staged and not "
                                        f"yet uploaded, limit {self.limit}")
        await self.make_room(self.limit - self.used - n)
        await self.make_disk_room(n)

    async def _fresh(self) -> tuple[Any, dict[str, str]]:
        material, headers = await trio.to_thread.run_sync(lambda: self.keyring.new_object())
        return material, headers

    async def new(self, key: str, size: int, base: PlainSource | None, base_len: int,
                  base_etag: str | None) -> Staging:
        """A staging with a fresh data key; its files are made when first needed."""
        if getattr(self.keyring, "local_writer", False):
            material, headers = self.keyring.new_object()      # CPU only: cheaper than a hop
        else:
            material, headers = await self._fresh()           # KMS: may call out
        st = Staging(self, uuid.uuid4().hex, key, material, headers, size, base, base_len,
                     base_etag)
        self.active.add(st)
        return st

    def restore(self, entry: JournalEntry, material: Any, base: PlainSource | None) -> Staging:
        """A staging from a replayed journal entry (its data file is kept as it is)."""
        st = Staging(self, entry.id, entry.key, material, entry.crypto_headers,
                     entry.size, base, entry.base_len, entry.base_etag, restore=True)
        for s, e in entry.extents:
            st.extents.add(s, e)
        dirtystate.restored(st, sealed=entry.sealed)   # sealed: a change needs a new key
        st.prior_keys = list(entry.prior_keys)
        st.synced = True
        st.entry_sealed = st.sealed
        st.entry_committed = True
        st.posix = dict(entry.posix)
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
        st = await self.new(old.key, old.size, None, 0, base_etag)
        self.active.discard(st)              # (added below, once it holds the content)
        if committed:
            dirtystate.commit(st)
        st.posix = dict(old.posix)
        if unconfirmed:
            st.prior_keys = [k for k in [*old.prior_keys, old.wrapped_key] if k]
        st.extents.add(0, old.size)          # what transcode() writes, before its entry says so

        def transcode() -> None:
            st._file(first_entry=False)      # its first entry is the one saved here
            pos = 0
            while pos < old.size:
                n = min(CHUNK, old.size - pos)
                st._write_sync(pos, old._read_plain_sync(pos, n))
                pos += n
            st._save_sync(st.manifest(), committed)
        try:
            await self.reserve(max(0, old.size - old.usage))    # old is dropped right after
            await trio.to_thread.run_sync(transcode)
            st._account()
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
        st.close_for_good()
        self.active.discard(st)
        with trio.CancelScope(shield=True):
            where = await trio.to_thread.run_sync(self.journal.quarantine, st.ident, reason)
        return where
