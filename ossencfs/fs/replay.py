"""Journal replay at mount: journal entries become dirty files with queued uploads.

Why it exists: before the mount serves, every acknowledged write that had not reached the
bucket (``fs.journal``) is rebuilt as a node with its staging, so reads see it at once and the
upload queue sends it; unusable entries are quarantined with a reason.
"""
from __future__ import annotations

import functools
import logging
import stat
import time
from typing import Callable

import trio

from ..errors import ConflictError
from . import dirtystate, keymap, posix
from .context import FsContext
from .journal import JournalEntry
from .readahead import BlockSource
from .reupload import Reupload, restore_reupload
from .staging import Staging

log = logging.getLogger(__name__)


class _PinnedBase:
    """The old version a replayed staging was opened from, fetched only if a range of it is
    still needed (untouched ranges); pinned by ETag, so a changed object is a ConflictError
    rather than silently different bytes."""

    def __init__(self, model: FsContext, key: str, etag: str, size: int) -> None:
        self.model, self.key, self.etag, self.size = model, key, etag, size
        self._source: BlockSource | None = None

    async def read(self, off: int, n: int) -> bytes:
        if self._source is None:
            info = await self.model.store.head(self.key)
            if info is None or info.etag != self.etag:
                raise ConflictError(f"oss://{self.model.store.name}/{self.key}: the version this "
                                    f"file was opened from is gone; its untouched ranges are lost")
            reader = await self.model.objects.open_reader(self.key, info)
            self._source = BlockSource(self.model.cache, reader, self.key, info.etag, info.size,
                                       self.model.spawn)
        return await self._source.read(off, n)


class Replay:
    def __init__(self, ctx: FsContext) -> None:
        self.ctx = ctx

    async def replay(self, entries: list[JournalEntry],
                     quarantine: Callable[[str, str], object]) -> int:
        """Rebuild dirty files from journal entries (before serving): reads come from staging
        at once; uploads are queued for now. Entries that cannot be used are quarantined."""
        latest: dict[str, JournalEntry] = {}
        for entry in entries:                      # oldest first: a later one supersedes
            old = latest.get(entry.key)
            if old is not None:
                quarantine(old.id, f"superseded by a newer entry for the same file ({entry.id})")
            latest[entry.key] = entry
        restored = 0
        for entry in latest.values():
            key = entry.key
            path = keymap.path_of_key(key[len(self.ctx.prefix):])
            if not key.startswith(self.ctx.prefix) or not key[len(self.ctx.prefix):] or key.endswith("/"):
                quarantine(entry.id, f"not a file key: {key!r}")
                continue
            if entry.relay is not None:       # a metadata change (fs.reupload): no key needed
                self._restored(path, entry, restore_reupload(self.ctx.staging, entry, entry.relay))
                restored += 1
                continue
            try:
                material = await trio.to_thread.run_sync(functools.partial(
                    self.ctx.staging.keyring.open, entry.crypto_headers,
                    object_name=f"oss://{self.ctx.store.name}/{key}"))
            except Exception as exc:
                quarantine(entry.id, f"cannot unwrap the data key with the configured "
                                        f"master keys: {exc}")
                continue
            base_etag = entry.base_etag
            base = _PinnedBase(self.ctx, key, base_etag, entry.base_len) \
                if base_etag and entry.base_len > 0 else None
            try:
                st = self.ctx.staging.restore(entry, material, base)
            except OSError as exc:
                quarantine(entry.id, f"cannot open its data file: {exc.strerror}")
                continue
            self._restored(path, entry, st)
            restored += 1
        return restored

    def _restored(self, path: str, entry: JournalEntry, st: Staging) -> None:
        """A replayed staging becomes its file's pending upload."""
        meta = posix.from_headers(entry.posix, is_dir=False, fallback_mtime=time.time(),
                                  policy=self.ctx.policy)
        node = self.ctx.inodes.bind(path, stat.S_IFREG, meta)
        node.meta = meta
        node.staging = st
        dirtystate.mark_dirty(node)
        node.unlinked = False
        node.exists_remote = st.base_etag is not None
        node.etag = st.base_etag
        node.size = entry.size
        node.headers = dict(st.kept) if isinstance(st, Reupload) else {}
        node.headers_expires = float("inf")
        if self.ctx.writeback is not None:
            self.ctx.writeback.schedule(node, 0)
        log.info("journal: replayed %s (%d bytes%s), upload queued", self.ctx.where(node),
                 entry.size, ", metadata change" if st.relay else "")
