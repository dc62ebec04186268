"""Where stagings live: one directory per mounted bucket/prefix, and its byte budget.

Why it exists: a ``fs.staging.Staging`` is one file's bytes; what is shared between all of
them lives here. ``StagingArea`` makes stagings with fresh key material (``new``: on the loop
for a local RSA key, in a worker thread when KMS may be called), restores them from replayed
journal entries (``restore``), starts the successor of a sealed staging under a new key
(``rekey``: a local transcode, no download), and frees or quarantines them (``drop``,
``quarantine``).

The budget: staged bytes (``used``) count against the cache limit (``--cache-size``) and are
never evicted; ``reserve`` evicts clean cache blocks first (``make_room``, and
``make_disk_room`` on the cache file system) and raises ENOSPC when staged data alone would
pass the limit. Ciphertext kept in memory before a data file exists is capped for all
stagings together (``buffered``, ``fs.staging.BUFFER_TOTAL``).

Removals of discarded stagings run in a worker thread; those asked for while one runs go
together in the next call, with one directory fsync (``remove``).
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable

import trio

from ..atomicfile import fsync_dir
from . import dirtystate
from .journal import Journal, JournalEntry, MountIdentity
from .keypool import KeyPool
from .staging import BUFFER_TOTAL, PlainSource, Staging

if TYPE_CHECKING:
    from ..envelope.keys import ContentMaterial, KeyRing

log = logging.getLogger(__name__)


@dataclass
class _Removal:
    """One ``StagingArea.remove`` waiting for (or in) a worker call."""
    ident: str
    durable: bool
    done: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None


async def _no_room(target: int) -> None:
    return None


class StagingArea:
    """Creates stagings with fresh key material, in one directory per mounted bucket/prefix."""

    def __init__(self, directory: str, keyring: KeyRing, journal: Journal | None = None, *,
                 limit: int = 1 << 62, keys: KeyPool | None = None) -> None:
        self.directory = directory
        self.keyring = keyring
        self.keys = keys or KeyPool(keyring)     # fresh data keys (made ahead in bursts)
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
        self._rm_queue: list[_Removal] = []
        self._rm_busy = False
        self._rm_idle = trio.Event()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.active: set[Staging] = set()

    async def remove(self, ident: str, *, durable: bool) -> None:
        """``Journal.remove`` of a discarded staging (descriptor closed) in a worker thread.
        Removals asked for while one is running go together in the next worker call, with
        one directory fsync for those that need it: a stream of finished uploads would
        otherwise cost a thread hop each."""
        item = _Removal(ident, durable)
        self._rm_queue.append(item)
        while not item.done.is_set():
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
                    it.done.set()
                self._rm_idle.set()
                self._rm_idle = trio.Event()
        if item.error is not None:
            raise item.error

    def _remove_batch(self, batch: list[_Removal]) -> None:
        for it in batch:
            try:
                self.journal.remove(it.ident, durable=False, data_closed=True)
            except Exception as exc:             # reported to its own caller
                it.error = exc
        if any(it.durable and it.error is None for it in batch):
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

    async def new(self, key: str, size: int, base: PlainSource | None, base_len: int,
                  base_etag: str | None) -> Staging:
        """A staging with a fresh data key; its files are made when first needed."""
        material, headers = await self.keys.take(key)
        st = Staging(self, uuid.uuid4().hex, key, material, headers, size, base, base_len,
                     base_etag)
        self.active.add(st)
        return st

    def restore(self, entry: JournalEntry, material: ContentMaterial,
                base: PlainSource | None) -> Staging:
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
        st.account()
        self.active.add(st)
        return st

    async def rekey(self, old: Staging, base_etag: str | None, *, committed: bool = False,
                    unconfirmed: bool = False) -> Staging:
        """A successor of a sealed (sent) staging under a fresh key: its staged ranges are
        re-encrypted locally; its holes stay holes and its untouched old ranges still come
        from the same old version (a caller whose upload landed builds on that instead).

        ``committed``: the old content is acknowledged but not in the bucket (its upload
        failed), so the successor takes over its journal entry durably before the old goes.
        ``unconfirmed``: the old upload's fate is unknown (it may have landed); the successor
        remembers its wrapped key so that such an object is recognised as ours."""
        st = await self.new(old.key, old.size, old.base, old.base_len, base_etag)
        self.active.discard(st)              # (added below, once it holds the content)
        if committed:
            dirtystate.commit(st)
        st.posix = dict(old.posix)
        if unconfirmed:
            st.prior_keys = [k for k in [*old.prior_keys, old.wrapped_key] if k]
        ranges = old.extents.as_list()
        for s, e in ranges:                  # what transcode() writes, before its entry says so
            st.extents.add(s, e)
        try:
            await self.make_disk_room(old.usage)   # (old is dropped right after: same budget)
            await trio.to_thread.run_sync(st.transcode_sync, old, ranges, committed)
            st.account()
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
        """Keep a staging that can no longer be uploaded aside (reported by status; the
        caller logs it, naming the object)."""
        st.close_for_good()
        self.active.discard(st)
        with trio.CancelScope(shield=True):
            where: str = await trio.to_thread.run_sync(
                functools.partial(self.journal.quarantine, st.ident, reason, report=False))
        return where
