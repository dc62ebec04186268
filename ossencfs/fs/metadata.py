"""setattr: mode, owner, times and size of a node, and how a metadata change is stored.

Why it exists: a metadata change takes one of four very different paths (a directory marker
PUT, a native symlink PUT, a CopyObject onto itself, a journaled re-upload of the unchanged
bytes) and each must leave the node's cached headers, ETag and the attribute cache in step.
A size change or a change of a dirty file is a transition of its ``lifecycle``.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import stat
import time

import pyfuse3

from ..envelope import format as fmt
from ..objects import kept_headers
from ..store import ARCHIVE_CLASSES
from . import posix
from .attrs import Attrs, node_headers
from .context import FsContext, fuse_err as _err
from .inodes import ROOT_INO, Entry, Node
from .lifecycle import Lifecycle

log = logging.getLogger(__name__)


class Metadata:
    def __init__(self, ctx: FsContext, attr: Attrs, life: Lifecycle) -> None:
        self.ctx = ctx
        self.attr = attr
        self.life = life

    async def setattr(self, ino: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None) -> pyfuse3.EntryAttributes:
        node = self.ctx.node(ino)
        if self.ctx.read_only:
            raise _err(errno.EROFS)
        async with node.lock:
            if fields.update_size:
                if node.is_dir:
                    raise _err(errno.EISDIR)
                await self.life.truncate_locked(node, attr.st_size)
            shown = dataclasses.replace(node.meta)
            meta_changed = False
            if fields.update_mode:
                node.meta.mode = stat.S_IFMT(node.meta.mode) | stat.S_IMODE(attr.st_mode)
                meta_changed = True
            if fields.update_uid:
                node.meta.uid = attr.st_uid
                meta_changed = True
            if fields.update_gid:
                node.meta.gid = attr.st_gid
                meta_changed = True
            if fields.update_mtime:
                node.meta.mtime_ns = attr.st_mtime_ns
                meta_changed = True
                self.ctx.dir_touched.pop(node.path, None)   # set explicitly: it wins
            if fields.update_atime:             # UTIME_OMIT leaves the other time alone
                node.meta.atime_ns = attr.st_atime_ns
                meta_changed = True
            if meta_changed or fields.update_size:
                node.meta.touch_ctime()
            st = node.staging
            if node.dirty and st is not None and st.relay:
                st.changed = True                   # acknowledged: journal the change
                await self.life.commit_locked(node, materialize=False, durable=False)
                if node.open_count == 0:
                    self.life.reupload_later(node)      # a burst costs one re-upload
            elif node.dirty:
                if fh is None and node.open_count == 0:
                    await self.life.close_locked(node)
                elif st is not None and st.committed:
                    st.changed = True
            elif meta_changed and not node.unlinked:
                try:
                    await self.persist_meta(node)
                except BaseException:
                    node.meta = shown       # not stored: not shown either (a retry stores it)
                    raise
        return self.attr.attrs(node)

    async def store_forgotten_dir_times(self, path: str, mtime_ns: int) -> bool:
        """Directory ``path``'s times (``mtime_ns``, also its ctime) onto its marker when the
        kernel has forgotten its node (a ``touch_dir`` still pending: the times are kept by
        path, ``FsContext.dir_touched``). The marker's other headers come from a HEAD.
        Returns whether the marker carries them now (False: it has none any more)."""
        key = self.ctx.dkey(path)
        info = await self.ctx.store.head(key)
        if info is None:
            return False
        meta = posix.from_headers(info.headers, is_dir=True, fallback_mtime=info.mtime,
                                  policy=self.ctx.policy)
        if (meta.mtime_ns or 0) < mtime_ns:
            meta.mtime_ns = meta.ctime_ns = mtime_ns
            await self.ctx.store.put(key, b"", {**kept_headers(info.headers),
                                                **posix.to_headers(meta)})
        return True

    async def persist_meta(self, node: Node) -> None:
        """A metadata-only change of a clean node (caller holds its lock).

        Directory markers and native symlinks are small and plain: written again at once.
        Plain objects that CopyObject may copy take a CopyObject onto themselves (REPLACE).
        Every other object (client-side-encrypted ones, appendable ones, those above the
        copy limit: SPEC D.13) gets a ``Reupload`` of its unchanged stored bytes with the
        new headers, journaled now and sent by the upload queue after ``META_DELAY`` (so
        that a burst of changes costs one upload), at the next close of a writer, at fsync,
        or at unmount."""
        extra = posix.to_headers(node.meta)
        sent_mtime_ns = node.meta.mtime_ns      # a touch while the PUT is out changes node.meta
        if node.ino == ROOT_INO and not self.ctx.prefix:
            return                              # the bucket root has no object to carry it
        if node.is_dir:
            key = self.ctx.dkey(node.path)
            if node.ino != ROOT_INO and node.headers is not None \
                    and node.headers_expires_mono > time.monotonic():
                # trusted for ttl like any HEAD's (``fs.freshness``), and they hold all that
                # ``kept_headers`` keeps (``attrs.node_headers``): ``cp -a`` sets a new
                # directory's owner, mode and times one after the other, a HEAD before each
                # PUT made that 6 round trips, now 4 (issue 17)
                kept = kept_headers(node.headers)
            else:
                info = await self.ctx.store.head(key)
                kept = kept_headers(info.headers) if info is not None else {}
            await self.ctx.store.put(key, b"", {**kept, **extra})
            node.marker = True
            node.headers = {**kept, **extra}
            node.headers_expires_mono = time.monotonic() + self.ctx.ttl
            if self.ctx.dir_touched.get(node.path, 0) <= sent_mtime_ns:
                self.ctx.dir_touched.pop(node.path, None)   # its marker carries the times now
            return
        if not node.exists_remote:
            return
        key = self.ctx.okey(node.path)
        if node.object_type == "Symlink":
            await self._persist_native_symlink(node, key, extra)
            return
        info = await self.ctx.store.head(key)
        if info is None:
            raise _err(errno.ENOENT)
        if posix.stores(info.headers, extra):
            # the object has these values already (``chmod -R``/``chown -R`` over files that
            # have them): no re-upload of an encrypted file's whole ciphertext, no self-copy.
            # Told by this HEAD, not by what the node shows: that may be another client's
            # earlier state, or a change of ours that failed to be stored
            return
        if fmt.parse_headers(info.headers) is not None or info.object_type == "Appendable" \
                or info.size > self.ctx.objects.copy_limit:
            if info.storage_class in ARCHIVE_CLASSES:
                # a re-upload needs its bytes (unreadable until restored) and would make a new
                # archived object, unreadable again: refused now rather than undone later
                log.error("%s: metadata of an archived (%s) object cannot be changed here: it "
                          "would take a re-upload, and the new object would need restoring "
                          "again", self.ctx.where(node), info.storage_class)
                raise _err(errno.EPERM)
            await self.life.start_reupload(node, info)
            return
        headers = {**kept_headers(info.headers), **extra}
        etag = await self.ctx.store.copy(key, key, headers=headers, if_match=info.etag)
        node.headers = {**node_headers(info.headers), **extra}
        self._meta_stored(node, key, etag, extra)

    def _meta_stored(self, node: Node, key: str, etag: str, extra: dict[str, str]) -> None:
        """Bookkeeping after new metadata of a file is in the bucket as version ``etag``."""
        node.headers_expires_mono = node.meta_expires_mono = time.monotonic() + self.ctx.ttl
        self.ctx.attr_cache.record(key, etag, node.size, extra, node.object_type,
                               not_after=self.ctx.store.server_now())
        if node.kernel_etag == node.etag:
            node.kernel_etag = etag            # same bytes: keep the page cache
        node.etag = etag
        self.ctx.inodes.note_entry(node.parent_path, Entry(node.name, node.kind, node.size, etag,
                                                       node.mtime, node.object_type))

    async def _persist_native_symlink(self, node: Node, key: str, extra: dict[str, str]) -> None:
        """A native symlink keeps its own metadata (SPEC D.6): PutSymlink again, same target."""
        target = await self.ctx.store.get_symlink(key)
        await self.ctx.store.put_symlink(key, target, extra)
        node.headers = dict(extra)
        node.headers_expires_mono = node.meta_expires_mono = time.monotonic() + self.ctx.ttl
