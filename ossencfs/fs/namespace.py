"""Names made and removed: mkdir, rmdir, unlink, symlink, mknod, and directory times.

Layout (ossfs 1.x): a file ``a/b`` is the object ``PREFIX + "a/b"``; a directory is a
``PREFIX + "a/"`` marker object and/or implied by deeper keys. POSIX attributes live in object
headers (``fs.posix``).

Why it exists: these calls change the bucket's key space and the inode table/listings
together; they share the rules for markers (a directory that would vanish with its last child
gets one) and for directory mtimes (kept in memory, stored on markers once a directory has
been left alone for ``META_DELAY``).
``rename`` is its own room (``fs.rename``) built on this one.
"""
from __future__ import annotations

import errno
import logging
import stat
import time

import pyfuse3
import trio

from ..errors import OssEncError
from . import posix
from .attrs import Attrs
from .context import META_DELAY, FsContext, fuse_err as _err
from .freshness import Freshness
from .inodes import ROOT_INO, Entry, Node, join
from .metadata import Metadata

DIR_TIMES_MAX = 10.0   # seconds: a directory changed without pause has its times stored this often

log = logging.getLogger(__name__)


class Namespace:
    def __init__(self, ctx: FsContext, attr: Attrs, fresh: Freshness, meta: Metadata) -> None:
        self.ctx = ctx
        self.attr = attr
        self.fresh = fresh
        self.meta = meta
        #: markers to write touched times to: path -> (first, last) touch, ``trio.current_time()``
        self._dirs_to_store: dict[str, tuple[float, float]] = {}
        self._storing = False                    # ``_store_dir_times_later`` is running

    async def ensure_marker(self, dir_node: Node) -> None:
        """Keep a directory alive when its last child goes (implied directories vanish)."""
        if dir_node.ino == ROOT_INO or dir_node.marker:
            return
        key = self.ctx.dkey(dir_node.path)
        if await self.ctx.store.head(key) is None:
            await self.ctx.store.put(key, b"", posix.to_headers(dir_node.meta))
        dir_node.marker = True

    def _new_name(self, parent_ino: int, name: str, *, is_dir: bool = False) -> tuple[Node, str]:
        """(parent, path) for a name about to be made: EROFS on a read-only mount,
        ENAMETOOLONG for a key OSS would refuse."""
        if self.ctx.read_only:
            raise _err(errno.EROFS)
        parent = self.ctx.node(parent_ino)
        path = join(parent.path, name)
        self.ctx.check_key_length(path, is_dir=is_dir)
        return parent, path

    async def mkdir(self, parent_ino: int, name: str, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent, path = self._new_name(parent_ino, name, is_dir=True)
        meta = posix.new_meta(stat.S_IFDIR, mode, ctx.uid, ctx.gid)
        headers = posix.to_headers(meta)
        await self.ctx.store.put(self.ctx.dkey(path), b"", headers)
        node = self.ctx.inodes.bind(path, stat.S_IFDIR, meta)
        node.meta = meta
        node.marker = True
        node.unlinked = False
        node.exists_remote = True
        node.headers = headers
        node.headers_expires_mono = time.monotonic() + self.ctx.ttl
        self.ctx.inodes.set_listing(path, {})
        self.ctx.inodes.note_entry(parent.path, Entry(name, stat.S_IFDIR))
        self.touch_dir(parent)
        node.nlookup += 1
        return self.attr.attrs(node)

    async def symlink(self, parent_ino: int, name: str, target: str,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent, path = self._new_name(parent_ino, name)
        meta = posix.new_meta(stat.S_IFLNK, 0o777, ctx.uid, ctx.gid)
        attrs = await self._new_small_file(parent, name, meta,
                                           target.encode("utf-8", "surrogateescape"))
        node = self.ctx.inodes.at(path)
        if node is not None:
            node.symlink_target = target
        return attrs

    async def mknod(self, parent_ino: int, name: str, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """A fifo, socket or device node (or an empty regular file): an empty object whose
        ``x-oss-meta-mode`` carries the type and ``x-oss-meta-rdev`` the device number, as
        ossfs 1.x and s3fs store them; the kernel serves fifos and sockets itself."""
        kind = stat.S_IFMT(mode)
        if kind not in (*posix.SPECIAL_KINDS, stat.S_IFREG):
            raise _err(errno.EINVAL)
        parent, _ = self._new_name(parent_ino, name)
        meta = posix.new_meta(kind, mode, ctx.uid, ctx.gid)
        meta.rdev = rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
        return await self._new_small_file(parent, name, meta, b"")

    async def _new_small_file(self, parent: Node, name: str, meta: posix.PosixMeta,
                              body: bytes) -> pyfuse3.EntryAttributes:
        """Store a symlink or special file (encrypted body, POSIX headers) at once."""
        path = join(parent.path, name)
        extra = posix.to_headers(meta)
        self.ctx.undefer(self.ctx.okey(path))
        etag = await self.ctx.objects.write(self.ctx.okey(path), body, len(body), extra)
        node = self.ctx.inodes.bind(path, meta.kind, meta)
        node.meta = meta
        node.size, node.etag, node.mtime = len(body), etag, time.time()
        node.exists_remote, node.unlinked = True, False
        node.headers = extra
        node.headers_expires_mono = node.meta_expires_mono = time.monotonic() + self.ctx.ttl
        self.ctx.attr_cache.record(self.ctx.okey(path), etag, len(body), extra,
                               not_after=self.ctx.store.server_now())
        self.ctx.inodes.note_entry(parent.path, Entry(name, stat.S_IFREG, len(body), etag, node.mtime))
        self.touch_dir(parent)
        node.nlookup += 1
        return self.attr.attrs(node)

    async def unlink(self, parent_ino: int, name: str) -> None:
        if self.ctx.read_only:
            raise _err(errno.EROFS)
        parent = self.ctx.node(parent_ino)
        node = await self.fresh.child(parent, name)
        if node.is_dir:
            raise _err(errno.EISDIR)
        async with node.lock:
            key = self.ctx.okey(node.path)
            if node.exists_remote and node.open_count and node.etag:
                # POSIX keeps an unlinked file readable while it is open: the object goes
                # at the last close (``_delete_deferred``); the name is gone at once
                self.ctx.deferred[key] = (node, node.etag)
            elif node.exists_remote:
                await self.ctx.store.delete(key)
            self.ctx.attr_cache.forget(key)
            await self.meta.life.drop_local_locked(node, uncommitted_entry_too=True)
            self.ctx.inodes.drop_entry(parent.path, name)
            self.ctx.inodes.detach(node)
            if node.open_count == 0:
                # the last close came while this waited (the kernel's release of a file whose
                # close was uploading): it found the node not unlinked yet, so the deferred
                # delete is due now, not at unmount
                await self.ctx.delete_deferred(node)
        self.touch_dir(parent)
        await self.ensure_marker(parent)

    def touch_dir(self, node: Node) -> None:
        """An entry of directory ``node`` was added, removed or renamed: its mtime and ctime
        become now, as on a local file system; kept in memory for directories that exist only
        as a key prefix, and stored on the ``dir/`` marker of one that has it once the
        directory has been left alone for ``META_DELAY`` (at the latest ``DIR_TIMES_MAX``
        after its first change; and at unmount). A directory being filled therefore costs
        one store, not one a second (``cp -a`` of 500 files into 12 directories sent 83 HEADs
        and PUTs for them, issue 17); and when ``cp -a`` then sets the directory's times
        itself, that PUT carries them and the pending store finds them there
        (``_times_stored``)."""
        now = time.time_ns()
        node.meta.mtime_ns = node.meta.ctime_ns = now
        self.ctx.dir_touched[node.path] = now
        if node.ino == ROOT_INO or not node.marker:
            return
        at = trio.current_time()
        first, _ = self._dirs_to_store.get(node.path, (at, at))
        self._dirs_to_store[node.path] = (first, at)
        if not self._storing:
            self._storing = bool(self.ctx.spawn(self._store_dir_times_later))

    def moved(self, old: str, new: str) -> None:
        """Directory ``old`` was renamed to ``new``: touched times still to be stored below it
        go to the markers under the new name."""
        pending = [p for p in self._dirs_to_store if p == old or p.startswith(old + "/")]
        for p in pending:
            self._dirs_to_store[new + p[len(old):]] = self._dirs_to_store.pop(p)

    def _due(self, first: float, last: float) -> float:
        return min(last + META_DELAY, first + DIR_TIMES_MAX)

    async def _store_dir_times_later(self) -> None:
        """Store touched directories' times as each falls due (``touch_dir``), until none
        is pending."""
        try:
            while self._dirs_to_store:
                now = trio.current_time()
                due = [p for p, (first, last) in self._dirs_to_store.items()
                       if self._due(first, last) <= now]
                if due:
                    await self.store_dir_times(due)
                else:
                    await trio.sleep_until(min(self._due(*t) for t in self._dirs_to_store.values()))
        finally:
            self._storing = False

    async def store_dir_times(self, paths: list[str] | None = None) -> None:
        """Write the times of touched directories (``paths``; all pending: at unmount) to
        their markers. Each stays pending until its attempt ended (an unmount's call waits
        on the directory's lock for a store of the runner that is under way, rather than
        taking it for done) and is left pending if it was touched again meanwhile, its next
        ``DIR_TIMES_MAX`` counted from this attempt. One whose
        marker carries its times already (an explicit change stored them) is skipped. A
        failure is logged and not retried (the next change stores them again)."""
        for path in sorted(self._dirs_to_store if paths is None else paths):
            mark = self._dirs_to_store.get(path)
            if mark is None:
                continue                # stored meanwhile, or renamed (pending under its new name)
            started = trio.current_time()
            node = self.ctx.inodes.at(path)
            try:
                if node is not None and node.is_dir and node.marker and not node.unlinked:
                    async with node.lock:
                        if not node.unlinked and self.ctx.inodes.at(node.path) is node \
                                and not self._times_stored(node):
                            await self.meta.persist_meta(node)
                elif node is None and (touched := self.ctx.dir_touched.get(path)):
                    # the kernel forgot it meanwhile (``drop_caches``, memory pressure): its
                    # times were skipped, and the next lookup showed the stored, older ones
                    if await self.meta.store_forgotten_dir_times(path, touched) and \
                            self.ctx.dir_touched.get(path) == touched:
                        self.ctx.dir_touched.pop(path, None)
            except OssEncError as exc:
                log.info("oss://%s/%s: directory times not stored: %s", self.ctx.store.name,
                         self.ctx.dkey(path), exc)
            now = self._dirs_to_store.get(path)
            if now == mark:
                del self._dirs_to_store[path]
            elif now is not None:   # touched during the attempt: a new interval starts with it
                self._dirs_to_store[path] = (started, now[1])

    @staticmethod
    def _times_stored(node: Node) -> bool:
        """Whether ``node``'s marker carries its mtime: the headers it was last written (or
        read) with say so (``Metadata.persist_meta`` keeps what it sent)."""
        stored = posix.parse_mtime_ns((node.headers or {}).get(posix.META_MTIME))
        return stored is not None and stored >= node.meta.mtime_ns

    async def dir_is_empty(self, node: Node) -> bool:
        page = await self.ctx.store.list_page(self.ctx.dkey(node.path), "/", None, 3)
        marker = self.ctx.dkey(node.path)
        if any(o.key != marker for o in page.objects) or page.prefixes:
            return False
        return not any(not c.unlinked and not c.exists_remote
                       for c in self.ctx.inodes.children(node.path))

    async def rmdir(self, parent_ino: int, name: str) -> None:
        if self.ctx.read_only:
            raise _err(errno.EROFS)
        parent = self.ctx.node(parent_ino)
        node = await self.fresh.child(parent, name)
        if not node.is_dir:
            raise _err(errno.ENOTDIR)
        if not await self.dir_is_empty(node):
            raise _err(errno.ENOTEMPTY)
        await self.ctx.store.delete(self.ctx.dkey(node.path))
        self.ctx.inodes.drop_entry(parent.path, name)
        self.ctx.inodes.invalidate_dir(node.path)
        self.ctx.inodes.detach(node)
        self.touch_dir(parent)
        await self.ensure_marker(parent)
