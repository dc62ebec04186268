"""rename(2): of a file (its object, or its pending upload) and of a whole directory.

Why it exists: OSS has no rename; a rename is copies and deletes, and a file may be dirty,
open, mid-upload or a pending metadata change when it is renamed. Ordering rules (copy before
delete: a failure leaves two copies, never none; locks in inode order) live here only.
"""
from __future__ import annotations

import contextlib
import errno
import logging

import pyfuse3
import trio

from ..errors import OssEncError
from ..store import ObjectInfo
from . import dirtystate, posix
from .context import FsContext, fuse_err as _err
from .freshness import Freshness
from .inodes import Entry, Node, join
from .namespace import Namespace
from .reupload import Reupload

log = logging.getLogger(__name__)


class Renamer:
    def __init__(self, ctx: FsContext, fresh: Freshness, names: Namespace) -> None:
        self.ctx = ctx
        self.fresh = fresh
        self.names = names

    async def rename(self, p_old: int, n_old: str, p_new: int, n_new: str, flags: int) -> None:
        if self.ctx.read_only:
            raise _err(errno.EROFS)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise _err(errno.EINVAL)
        old_parent, new_parent = self.ctx.node(p_old), self.ctx.node(p_new)
        src = await self.fresh.child(old_parent, n_old)
        try:
            dst: Node | None = await self.fresh.child(new_parent, n_new)
        except pyfuse3.FUSEError as exc:
            if exc.errno != errno.ENOENT:
                raise
            dst = None
        if dst is src:
            return
        if dst is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise _err(errno.EEXIST)
            if dst.is_dir and not src.is_dir:
                raise _err(errno.EISDIR)
            if src.is_dir and not dst.is_dir:
                raise _err(errno.ENOTDIR)
            if dst.is_dir and not await self.names.dir_is_empty(dst):
                raise _err(errno.ENOTEMPTY)
        new_path = join(new_parent.path, n_new)
        self.ctx.check_key_length(new_path, is_dir=src.is_dir)
        replaced = None if src.is_dir else self.ctx.undefer(self.ctx.okey(new_path))
        if src.is_dir:
            if new_path.startswith(src.path + "/"):
                raise _err(errno.EINVAL)
            await self._rename_dir(src, new_path, dst)
        else:
            # the target's lock too: an upload of it in flight finishes before its staging
            # goes and the source's object takes its key (locks in inode order: no deadlock)
            pair = [src] if dst is None or dst.is_dir else sorted({src, dst}, key=lambda n: n.ino)
            async with contextlib.AsyncExitStack() as locks:
                for n in pair:
                    await locks.enter_async_context(n.lock)
                await self._rename_file_locked(src, dst, new_path, replaced)
        if dst is not None and dst.is_dir:
            self.ctx.inodes.invalidate_dir(dst.path)
        self.ctx.inodes.drop_entry(old_parent.path, n_old)
        self.ctx.inodes.note_entry(new_parent.path, Entry(n_new, src.kind, src.size, src.etag, src.mtime))
        src.meta.touch_ctime()
        self.names.touch_dir(old_parent)
        if new_parent is not old_parent:
            self.names.touch_dir(new_parent)
        if src.is_dir:
            self.ctx.inodes.invalidate_dir(new_parent.path)
        await self.names.ensure_marker(old_parent)

    async def _rename_file_locked(self, src: Node, dst: Node | None, new_path: str,
                                  replaced: str | None) -> None:
        """Move a file's object (or its pending upload) to ``new_path``, replacing ``dst``
        (or ``replaced``: the ETag of an object unlinked there while open); the caller
        holds the locks of both."""
        st = src.staging if src.dirty else None
        if st is not None and not st.complete:
            await st.materialize()          # the old name's object goes away below
        if src.exists_remote and isinstance(st, Reupload):
            # a pending metadata change goes to the new name at once: one re-upload
            # instead of a copy now and a re-upload later (rsync's temp file + rename)
            extra = posix.to_headers(src.meta)
            copied = await self.ctx.objects.relay(st.source(), self.ctx.okey(new_path),
                                              {**st.kept, **extra})
            await self.ctx.store.delete(self.ctx.okey(src.path))
            self.ctx.attr_cache.forget(self.ctx.okey(src.path))
            self.ctx.attr_cache.record(self.ctx.okey(new_path), copied, src.size, extra,
                                   src.object_type, not_after=self.ctx.store.server_now())
            src.staging = None
            dirtystate.mark_clean(src)
            if self.ctx.writeback is not None:
                self.ctx.writeback.forget(src)
            await self.ctx.staging.drop(st)     # its journal entry is done with
            st = None
            src.etag = copied
        elif st is not None and (st.committed or not src.exists_remote):
            # acknowledged content goes up under the new name, replacing the target's
            # version there; the old name's object (if any) is the version it was to
            # replace, and goes with the name: no copy of it
            if st.base_etag is not None:
                await self.ctx.delete_version(self.ctx.okey(src.path), st.base_etag)
                self.ctx.attr_cache.forget(self.ctx.okey(src.path))
            target = dst.etag if dst is not None and dst.exists_remote else replaced
            st.base_etag = target
            src.exists_remote, src.etag = target is not None, target
        elif src.exists_remote:
            # copy first (replacing any target), then delete: a failure in between
            # leaves two copies, never none
            copied = await self._copy_object(
                self.ctx.okey(src.path), self.ctx.okey(new_path),
                ObjectInfo(self.ctx.okey(src.path), src.size, src.etag or "", src.mtime,
                           src.object_type))
            await self.ctx.store.delete(self.ctx.okey(src.path))
            self.ctx.attr_cache.forget(self.ctx.okey(src.path))
            if st is not None and st.base_etag is not None:
                st.base_etag = copied        # the version we now build on
            src.etag = copied
        if dst is not None:
            await self.names.meta.life.drop_local_locked(dst, uncommitted_entry_too=False)
            self.ctx.inodes.detach(dst)
        self.ctx.inodes.move(src.path, new_path)
        if src.staging is not None:
            src.staging.key = self.ctx.okey(new_path)
            if st is not None and st.committed:
                await st.save_manifest(durable=True)

    async def _rename_dir(self, src: Node, new_path: str, dst: Node | None) -> None:
        """Copy every object, then delete the originals: a failure leaves both, never neither."""
        old_path, old_prefix, new_prefix = src.path, self.ctx.dkey(src.path), self.ctx.dkey(new_path)
        held = await self._lock_tree(src)
        busy = [n for n in held if n.dirty or n.open_count]
        try:
            # listed only now: no upload or marker write under the old name is in flight
            objects = [o async for o in self.ctx.store.iter_objects(old_prefix, "")]
            keys = [o.key for o in objects]
            for n in busy:                 # their old objects go away: fetch what they need
                if n.dirty and n.staging is not None and not n.staging.complete:
                    await n.staging.materialize()
            # a CopyObject costs OSS's round trip and no bandwidth here: as many at once as
            # the store sends requests (``--connections``; 8 made a 200-file ``mv`` wait on 25
            # rounds, issue 17); copies in parts or relayed through the client move data and
            # stay at 8
            one_request = trio.CapacityLimiter(self.ctx.store.concurrency)
            moving_data = trio.CapacityLimiter(8)
            copied: dict[str, str] = {}

            async def copy_one(o: ObjectInfo) -> None:
                limiter = one_request if self.ctx.objects.copies_in_one_request(o) else moving_data
                async with limiter:
                    copied[o.key] = await self._copy_object(
                        o.key, new_prefix + o.key[len(old_prefix):], o)
            try:
                async with trio.open_nursery() as nursery:
                    for o in objects:
                        nursery.start_soon(copy_one, o)
            except BaseException:
                # the copies made so far go again: a failed rename leaves the old name whole
                # and no half-filled new one (the target was empty or absent)
                with trio.CancelScope(shield=True):
                    made = [new_prefix + k[len(old_prefix):] for k in copied]
                    try:
                        await self.ctx.store.delete_many(made)
                    except OssEncError as exc:
                        log.warning("%s: copies of a failed rename not removed: %s",
                                    self.ctx.where(src), exc)
                raise
            if old_prefix not in keys:
                await self.ctx.store.put(new_prefix, b"", posix.to_headers(src.meta))
            await self.ctx.store.delete_many(keys)
            self.ctx.attr_cache.forget_under(old_prefix)
            if dst is not None:
                self.ctx.inodes.detach(dst)
            self.ctx.inodes.move(src.path, new_path)
            for n in busy:
                st = n.staging
                if st is None:
                    continue
                old_key = st.key
                st.key = self.ctx.okey(n.path)
                if st.base_etag is not None and old_key in copied:
                    st.base_etag = copied[old_key]     # the version we now build on
                    n.etag = copied[old_key]
                if n.dirty and st.committed:
                    await st.save_manifest(durable=True)
            src.marker = True
            self.names.moved(old_path, new_path)
        finally:
            for n in held:
                n.lock.release()

    async def _lock_tree(self, src: Node) -> list[Node]:
        """Hold the locks of ``src`` and of every node known below it, so that nothing writes
        under the old name while its objects are listed, copied and deleted: an upload of a
        file (write-back, or a close) and the write of a directory's times to its marker
        (``Namespace.touch_dir``) hold the node's lock while their request is in flight, and
        one landing after the deletes would bring the old name back. Taken in inode order,
        then again for any node that appeared while waiting."""
        held: list[Node] = []
        try:
            while True:
                taken = set(held)
                want = sorted((n for n in [src, *self.ctx.inodes.under(src.path)]
                               if n not in taken), key=lambda n: n.ino)
                if not want:
                    return held
                for n in want:
                    await n.lock.acquire()
                    held.append(n)
        except BaseException:
            for n in held:
                n.lock.release()
            raise

    async def _copy_object(self, src: str, dst: str, info: ObjectInfo) -> str:
        """One object of a rename, copied with its headers (``EncryptedObjects.copy``); a
        native symlink is made again with its own target and metadata, since GET/HEAD of a
        link answer for its target (SPEC D.6). Returns the new ETag ("" for a link)."""
        if info.object_type != "Symlink":
            return await self.ctx.objects.copy(src, dst, info)
        target = await self.ctx.store.get_symlink(src)
        own = await self.ctx.store.head(src)
        meta = {k: v for k, v in (own.headers if own is not None else {}).items()
                if k.startswith("x-oss-meta-")}
        await self.ctx.store.put_symlink(dst, target, meta)
        return ""
