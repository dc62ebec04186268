"""Files being written: a sparse local file of *ciphertext* under the new object's data key.

Why this shape:
- Plaintext never rests on local disk: every write is encrypted at its offset with the fresh
  key/IV that the uploaded object will carry (``KeyRing.new_object``), so the staging file is
  byte-for-byte the future object body wherever it was written.
- Only bytes actually written are staged. Ranges the writer did not touch come from the old
  object (fetched through the block cache, decrypted with the old key) and holes beyond the
  old length (or after a truncate) are zeros: both are produced while the object is uploaded
  (``read_cipher``: zeros encrypt to the keystream), so ``truncate -s 100G`` or an append to
  an object larger than ``--cache-size`` stages nothing but what was written. Untouched old
  ranges are fetched into the staging (``materialize``) only where the old version may go
  away first: a write-back close when they fit under the limit, a rename.
- Every upload needs a fresh key and IV. Once a staging has been uploaded it is *sealed*; a
  later write starts a successor (``StagingArea.rekey``) that re-encrypts the sealed file
  under a new key locally (no download), so no (key, IV) ever covers two different uploaded
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
  memory: writing it costs no hop either, and it goes to disk with a write-back close's commit
  (or whatever needs the file first), fsynced before the entry that acknowledges it. Without
  write-back a close or fsync sends it from memory and writes it only if that upload fails
  (``Lifecycle.upload_now``). Nothing of it is on disk before then, so a crash before the
  close returned leaves nothing to keep aside.
- Staged bytes count against the cache limit (``--cache-size``) and are never evicted: when
  a write would pass the limit, clean cache blocks are evicted first, and if the staged data
  alone would pass it the write fails with ENOSPC. The same on the cache file system: clean
  blocks are evicted until the write fits (``make_disk_room``); ENOSPC from the OS means
  staged data (and other programs) fill it.

This module is one staging's bytes (write, truncate, read, materialize, the uploader's
``read_cipher``) and its journal entry; ``fs.extents`` says which ranges are staged and
``fs.stagingarea`` makes stagings, keeps the byte budget and removes or quarantines them.
"""
from __future__ import annotations

import errno
import os
import threading
from typing import TYPE_CHECKING, Callable, Mapping, Protocol

import trio

from ..envelope import format as fmt
from ..envelope.ctr import crypt_at
from ..errors import ConflictError, NotFoundError
from .dirtystate import KeyState
from .extents import Extents
from .journal import Manifest

if TYPE_CHECKING:
    from ..envelope.keys import ContentMaterial
    from .stagingarea import StagingArea

CHUNK = 1 << 20
#: A complete staging up to this size is sealed when it is committed for an upload that follows
#: (``Staging.sealable``): the entry then says so already, so the upload writes no entry before
#: sending; a later change re-keys it, which for a small file is a cheap local transcode.
SEAL_AT_COMMIT = 1 << 20
BUFFER_FILE = 64 << 10      # ciphertext kept in memory until the data file is needed ...
BUFFER_TOTAL = 32 << 20     # ... for all stagings together


class BaseGoneError(ConflictError):
    """The version a partly rewritten file was opened from is gone before its untouched
    ranges were fetched: the local version cannot be completed."""


class PlainSource(Protocol):
    async def read(self, off: int, n: int) -> bytes: ...


