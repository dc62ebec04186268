"""Open files: open, create, read, write, flush, fsync, release, readlink; the handle table.

Why it exists: these are the calls that carry a file handle; they decide whether a read comes
from the staging (dirty) or from the bucket (a ``BlockSource`` pinned by ETag), and at which
close or fsync a dirty file moves on in its ``lifecycle``. The handle table lives here (not in
``operations``) because the upload queue asks whether a file still has writers.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass, field

import pyfuse3
import trio

from . import dirtystate, posix
from .attrs import Attrs
from .context import FsContext, fuse_err as _err
from .freshness import Freshness
from .inodes import Entry, Node, join
from .lifecycle import Lifecycle
from .namespace import Namespace
from .readahead import BlockSource

import logging

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Handle:
    fh: int
    node: Node
    writable: bool
    source: BlockSource | None = None
    source_etag: str | None = None
    source_key: str | None = None       # the object the source reads (a rename moves it)
    epoch: int = 0                      # the node's epoch when this handle was opened
    # the kernel sends several reads of a handle at once (4 MiB read-ahead: four 1 MiB
    # requests): one of them makes the source, the others wait for it instead of making their
    # own (a second source counted as a second stream and halved the window, readbudget)
    source_lock: trio.Lock = field(default_factory=trio.Lock)


class Files:
    def __init__(self, ctx: FsContext, attr: Attrs, fresh: Freshness, life: Lifecycle,
                 names: Namespace) -> None:
        self.ctx = ctx
        self.attr = attr
        self.fresh = fresh
        self.life = life
        self.names = names
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1

    async def readlink(self, ino: int) -> str:
        node = await self.fresh.resolve(self.ctx.node(ino))
        if node.kind != stat.S_IFLNK:
            raise _err(errno.EINVAL)
        if node.symlink_target is None:
            if node.object_type == "Symlink":
                node.symlink_target = await self.ctx.store.get_symlink(self.ctx.okey(node.path))
            else:
                src = await self.fresh.source(node)
                node.symlink_target = (await src.read(0, node.size)).decode("utf-8", "surrogateescape")
        return node.symlink_target

    async def open(self, ino: int, flags: int) -> pyfuse3.FileInfo:
        node = self.ctx.node(ino)
        writable = (flags & (os.O_WRONLY | os.O_RDWR)) != 0
        if writable and self.ctx.read_only:
            raise _err(errno.EROFS)
        if node.is_dir:
            raise _err(errno.EISDIR)
        if not node.dirty and node.exists_remote and not node.unlinked:
            before = node.etag
            self.fresh.opened(node)
            resolved = await self.fresh.resolve_for_read(node)
            if resolved is not node:
                raise _err(errno.ESTALE)
            if node.etag != before and node.staging is not None and node.staging.sealed:
                old, node.staging = node.staging, None        # someone else wrote a newer version
                await self.ctx.staging.drop(old)
        keep = (node.kernel_etag is not None and node.kernel_etag == node.etag) or node.dirty
        node.kernel_etag = node.etag
        fh = self._next_fh
        self._next_fh += 1
        handle = Handle(fh, node, writable, epoch=node.epoch)
        self.handles[fh] = handle
        node.open_count += 1
        if writable and flags & os.O_TRUNC:
            async with node.lock:
                await self.life.truncate_locked(node, 0)
            keep = False
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    async def create(self, parent_ino: int, name: str, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        if self.ctx.read_only:
            raise _err(errno.EROFS)
        parent = self.ctx.node(parent_ino)
        path = join(parent.path, name)
        self.ctx.check_key_length(path)
        # the data key first: a create that cannot have one (its KMS unreachable) leaves no
        # name behind (the node was bound first: a 0-byte file showed until the next mount)
        st = await self.ctx.staging.new(self.ctx.okey(path), 0, None, 0, None)
        existing = self.ctx.inodes.at(path)
        meta = posix.new_meta(stat.S_IFREG, mode, ctx.uid, ctx.gid)
        if existing is not None and existing.kind == stat.S_IFREG and not existing.unlinked:
            node = existing
            node.meta = meta
        else:
            node = self.ctx.inodes.bind(path, stat.S_IFREG, meta)
            node.exists_remote = False
            node.headers = {}
        replaced = self.ctx.undefer(self.ctx.okey(path))     # an unlinked-while-open object
        try:
            async with node.lock:
                if node.staging is not None:
                    old, node.staging = node.staging, None
                    await self.ctx.staging.drop(old)
                if replaced is not None and not node.exists_remote:
                    node.exists_remote, node.etag = True, replaced   # the version it replaces
                st.base_etag = node.etag if node.exists_remote else None
                node.staging = st
                dirtystate.mark_dirty(node)
                node.size = 0
        except BaseException:
            if node.staging is not st:               # (interrupted while waiting for the lock)
                with trio.CancelScope(shield=True):
                    await self.ctx.staging.drop(st)
            raise
        self.ctx.inodes.note_entry(parent.path, Entry(name, stat.S_IFREG, 0, None, time.time()))
        self.names.touch_dir(parent)
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(fh, node, True, epoch=node.epoch)
        node.open_count += 1
        node.nlookup += 1
        node.kernel_etag = None
        return pyfuse3.FileInfo(fh=fh), self.attr.attrs(node)

    def handle(self, fh: int) -> Handle:
        h = self.handles.get(fh)
        if h is None:
            raise _err(errno.EBADF)
        return h

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handle(fh)
        node = h.node
        if node.staging is not None and not node.staging.relay:
            if node.upload_busy:            # the uploader holds the lock; staging is frozen
                return await node.staging.read(off, size)
            async with node.lock:
                if node.staging is not None and not node.staging.relay:
                    return await node.staging.read(off, size)
        if not node.exists_remote:
            return b""
        source = h.source
        if source is None or h.source_etag != node.etag or \
                h.source_key != self.ctx.okey(node.path):
            async with h.source_lock:
                source = h.source
                if source is None or h.source_etag != node.etag or \
                        h.source_key != self.ctx.okey(node.path):
                    if source is not None:
                        self.ctx.cache.streams.done(source)
                    source = h.source = await self.fresh.source(node)
                    h.source_etag, h.source_key = node.etag, self.ctx.okey(node.path)
        return await source.read(off, size)

    def _check_epoch(self, h: Handle, what: str) -> None:
        """EIO for a writer whose local version was taken from it (it went to a conflict
        copy or to quarantine, ``Lifecycle``): what it writes now has no version to join,
        and must neither be laid over another client's object nor be dropped silently."""
        if h.writable and h.epoch != h.node.epoch:
            log.error("%s %s: this file's local version was moved aside (conflict copy or "
                      "quarantine, see the log above); reopen the file", what,
                      self.ctx.where(h.node))
            raise _err(errno.EIO)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self.handle(fh)
        if self.ctx.read_only:
            raise _err(errno.EROFS)
        self._check_epoch(h, "write")
        node = h.node
        async with node.lock:
            st = await self.life.ensure_staging(node)
            await st.write(off, buf)
            st.changed = True
            dirtystate.mark_dirty(node)
            node.meta.mtime_ns = node.meta.ctime_ns = time.time_ns()
        return len(buf)

    def writers(self, node: Node) -> int:
        return sum(1 for h in self.handles.values() if h.node is node and h.writable)

    async def flush(self, fh: int) -> None:
        h = self.handle(fh)
        node = h.node
        self._check_epoch(h, "close")
        if h.writable and node.dirty:        # a reader's close does not upload a writer's file
            async with node.lock:
                await self.life.close_locked(node)

    async def fsync(self, fh: int) -> None:
        """fsync waits until the data is in the bucket, in every mode."""
        self._check_epoch(self.handle(fh), "fsync")
        node = self.handle(fh).node
        if node.dirty:
            async with node.lock:
                if not node.dirty:
                    return
                await self.life.upload_now(node)

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        if h.source is not None:             # its read-ahead share goes back to the others
            self.ctx.cache.streams.done(h.source)
        node = h.node
        node.open_count -= 1
        try:
            if node.dirty and node.open_count == 0:
                async with node.lock:
                    await self.life.release_locked(node)
        finally:
            if node.open_count == 0 and not node.dirty and node.staging is not None:
                old, node.staging = node.staging, None
                await self.ctx.staging.drop(old)
            if node.open_count == 0 and node.unlinked:
                await self.ctx.delete_deferred(node)
            self.ctx.inodes.release_check(node)
