"""The filesystem model: POSIX names and files on top of objects, ossfs layout.

Why it exists: it is the one object the FUSE layer (``fs.operations``), the mounter, the
upload queue, the status file and the tests talk to. It holds the shared state
(``fs.context.FsContext``, which it extends) and builds the rooms that do the work, each
knowing only the rooms below it::

    files ─┬─> namespace ─> metadata ─┐
    rename ┘                          ├─> lifecycle ─> freshness ─> attrs ─> context
    replay ───────────────────────────┘

- ``attrs``: a node as the kernel sees it; a HEAD's answer applied to a node
- ``freshness``: listings, HEAD revalidation, stat-ahead, lookup/getattr
- ``lifecycle``: every state change of a dirty file (staging, journal commit, upload, conflict)
- ``metadata``: setattr and how a metadata change is stored
- ``namespace``: mkdir/rmdir/unlink/symlink/mknod, markers, directory times
- ``rename``: rename of files and directories
- ``files``: the handle table; open/create/read/write/flush/fsync/release/readlink
- ``replay``: journal entries become dirty files at mount

Layout (ossfs 1.x): a file ``a/b`` is the object ``PREFIX + "a/b"``; a directory is a
``PREFIX + "a/"`` marker object and/or implied by deeper keys. Sizes come from listings (CTR
keeps the length). POSIX attributes live in object headers (``fs.posix``), so a listing alone
gives size and time but not mode/owner/type: such entries are handed to the kernel with zero
attribute/entry timeouts and resolved with one HEAD when something stats them.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

import pyfuse3

from ..objects import EncryptedObjects
from ..store import ObjectStore
from . import posix
from .attrcache import AttrCache
from .attrs import Attrs
from .cache import BlockCache
from .context import META_DELAY, MAX_KEY_BYTES, NAME_MAX, FsContext
from .files import Files, Handle
from .freshness import STAT_AHEAD, Freshness
from .lifecycle import Lifecycle
from .metadata import Metadata
from .namespace import Namespace
from .rename import Renamer
from .replay import Replay
from .stagingarea import StagingArea
from .uploader import Uploader

__all__ = ["FsModel", "Handle", "META_DELAY", "MAX_KEY_BYTES", "NAME_MAX", "STAT_AHEAD"]

log = logging.getLogger(__name__)


class FsModel(FsContext):
    def __init__(self, store: ObjectStore, objects: EncryptedObjects, cache: BlockCache, staging: StagingArea,
                 uploader: Uploader, *, prefix: str, policy: posix.MountPolicy, ttl: float,
                 read_only: bool, spawn: Callable[[Callable[[], Awaitable[object]]], bool],
                 write_back: float = 0.0, attr_cache: AttrCache | None = None,
                 listing_attrs: bool = False) -> None:
        super().__init__(store, objects, cache, staging, uploader, prefix=prefix, policy=policy,
                         ttl=ttl, read_only=read_only, spawn=spawn, write_back=write_back,
                         attr_cache=attr_cache, listing_attrs=listing_attrs)
        self.attr = Attrs(self)
        self.fresh = Freshness(self, self.attr)
        self.life = Lifecycle(self, self.attr, self.fresh)
        self.meta = Metadata(self, self.attr, self.life)
        self.names = Namespace(self, self.attr, self.fresh, self.meta)
        self.renamer = Renamer(self, self.fresh, self.names)
        self.files = Files(self, self.attr, self.fresh, self.life, self.names)
        self.replayer = Replay(self)
        # the public API: what operations, mounter, writeback, state and the tests call
        self.attrs = self.attr.attrs
        self.list_dir = self.fresh.list_dir
        self.node_from_entry = self.fresh.node_from_entry
        self.child = self.fresh.child
        self.lookup = self.fresh.lookup
        self.getattr = self.fresh.getattr
        self.forget = self.fresh.forget
        self.setattr = self.meta.setattr
        self.mkdir = self.names.mkdir
        self.symlink = self.names.symlink
        self.mknod = self.names.mknod
        self.unlink = self.names.unlink
        self.rmdir = self.names.rmdir
        self.store_dir_times = self.names.store_dir_times
        self.rename = self.renamer.rename
        self.readlink = self.files.readlink
        self.open = self.files.open
        self.create = self.files.create
        self.handle = self.files.handle
        self.read = self.files.read
        self.write = self.files.write
        self.flush = self.files.flush
        self.fsync = self.files.fsync
        self.release = self.files.release
        self.writers = self.files.writers
        self.handles = self.files.handles
        self.commit_locked = self.life.commit_locked
        self.upload_locked = self.life.upload_locked
        self.upload_job = self.life.upload_job
        self.replay = self.replayer.replay

    async def flush_all(self) -> int:
        """Unmount: every dirty file goes up now; returns how many are left (still journaled)."""
        assert self.writeback is not None
        await self.store_dir_times()
        for node, _ in list(self.deferred.values()):   # files still open at unmount
            await self.delete_deferred(node)
        for node in list(self.inodes.nodes.values()):
            if node.dirty and not node.unlinked and self.writeback.job_for(node) is None:
                self.writeback.schedule(node, 0)
        left = await self.writeback.drain()
        if left:
            log.error("%d upload(s) not done at unmount; they stay journaled in %s and go up at "
                      "the next mount", left, self.staging.directory)
        return left

    def statfs(self) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 38
        s.f_files = s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = NAME_MAX
        return s