class Staging:
    """One dirty file's bytes, encrypted under its fresh data key (``material``; None only for
    a ``fs.reupload.Reupload``, which encrypts nothing), and its journal entry."""

    relay = False                    # a ``fs.reupload.Reupload``: no data of its own

    def __init__(self, area: "StagingArea", ident: str, key: str,
                 material: ContentMaterial | None, crypto_headers: Mapping[str, str],
                 size: int, base: PlainSource | None, base_len: int, base_etag: str | None,
                 *, restore: bool = False) -> None:
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
        material = self.material
        assert material is not None, "a re-upload (no material) encrypts nothing"
        return crypt_at(material.key, material.counter0, off, data)

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
        """The future object's bytes [off, off+n) where no old range is needed: staged
        ciphertext, and the keystream (encrypted zeros) for holes (blocking)."""
        parts: list[bytes] = []
        for s, e, staged in self.extents.segments(off, off + n):
            if not staged:
                if s < self.base_len:
                    raise OSError(errno.EINVAL, f"internal: old range {s}-{e} not fetched")
                parts.append(self._enc(s, bytes(e - s)))
            elif (buf := self._buf) is not None:
                parts.append(bytes(buf[s:e]))
            else:
                parts.append(self._pread_all(s, e - s))
        return b"".join(parts)

    def _pread_all(self, off: int, n: int) -> bytes:
        fd = self._file()
        out = bytearray()
        while len(out) < n:
            chunk = os.pread(fd, n - len(out), off + len(out))
            if not chunk:
                raise OSError(errno.EIO, f"staging data file ends before {off + n}")
            out += chunk
        return bytes(out)

    # -- file operations ---------------------------------------------------------------------
    def account(self) -> None:
        """Count the staged bytes against the area's budget (after the extents changed)."""
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
        self.account()
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
            self.account()
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
        """Every byte can be produced without the old object (holes are zeros)."""
        return self.base_missing() == 0

    def base_missing(self) -> int:
        """Bytes of the old object still needed (untouched ranges below ``base_len``)."""
        if self.base is None:
            return 0
        return self.extents.uncovered(0, min(self.base_len, self.size))

    @property
    def in_memory(self) -> bool:
        """All of it is in memory: no data file and no journal entry exist (a small new
        file until something needs the file; see the module docstring)."""
        return self._buf is not None and self._fd < 0 and not self.entry_written

    @property
    def sealable(self) -> bool:
        """Small and complete: may be sealed at commit, ahead of its upload."""
        return self.size <= SEAL_AT_COMMIT and self.complete

    async def materialize(self, alive: Callable[[], None] | None = None) -> None:
        """Fetch the old object's untouched ranges into the staging, re-encrypted under the
        new key (holes beyond the old length stay holes: they are zeros).

        Each filled range is recorded as it lands, so an interrupted materialize (network,
        ENOSPC) resumes where it stopped; ``alive`` is called after each chunk (progress)."""
        for s, e, staged in self.extents.segments(0, min(self.base_len, self.size)):
            if staged:
                continue
            pos = s
            while pos < e:
                n = min(CHUNK, e - pos)
                plain = await self._base_plain(pos, pos + n)
                await self.area.reserve(n)
                await trio.to_thread.run_sync(self._write_sync, pos, plain)
                self.extents.add(pos, pos + n)
                self.account()
                pos += n
                if alive is not None:
                    alive()
        self.base = None
        self.base_len = 0

    def transcode_sync(self, old: "Staging", ranges: list[list[int]], durable: bool) -> None:
        """Re-encrypt ``old``'s staged ``ranges`` under this staging's key and write this
        staging's first entry (blocking; worker thread; ``StagingArea.rekey``)."""
        self._file(first_entry=False)        # its first entry is the one saved here
        for s, e in ranges:
            for pos in range(s, e, CHUNK):
                n = min(CHUNK, e - pos)
                self._write_sync(pos, old._read_plain_sync(pos, n))
        self._save_sync(self.manifest(), durable)

    def sync_data(self) -> None:
        """fsync the ciphertext (blocking; call in a thread) before the entry says it is there."""
        if self._fd >= 0:
            os.fsync(self._fd)

    async def read_cipher(self, off: int, n: int) -> bytes:
        """The uploader's callback: the future object's bytes [off, off+n): staged
        ciphertext, holes as keystream, untouched old ranges fetched from the old version
        and re-encrypted (BaseGoneError when that version is gone)."""
        parts: list[bytes] = []
        for s, e, staged in self.extents.segments(off, off + n):
            if staged or s >= self.base_len or self.base is None:
                parts.append(await trio.to_thread.run_sync(self._read_cipher_sync, s, e - s))
                continue
            try:
                plain = await self._base_plain(s, e)
            except (ConflictError, NotFoundError) as exc:
                raise BaseGoneError(f"{self.key}: {exc}") from None
            parts.append(await trio.to_thread.run_sync(self._enc, s, plain))
        return b"".join(parts)

    def read_cipher_sync(self, off: int, n: int) -> bytes:
        """``read_cipher`` for a worker thread that is sending the bytes anyway (only when
        ``complete``: no old range to fetch)."""
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
