"""The filesystem model: POSIX names and files on top of objects, ossfs layout.

Layout (ossfs 1.x): a file ``a/b`` is the object ``PREFIX + "a/b"``; a directory is a
``PREFIX + "a/"`` marker object and/or implied by deeper keys. Sizes come from listings (CTR
keeps the length). POSIX attributes live in object headers (``fs.posix``), so a listing alone
gives size and time but not mode/owner/type: such entries are handed to the kernel with zero
attribute/entry timeouts and resolved with one HEAD when something stats them.

Stat-ahead: ``ls -l``, ``rsync`` and ``find`` stat the entries of a directory one after the
other, which would cost one HEAD round trip each. The first stat of an entry of a listed
directory starts HEADs of the next ``STAT_AHEAD`` entries (in readdir order) in parallel, so the
following stats find their attributes already fetched; a known entry whose listing expired is
revalidated with its own HEAD rather than by listing the whole directory again.

Consistency: listings and HEAD results are trusted for ``ttl`` seconds and the kernel caches
attributes/entries for the same ``ttl``; so a change made by another client shows here after
at most 2 x ttl (open() revalidates with a HEAD once the cached headers are older than ttl).
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import stat
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, NoReturn

import pyfuse3
import trio

from ..envelope import format as fmt
from ..errors import ArchivedError, ConflictError, NetworkError, OssEncError, RejectedError
from ..objects import first_error, kept_headers
from ..store import ObjectInfo
from . import keymap, posix
from .attrcache import AttrCache
from .cache import BlockCache
from .inodes import ROOT_INO, Entry, InodeTable, Node, join
from .readahead import BlockSource
from .reupload import Reupload, restore_reupload
from .staging import StagingArea
from .uploader import BaseGoneError, Uploader, UploadResult

log = logging.getLogger(__name__)

STAT_AHEAD = 64        # entries resolved ahead of a stat walk, in parallel
#: seconds a metadata change of a closed file waits for more changes before its re-upload
#: (``cp -a``/``rsync -a``/``tar x`` set mode, owner and times in separate calls)
META_DELAY = 1.0
MAX_KEY_BYTES = 1023   # the longest object key OSS takes (SPEC D.5, InvalidObjectName)
NAME_MAX = 1024        # the longest name FUSE passes (FUSE_NAME_MAX); the key limit still holds


def _err(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


@dataclass(eq=False)
class Handle:
    fh: int
    node: Node
    writable: bool
    source: BlockSource | None = None
    source_etag: str | None = None
    source_key: str | None = None       # the object the source reads (a rename moves it)


class _PinnedBase:
    """The old version a replayed staging was opened from, fetched only if a range of it is
    still needed (untouched ranges); pinned by ETag, so a changed object is a ConflictError
    rather than silently different bytes."""

    def __init__(self, model: "FsModel", key: str, etag: str, size: int) -> None:
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


class FsModel:
    def __init__(self, store: Any, objects: Any, cache: BlockCache, staging: StagingArea,
                 uploader: Uploader, *, prefix: str, policy: posix.MountPolicy, ttl: float,
                 read_only: bool, spawn: Callable[[Callable[[], Awaitable[Any]]], bool],
                 write_back: float = 0.0, attr_cache: AttrCache | None = None,
                 listing_attrs: bool = False) -> None:
        self.store = store
        self.attr_cache = attr_cache if attr_cache is not None else AttrCache(None)
        self.listing_attrs = listing_attrs
        self.write_back = write_back
        self.writeback: Any = None          # fs.writeback.WriteBack, set by the mounter
        self.objects = objects
        self.cache = cache
        self.staging = staging
        self.uploader = uploader
        self.prefix = prefix
        self.policy = policy
        self.ttl = ttl
        self.read_only = read_only
        self.spawn = spawn
        root_meta = posix.default_meta(is_dir=True, mtime=time.time(), policy=policy)
        self.inodes = InodeTable(root_meta, ttl, numbers=self.attr_cache, prefix=prefix)
        root = self.inodes.get(ROOT_INO)
        assert root is not None
        root.headers = {}
        root.headers_expires = float("inf")
        root.marker = True
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        #: when this mount started: the stable time of directories that exist only as key
        #: prefixes and were not changed here (no marker object to carry a time)
        self.started = time.time()
        #: mtime (ns) of directories whose entries changed here, until a listing of a later
        #: marker says otherwise; ``_dirs_to_store``: markers to write it to (coalesced)
        self._dir_touched: dict[str, int] = {}
        #: objects of files unlinked while open: key -> (node, ETag), deleted at last close
        self._deferred: dict[str, tuple[Node, str]] = {}
        self._dirs_to_store: set[str] = set()
        #: tells the kernel to drop a cached name (pyfuse3; a no-op below FUSE)
        self.kernel_forget: Callable[[int, str], None] = lambda ino, name: None
        self._resolving: dict[str, trio.Event] = {}    # path -> HEAD in flight (stat-ahead)

    # ------------------------------------------------------------------ keys
    def okey(self, path: str) -> str:
        return self.prefix + keymap.key_path(path)

    def dkey(self, path: str) -> str:
        return self.prefix + keymap.key_path(path) + "/" if path else self.prefix

    def check_key_length(self, path: str, *, is_dir: bool = False) -> None:
        """ENAMETOOLONG for a name whose object key OSS would refuse (over 1023 bytes, DOC
        185228 in SPEC D.5): refused when the name is made, not at the upload after close."""
        key = self.dkey(path) if is_dir else self.okey(path)
        if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
            raise _err(errno.ENAMETOOLONG)

    def where(self, node: Node) -> str:
        return f"oss://{self.store.name}/{self.dkey(node.path) if node.is_dir else self.okey(node.path)}"

    # ------------------------------------------------------------------ attributes
    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.generation = 0
        a.st_mode = posix.shown_mode(node.meta, self.policy)
        a.st_nlink = 1
        a.st_uid = posix.shown_uid(node.meta, self.policy)
        a.st_gid = posix.shown_gid(node.meta, self.policy)
        size = node.staging.size if node.staging is not None else node.size
        if node.is_dir:
            size = 0
        a.st_size = size
        a.st_rdev = node.meta.rdev
        a.st_blksize = 128 * 1024
        a.st_blocks = (size + 511) // 512
        a.st_mtime_ns = node.meta.mtime_ns
        a.st_atime_ns = node.meta.atime_ns if node.meta.atime_ns is not None \
            else node.meta.mtime_ns
        a.st_ctime_ns = node.meta.ctime_ns if node.meta.ctime_ns is not None \
            else node.meta.mtime_ns
        known = node.headers is not None or node.meta_expires > 0 or not node.exists_remote \
            or node.dirty
        a.attr_timeout = self.ttl if known else 0
        # a listing cannot tell a symlink object from a file: let the kernel re-lookup
        a.entry_timeout = self.ttl if (known or node.is_dir) else 0
        return a

    def _apply_file_info(self, node: Node, info: ObjectInfo) -> None:
        if node.dirty:
            return
        if node.etag != info.etag:
            node.symlink_target = None
        node.size = info.size
        node.etag = info.etag
        node.mtime = info.mtime
        node.object_type = info.object_type
        node.exists_remote = True
        if info.headers:
            node.headers = dict(info.headers)
            node.headers_expires = node.meta_expires = time.monotonic() + self.ttl
            node.meta = posix.from_headers(info.headers, is_dir=False, fallback_mtime=info.mtime,
                                           policy=self.policy)
            self.attr_cache.record(self.okey(node.path), info.etag, info.size, info.headers,
                                   info.object_type, lastmod=info.mtime)
        elif node.headers is None:
            node.meta = posix.default_meta(is_dir=False, mtime=info.mtime, policy=self.policy)

    @staticmethod
    def _file_kind(info: ObjectInfo) -> int:
        if info.object_type == "Symlink":
            return stat.S_IFLNK
        return posix.kind_of_headers(info.headers)

    # ------------------------------------------------------------------ listing
    async def list_dir(self, node: Node) -> dict[str, Entry]:
        lst = self.inodes.listing(node.path)
        if lst is not None:
            return lst.entries
        # changes made here while the pages come in are replayed onto them (``fs.inodes``)
        since = self.inodes.begin_listing(node.path)
        try:
            entries = await self._fetch_listing(node)
        except NetworkError as exc:
            self.inodes.end_listing(node.path, since, None)
            stale = self.inodes.stale_listing(node.path)
            if stale is None:
                raise
            log.info("listing %s: %s; serving the cached listing", self.where(node), exc)
            return self._with_local(node, dict(stale.entries))
        except BaseException:
            self.inodes.end_listing(node.path, since, None)
            raise
        lst = self.inodes.end_listing(node.path, since, entries)
        assert lst is not None
        self._with_local(node, lst.entries)
        prefix = self.dkey(node.path)
        self.attr_cache.prune_dir(prefix, {prefix + name for name, e in lst.entries.items()
                                           if e.kind != stat.S_IFDIR})
        self.attr_cache.prune_inos(prefix, {prefix + name + ("/" if e.kind == stat.S_IFDIR
                                                             else "")
                                            for name, e in lst.entries.items()})
        return lst.entries

    async def _fetch_listing(self, node: Node) -> dict[str, Entry]:
        """Every entry OSS lists in the directory, all pages."""
        prefix = self.dkey(node.path)
        entries: dict[str, Entry] = {}
        token: str | None = None
        while True:
            page = await self.store.list_page(prefix, "/", token, 1000)
            for obj in page.objects:
                if obj.key == prefix:
                    continue                  # the directory's own marker
                name = keymap.name(obj.key[len(prefix):])
                if name in entries or (self._deferred and self.hidden(obj.key, obj.etag)):
                    continue
                kind = stat.S_IFLNK if obj.object_type == "Symlink" else stat.S_IFREG
                entries[name] = Entry(name, kind, obj.size, obj.etag, obj.mtime, obj.object_type)
            for p in page.prefixes:
                name = keymap.name(p[len(prefix):-1])      # (ends in exactly one "/")
                if "/" in name:
                    continue
                entries[name] = Entry(name, stat.S_IFDIR)   # a directory wins over a file
            if not page.next_token:
                return entries
            token = page.next_token

    def _with_local(self, node: Node, entries: dict[str, Entry]) -> dict[str, Entry]:
        # things created here and not uploaded yet, or deleted remotely while open here
        for child in self.inodes.under(node.path):
            if child.parent_path == node.path and not child.unlinked and \
                    (not child.exists_remote or child.dirty):
                entries[child.name] = Entry(child.name, child.kind, child.size, child.etag,
                                            child.mtime)
        return entries

    def _node_from_entry(self, parent: Node, entry: Entry) -> Node:
        path = join(parent.path, entry.name)
        existing = self.inodes.at(path)
        if existing is not None and (existing.kind == entry.kind or existing.headers is not None
                                     or existing.meta_expires > 0
                                     or existing.dirty or not existing.exists_remote):
            if entry.kind != stat.S_IFDIR and existing.kind != stat.S_IFDIR and \
                    not existing.dirty and existing.exists_remote:
                if entry.etag and entry.etag != existing.etag:
                    # changed remotely: take size/time from the listing, re-HEAD on next stat
                    existing.size, existing.etag, existing.mtime = entry.size, entry.etag, entry.mtime
                    existing.headers = None
                    existing.symlink_target = None
                    existing.meta_expires = 0
                if not self._meta_fresh(existing):
                    known = self._listed_meta(path, entry)
                    if known is not None and known.kind == existing.kind:
                        existing.meta = known
                    if (known is not None and known.kind == existing.kind) or \
                            (self.listing_attrs and existing.headers is None):
                        existing.meta_expires = self._listing_expiry(parent)
            return existing
        is_dir = entry.kind == stat.S_IFDIR
        meta = None if is_dir else self._listed_meta(path, entry)
        trusted = meta is not None or (self.listing_attrs and not is_dir)
        if meta is None:
            meta = posix.default_meta(is_dir=is_dir, mtime=entry.mtime or self.started,
                                      policy=self.policy)
            if entry.kind == stat.S_IFLNK:
                meta.mode = stat.S_IFLNK | 0o777
        node = self.inodes.bind(path, entry.kind if is_dir else meta.kind, meta)
        node.size, node.etag, node.mtime, node.object_type = (entry.size, entry.etag, entry.mtime,
                                                              entry.object_type)
        if trusted:
            node.meta_expires = self._listing_expiry(parent)
        return node

    def _listed_meta(self, path: str, entry: Entry) -> posix.PosixMeta | None:
        """The attributes recorded for exactly the version a listing shows (``attrcache``)."""
        hit = self.attr_cache.lookup(self.okey(path), entry.etag, entry.size, entry.mtime)
        if hit is None:
            return None
        headers, object_type = hit
        meta = posix.from_headers(headers, is_dir=False, fallback_mtime=entry.mtime,
                                  policy=self.policy)
        if object_type == "Symlink":
            meta.mode = stat.S_IFLNK | stat.S_IMODE(meta.mode)
        return meta

    def _listing_expiry(self, parent: Node) -> float:
        lst = self.inodes.stale_listing(parent.path)
        return lst.expires if lst is not None else time.monotonic() + self.ttl

    @staticmethod
    def _fresh(node: Node) -> bool:
        return node.headers is not None and node.headers_expires > time.monotonic()

    def _meta_fresh(self, node: Node) -> bool:
        return node.meta_expires > time.monotonic() or self._fresh(node)

    def _needs_head(self, node: Node, full: bool = False) -> bool:
        """``full``: every header is needed (to open it), not only its POSIX attributes."""
        if node.ino == ROOT_INO or node.dirty or not node.exists_remote:
            return False
        return not (self._fresh(node) if full else self._meta_fresh(node))

    async def _resolve(self, node: Node, full: bool = False) -> Node:
        """Make sure ``node``'s attributes (``full``: all its headers) are fresh, with one HEAD
        if need be; may return a new node (type)."""
        pending = self._resolving.get(node.path)
        if pending is not None:           # a stat-ahead HEAD is on its way: share it
            await pending.wait()
            node = self.inodes.at(node.path) or node
        if not self._needs_head(node, full):
            return node
        try:
            return await self._resolve_remote(node)
        except NetworkError as exc:
            if node.headers is None and node.exists_remote and not node.is_dir and \
                    node.etag is None:
                raise
            # offline: what we knew stays valid (cached blocks are pinned by ETag anyway)
            log.info("%s: %s; serving cached attributes", self.where(node), exc)
            return node

    async def _resolve_remote(self, node: Node) -> Node:
        if node.is_dir:
            info = await self.store.head(self.dkey(node.path))
            node.marker = info is not None
            headers = info.headers if info is not None else {}
            node.headers = dict(headers)
            node.headers_expires = time.monotonic() + self.ttl
            node.meta = posix.from_headers(headers, is_dir=True,
                                           fallback_mtime=info.mtime if info else self.started,
                                           policy=self.policy)
            touched = self._dir_touched.get(node.path)
            if touched is not None and touched > node.meta.mtime_ns:
                node.meta.mtime_ns = node.meta.ctime_ns = touched    # not stored (yet)
            return node
        if node.object_type == "Symlink":
            return await self._resolve_native_link(node)
        info = await self.store.head(self.okey(node.path))
        if info is None:
            self._gone(node)
        kind = self._file_kind(info)
        if kind != node.kind:
            node = self.inodes.bind(node.path, kind, node.meta)
        self._apply_file_info(node, info)
        if kind == stat.S_IFLNK and info.object_type == "Symlink":
            node.meta.mode = stat.S_IFLNK | stat.S_IMODE(node.meta.mode or 0o777)
        return node

    def _gone(self, node: Node) -> NoReturn:
        """The object behind ``node`` is gone: forget it and answer ENOENT."""
        self.attr_cache.forget(self.okey(node.path))
        self.inodes.drop_entry(node.parent_path, node.name)
        if node.open_count == 0:
            self.inodes.detach(node)
        raise _err(errno.ENOENT)

    async def _resolve_native_link(self, node: Node) -> Node:
        """A native OSS symlink (known as one from a listing, SPEC D.6): a HEAD of it answers
        with the *target's* size, ETag and type but the link's *own* user metadata, so only
        its metadata is taken from the HEAD; a dangling link (HEAD 404) is confirmed by
        GetObjectMeta, which describes the link itself."""
        key = self.okey(node.path)
        info = await self.store.head(key)
        if info is None:
            own = await self.store.get_object_meta(key)
            if own is None or own.object_type != "Symlink":
                self._gone(node)
            headers: dict[str, str] = {}
        else:
            headers = {k: v for k, v in info.headers.items() if k.startswith("x-oss-meta-")}
        node.headers = headers
        node.headers_expires = node.meta_expires = time.monotonic() + self.ttl
        node.meta = posix.from_headers(headers, is_dir=False, fallback_mtime=node.mtime,
                                       policy=self.policy)
        node.meta.mode = stat.S_IFLNK | stat.S_IMODE(node.meta.mode or 0o777)
        return node

    async def _child(self, parent: Node, name: str) -> Node:
        if not parent.is_dir:
            raise _err(errno.ENOTDIR)
        path = join(parent.path, name)
        existing = self.inodes.at(path)
        if existing is not None and (existing.dirty or not existing.exists_remote
                                     or (not existing.is_dir and self._meta_fresh(existing))):
            return existing          # a HEAD within ttl proves it exists
        self._stat_ahead(parent, name)
        if existing is not None and not existing.is_dir and not existing.unlinked \
                and self.inodes.listing(parent.path) is None \
                and self.inodes.stale_listing(parent.path) is not None:
            # known from an expired listing: its own HEAD answers, not a whole re-listing
            try:
                return await self._resolve(existing)
            except pyfuse3.FUSEError as exc:
                if exc.errno != errno.ENOENT:
                    raise             # ENOENT: it may be a directory now; list to find out
        if existing is not None and existing.is_dir and not existing.unlinked \
                and self.inodes.listing(parent.path) is None \
                and self.inodes.stale_listing(parent.path) is not None \
                and await self._dir_still_there(existing):
            return existing           # the kernel revalidating a path: no listing of the parent
        entries = await self.list_dir(parent)
        entry = entries.get(name)
        if entry is None:
            raise _err(errno.ENOENT)
        return await self._resolve(self._node_from_entry(parent, entry))

    async def _dir_still_there(self, node: Node) -> bool:
        """A known directory, checked with one request (a HEAD of its marker, or a one-key
        listing when it has none) instead of a listing of its whole parent."""
        try:
            node = await self._resolve(node)
            if node.marker:
                return True
            page = await self.store.list_page(self.dkey(node.path), "/", None, 1)
        except NetworkError:
            return True               # offline: what we knew stays valid
        return bool(page.objects or page.prefixes)

    def _stat_ahead(self, parent: Node, name: str) -> None:
        lst = self.inodes.stale_listing(parent.path)
        if lst is None or name not in lst.entries:
            return
        for later in lst.names_after(name, STAT_AHEAD):
            path = join(parent.path, later)
            entry = lst.entries.get(later)
            if path in self._resolving or entry is None:
                continue
            node = self._node_from_entry(parent, entry)
            if node.is_dir or not self._needs_head(node):
                continue
            self._resolving[path] = trio.Event()
            if not self.spawn(functools.partial(self._head_ahead, node)):
                self._resolving.pop(path).set()
                return

    async def _head_ahead(self, node: Node) -> None:
        try:
            with trio.move_on_after(max(30.0, self.ttl)):
                await self._resolve_remote(node)
        except Exception as exc:        # the stat itself will retry and report
            log.debug("stat-ahead %s: %s", self.where(node), exc)
        finally:
            self._resolving.pop(node.path).set()

    def node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise _err(errno.ENOENT)
        return node

    # ------------------------------------------------------------------ lookups
    async def lookup(self, parent_ino: int, name: str) -> pyfuse3.EntryAttributes:
        parent = self.node(parent_ino)
        if name == ".":
            node = parent
        elif name == "..":
            node = self.inodes.at(parent.parent_path) or parent
        else:
            node = await self._child(parent, name)
        node.nlookup += 1
        return self.attrs(node)

    async def getattr(self, ino: int) -> pyfuse3.EntryAttributes:
        node = self.node(ino)
        if node.unlinked:
            return self.attrs(node)
        resolved = await self._resolve(node)
        if resolved is not node:          # became another type: make the kernel look again
            raise _err(errno.ENOENT)
        return self.attrs(node)

    def forget(self, ino: int, n: int) -> None:
        self.inodes.forget(ino, n)

    # ------------------------------------------------------------------ readers
    async def _source(self, node: Node) -> BlockSource:
        headers = node.headers
        if headers is None or not headers:
            await self._resolve(node, full=True)
            headers = node.headers or {}
        info = ObjectInfo(key=self.okey(node.path), size=node.size, etag=node.etag or "",
                          mtime=node.mtime, object_type=node.object_type, headers=dict(headers))
        if not info.headers:
            info = await self.store.head(info.key) or info
        reader = await self.objects.open_reader(info.key, info)
        return BlockSource(self.cache, reader, info.key, info.etag, info.size, self.spawn)

    async def readlink(self, ino: int) -> str:
        node = await self._resolve(self.node(ino))
        if node.kind != stat.S_IFLNK:
            raise _err(errno.EINVAL)
        if node.symlink_target is None:
            if node.object_type == "Symlink":
                node.symlink_target = await self.store.get_symlink(self.okey(node.path))
            else:
                src = await self._source(node)
                node.symlink_target = (await src.read(0, node.size)).decode("utf-8", "surrogateescape")
        return node.symlink_target

    # ------------------------------------------------------------------ open files
    async def open(self, ino: int, flags: int) -> pyfuse3.FileInfo:
        node = self.node(ino)
        writable = (flags & (os.O_WRONLY | os.O_RDWR)) != 0
        if writable and self.read_only:
            raise _err(errno.EROFS)
        if node.is_dir:
            raise _err(errno.EISDIR)
        if not node.dirty and node.exists_remote and not node.unlinked:
            before = node.etag
            resolved = await self._resolve(node, full=True)
            if resolved is not node:
                raise _err(errno.ESTALE)
            if node.etag != before and node.staging is not None and node.staging.sealed:
                old, node.staging = node.staging, None        # someone else wrote a newer version
                await self.staging.drop(old)
        keep = (node.kernel_etag is not None and node.kernel_etag == node.etag) or node.dirty
        node.kernel_etag = node.etag
        fh = self._next_fh
        self._next_fh += 1
        handle = Handle(fh, node, writable)
        self.handles[fh] = handle
        node.open_count += 1
        if writable and flags & os.O_TRUNC:
            async with node.lock:
                await self._truncate_locked(node, 0)
            keep = False
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    async def create(self, parent_ino: int, name: str, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        if self.read_only:
            raise _err(errno.EROFS)
        parent = self.node(parent_ino)
        path = join(parent.path, name)
        self.check_key_length(path)
        existing = self.inodes.at(path)
        meta = posix.new_meta(stat.S_IFREG, mode, ctx.uid, ctx.gid)
        if existing is not None and existing.kind == stat.S_IFREG and not existing.unlinked:
            node = existing
            node.meta = meta
        else:
            node = self.inodes.bind(path, stat.S_IFREG, meta)
            node.exists_remote = False
            node.headers = {}
        replaced = self._undefer(self.okey(path))     # an unlinked-while-open object
        async with node.lock:
            if node.staging is not None:
                old, node.staging = node.staging, None
                await self.staging.drop(old)
            if replaced is not None and not node.exists_remote:
                node.exists_remote, node.etag = True, replaced   # the version it replaces
            node.staging = await self.staging.new(
                self.okey(path), 0, None, 0, node.etag if node.exists_remote else None)
            node.dirty = True
            node.size = 0
        self.inodes.note_entry(parent.path, Entry(name, stat.S_IFREG, 0, None, time.time()))
        self._touch_dir(parent)
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(fh, node, True)
        node.open_count += 1
        node.nlookup += 1
        node.kernel_etag = None
        return pyfuse3.FileInfo(fh=fh), self.attrs(node)

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
        if h.source is None or h.source_etag != node.etag or \
                h.source_key != self.okey(node.path):
            h.source = await self._source(node)
            h.source_etag, h.source_key = node.etag, self.okey(node.path)
        return await h.source.read(off, size)

    async def _ensure_staging(self, node: Node) -> Any:
        st = node.staging
        if st is not None and st.relay:
            # new content replaces a pending metadata change: an ordinary staging on the
            # version the re-upload was of (an object carrying its key is still ours)
            node.staging = None
            await self.staging.drop(st)
            base = await self._source(node) if node.size > 0 else None
            node.staging = await self.staging.new(self.okey(node.path), node.size, base,
                                                  node.size, st.base_etag)
            node.staging.prior_keys = [k for k in [*st.prior_keys, st.wrapped_key] if k] \
                if st.sealed else list(st.prior_keys)
            return node.staging
        if st is not None and not st.sealed:
            return st
        if st is not None:
            # still dirty: the last attempt's fate is unknown, so build on what it built on
            # and remember its key; clean: it landed and is now the base
            base_etag = st.base_etag if node.dirty else (node.etag if node.exists_remote else None)
            node.staging = await self.staging.rekey(st, base_etag,
                                                    committed=node.dirty and st.committed,
                                                    unconfirmed=node.dirty)
        else:
            base = await self._source(node) if node.exists_remote and node.size > 0 else None
            node.staging = await self.staging.new(self.okey(node.path), node.size, base,
                                                  node.size, node.etag)
        return node.staging

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self.handle(fh)
        if self.read_only:
            raise _err(errno.EROFS)
        node = h.node
        async with node.lock:
            st = await self._ensure_staging(node)
            await st.write(off, buf)
            st.changed = True
            node.dirty = True
            node.meta.mtime_ns = node.meta.ctime_ns = time.time_ns()
        return len(buf)

    async def _truncate_locked(self, node: Node, size: int) -> None:
        if size == 0 and (node.staging is None or node.staging.sealed or node.staging.relay):
            old = node.staging
            base_etag = node.etag if node.exists_remote else None
            prior: list[str] = []
            if old is not None and node.dirty:    # its upload may have landed: still ours
                base_etag = old.base_etag
                prior = [k for k in [*old.prior_keys, old.wrapped_key] if k]
            if old is not None:               # no need to re-key what is thrown away
                node.staging = None
                await self.staging.drop(old)
            node.staging = await self.staging.new(self.okey(node.path), 0, None, 0, base_etag)
            node.staging.prior_keys = prior
        else:
            st = await self._ensure_staging(node)
            await st.truncate(size)
            if st.committed:                 # keep the journal's size in step with the data
                await st.save_manifest()
        node.staging.changed = True
        node.dirty = True
        node.meta.mtime_ns = node.meta.ctime_ns = time.time_ns()

    def writers(self, node: Node) -> int:
        return sum(1 for h in self.handles.values() if h.node is node and h.writable)

    async def commit_locked(self, node: Node, *, materialize: bool, durable: bool = True,
                            seal: bool = False) -> None:
        """The acknowledgement point: the staging and its journal entry are on disk, marked
        for replay; ``durable`` also fsyncs data, entry and directory (power cut safe).
        ``seal``: an upload follows; a small complete staging is sealed in this very entry,
        so that the upload needs no journal write of its own before sending.
        Raises OSError/OssEncError if they could not be written."""
        st = node.staging
        if st is None or not node.dirty or node.unlinked:
            return
        st.key = self.okey(node.path)
        headers = posix.to_headers(node.meta)
        if st.committed and not st.changed and st.posix == headers and \
                (st.synced or not durable) and (st.complete or not materialize):
            return
        st.committed = True
        if materialize and not st.complete:
            # fetch the untouched ranges now, while the old version surely exists, so the
            # journal entry does not depend on it later; offline it is done at upload time
            try:
                await st.materialize()
            except Exception as raw:         # network down, object gone, disk full
                exc = first_error(raw)
                log.warning("%s: untouched ranges not fetched yet (%s); they come from the "
                            "version opened (ETag %s) at upload time", self.where(node), exc,
                            st.base_etag)
        if seal and st.sealable:
            st.sealed = True
        await st.save_manifest(headers, durable=durable)
        st.changed = False

    async def upload_locked(self, node: Node) -> None:
        """Send a dirty node's staging to the bucket (caller holds node.lock)."""
        st = node.staging
        if not node.dirty or st is None:
            return
        if node.unlinked:
            node.dirty = False
            return
        st.key = self.okey(node.path)
        extra = posix.to_headers(node.meta)
        node.upload_busy = True
        if self.writeback is not None:
            self.writeback.notify()             # the state file shows the upload
        try:
            result: UploadResult = await self.uploader.upload(st, extra)
        finally:
            node.upload_busy = False
            if self.writeback is not None:
                self.writeback.notify()
        node.dirty = False
        # closed: the staging goes below, its entry with its data in one worker call
        drop = node.open_count == 0 and node.staging is st
        if st.committed:       # in the bucket now: nothing to replay (an old entry left by a
            st.committed = False   # crash is sealed, and its replay finds its own upload)
            st.synced = False
            if not drop:
                await trio.to_thread.run_sync(
                    functools.partial(self.staging.journal.remove, st.ident, durable=False,
                                      entry_only=True))
        if result.conflict_key is not None or result.superseded:
            await self._after_conflict(node, st, result)
            return
        etag = result.etag
        if st.relay and node.kernel_etag == node.etag:
            node.kernel_etag = etag             # same bytes: the page cache stays valid
        node.etag = etag
        node.size = st.size
        node.exists_remote = True
        node.mtime = time.time()
        node.headers = {**(st.kept if st.relay else {}),
                        **{k.lower(): v for k, v in st.crypto_headers.items()}, **extra}
        node.headers_expires = node.meta_expires = time.monotonic() + self.ttl
        self.attr_cache.record(self.okey(node.path), etag, node.size, extra,
                               not_after=self.store.server_now())
        if not st.relay:
            node.kernel_etag = etag
        self.inodes.note_entry(node.parent_path, Entry(node.name, node.kind, node.size, etag,
                                                       node.mtime))
        if drop and node.staging is st:
            node.staging = None
            await self.staging.drop(st)

    async def _after_conflict(self, node: Node, st: Any, result: UploadResult) -> None:
        """The local version went beside the object (or, for a metadata change, was dropped):
        show the other client's version at the name (fetched afresh) and the conflict copy
        next to it."""
        if result.conflict_key is not None:
            copy_name = keymap.name(result.conflict_key.rsplit("/", 1)[-1])
            self.inodes.note_entry(node.parent_path, Entry(copy_name, stat.S_IFREG, st.size,
                                                           result.etag, time.time()))
        if node.staging is st:
            node.staging = None
            await self.staging.drop(st)
        node.headers = None
        node.headers_expires = 0
        node.kernel_etag = None
        node.symlink_target = None
        try:
            info = await self.store.head(self.okey(node.path))
        except OssEncError:
            info = None
        if info is not None:
            node.exists_remote = True
            node.etag = None                 # force _apply_file_info to take the new version
            self._apply_file_info(node, info)
        elif result.superseded:              # deleted by another client: gone here too
            self._name_gone(node)
        else:
            node.exists_remote = False
            node.size = 0

    async def _upload_or_queue(self, node: Node) -> None:
        """Upload now; on failure the entry is made durable and the queue retries it."""
        try:
            await self.upload_locked(node)
        except BaseGoneError as exc:
            await self._base_gone(node, exc)
            raise
        except BaseException as exc:
            if isinstance(first_error(exc), (RejectedError, ArchivedError)):
                await self._refused(node, first_error(exc))
                raise
            if node.dirty and not node.unlinked and node.staging is not None:
                with trio.CancelScope(shield=True):
                    try:
                        await self.commit_locked(node, materialize=False, durable=True)
                    except (OSError, OssEncError) as jexc:
                        log.warning("%s: cannot journal (%s)", self.where(node), jexc)
                if self.writeback is not None:
                    self.writeback.failed(node, exc)
            raise

    async def _refused(self, node: Node, exc: BaseException) -> None:
        """OSS refused the upload for good (a 4xx that no retry changes: NotImplemented, a
        name it does not take, access denied, an archived base): it is not retried. The
        staging goes to quarantine with the reason (``ossencfs status`` lists it; nothing
        written is lost), the upload queue forgets it (unmount never waits for it), and the
        name shows what the bucket holds."""
        st = node.staging
        if st is None:
            return
        with trio.CancelScope(shield=True):
            if not st.relay:
                try:                         # its data and entry on disk before moving them
                    await self.commit_locked(node, materialize=False, durable=True)
                except (OSError, OssEncError) as jexc:
                    log.warning("%s: cannot journal (%s)", self.where(node), jexc)
            what = "metadata change" if st.relay else "upload"
            where = await self.staging.quarantine(st, f"{what} refused by OSS: {exc}")
        log.error("%s: %s refused by OSS, not retried (%s); kept in %s", self.where(node), what,
                  exc, where)
        node.staging = None
        node.dirty = False
        node.headers = None
        node.headers_expires = node.meta_expires = 0
        node.kernel_etag = None
        if self.writeback is not None:
            self.writeback.forget(node)
        if not node.exists_remote:           # the name never reached the bucket
            self._name_gone(node)

    def _name_gone(self, node: Node) -> None:
        """``node``'s name is gone from the bucket outside any namespace call (a refused
        upload, another client's delete): forget it here and in the kernel's entry cache."""
        self.inodes.drop_entry(node.parent_path, node.name)
        self.inodes.detach(node)
        parent = self.inodes.at(node.parent_path)
        if parent is not None:
            self.kernel_forget(parent.ino, node.name)

    async def _base_gone(self, node: Node, exc: Exception) -> None:
        """The untouched ranges of a partly rewritten file can no longer be fetched (another
        client replaced the object first and they were not cached): nothing sane can be
        uploaded, so the written ranges are kept aside, reported, and the name shows the
        other client's version."""
        st = node.staging
        if st is None:
            return
        where = await self.staging.quarantine(st, f"conflict: {exc}; the ranges written here are "
                                            f"kept (ciphertext) with this entry")
        log.error("%s: changed by another client before the local changes could be completed;"
                  " they are kept in %s", self.where(node), where)
        node.staging = None
        node.dirty = False
        node.headers = None
        node.headers_expires = 0
        node.kernel_etag = None
        if self.writeback is not None:
            self.writeback.forget(node)

    async def _close_locked(self, node: Node) -> None:
        """close(2): write-back -> durable in the journal, upload later; else upload now."""
        if node.unlinked:
            node.dirty = False             # nothing to keep: the last close frees the staging
        if not node.dirty:
            return
        if self.write_back > 0 and self.writeback is not None:
            try:
                await self.commit_locked(node, materialize=True, seal=True)
            except (OSError, OssEncError) as exc:
                # cannot journal (e.g. the cache disk is full): fall back to uploading now
                log.warning("%s: cannot journal (%s); uploading at close instead",
                            self.where(node), exc)
                await self._upload_or_queue(node)
                return
            self.writeback.schedule(node)
            return
        try:      # not fsynced: close is acknowledged only once the object is in the bucket
            await self.commit_locked(node, materialize=False, durable=False, seal=True)
        except (OSError, OssEncError) as exc:
            log.warning("%s: cannot journal (%s); uploading without it", self.where(node), exc)
        await self._upload_or_queue(node)

    async def upload_job(self, node: Node) -> None:
        """The queue's worker: upload one pending file, then free its staging if closed."""
        async with node.lock:
            if node.dirty and not node.unlinked and node.staging is not None \
                    and not node.staging.committed:
                await self.commit_locked(node, materialize=False, seal=True)
            try:
                await self.upload_locked(node)
            except BaseGoneError as exc:
                await self._base_gone(node, exc)
            except Exception as raw:
                if not isinstance(first_error(raw), (RejectedError, ArchivedError)):
                    raise
                await self._refused(node, first_error(raw))
            await self._drop_if_clean(node)

    async def _drop_if_clean(self, node: Node) -> None:
        if node.open_count == 0 and not node.dirty and node.staging is not None:
            old, node.staging = node.staging, None
            await self.staging.drop(old)
        if node.open_count == 0 and not node.dirty:
            if node.nlookup == 0 and node.exists_remote and not node.unlinked and \
                    self.spawn(functools.partial(self._release_later, node)):
                return
            self.inodes.release_check(node)

    async def _release_later(self, node: Node) -> None:
        """A node the kernel holds no reference to (a replayed file) stays known for a
        listing's lifetime after its upload: a listing fetched while the upload landed may
        lack the object, and without the node a lookup would believe that listing."""
        await trio.sleep(self.ttl)
        if node.open_count == 0 and not node.dirty:
            self.inodes.release_check(node)

    async def flush(self, fh: int) -> None:
        h = self.handle(fh)
        node = h.node
        if h.writable and node.dirty:        # a reader's close does not upload a writer's file
            async with node.lock:
                await self._close_locked(node)

    async def fsync(self, fh: int) -> None:
        """fsync waits until the data is in the bucket, in every mode."""
        node = self.handle(fh).node
        if node.dirty:
            async with node.lock:
                if not node.dirty:
                    return
                try:
                    await self.commit_locked(node, materialize=False, durable=False, seal=True)
                except (OSError, OssEncError) as exc:
                    log.warning("%s: cannot journal (%s)", self.where(node), exc)
                await self._upload_or_queue(node)

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        node = h.node
        node.open_count -= 1
        try:
            if node.dirty and node.open_count == 0:
                async with node.lock:
                    await self._close_locked(node)
        finally:
            if node.open_count == 0 and not node.dirty and node.staging is not None:
                old, node.staging = node.staging, None
                await self.staging.drop(old)
            if node.open_count == 0 and node.unlinked:
                await self._delete_deferred(node)
            self.inodes.release_check(node)

    async def _delete_deferred(self, node: Node) -> None:
        """The last close of a file unlinked while open: its object goes now, unless the name
        was taken again meanwhile (``_undefer``) or another client replaced the object."""
        key = next((k for k, (n, _) in self._deferred.items() if n is node), None)
        if key is None:
            return
        _, etag = self._deferred.pop(key)
        try:
            await self._delete_version(key, etag)
        except OssEncError as exc:
            log.warning("oss://%s/%s: unlinked while open, not deleted at its last close: %s",
                        self.store.name, key, exc)

    async def _delete_version(self, key: str, etag: str) -> None:
        """Delete ``key`` if it still holds version ``etag`` (OSS has no conditional delete:
        a HEAD right before is the check); another client's newer version stays."""
        info = await self.store.head(key)
        if info is not None and info.etag == etag:
            await self.store.delete(key)

    def _undefer(self, key: str) -> str | None:
        """``key`` is written again (create, rename onto it): an unlinked-while-open object
        there must not be deleted at its last close; returns its ETag, which the new
        object replaces."""
        hit = self._deferred.pop(key, None)
        return hit[1] if hit is not None else None

    def hidden(self, key: str, etag: str | None) -> bool:
        """An object unlinked here while open: listings must not show it."""
        hit = self._deferred.get(key)
        return hit is not None and hit[1] == etag

    async def flush_all(self) -> int:
        """Unmount: every dirty file goes up now; returns how many are left (still journaled)."""
        assert self.writeback is not None
        await self.store_dir_times()
        for node, _ in list(self._deferred.values()):   # files still open at unmount
            await self._delete_deferred(node)
        for node in list(self.inodes.nodes.values()):
            if node.dirty and not node.unlinked and self.writeback.job_for(node) is None:
                self.writeback.schedule(node, 0)
        left = await self.writeback.drain()
        if left:
            log.error("%d upload(s) not done at unmount; they stay journaled in %s and go up at "
                      "the next mount", left, self.staging.directory)
        return left

    # ------------------------------------------------------------------ replay
    async def replay(self, entries: list[dict[str, Any]], quarantine: Callable[[str, str], Any]) -> int:
        """Rebuild dirty files from journal entries (before serving): reads come from staging
        at once; uploads are queued for now. Entries that cannot be used are quarantined."""
        latest: dict[str, dict[str, Any]] = {}
        for entry in entries:                      # oldest first: a later one supersedes
            old = latest.get(entry["key"])
            if old is not None:
                quarantine(old["id"], f"superseded by a newer entry for the same file "
                                      f"({entry['id']})")
            latest[entry["key"]] = entry
        restored = 0
        for entry in latest.values():
            key = entry["key"]
            path = keymap.path_of_key(key[len(self.prefix):])
            if not key.startswith(self.prefix) or not key[len(self.prefix):] or key.endswith("/"):
                quarantine(entry["id"], f"not a file key: {key!r}")
                continue
            if entry.get("relay"):            # a metadata change (fs.reupload): no key needed
                self._restored(path, entry, restore_reupload(self.staging, entry))
                restored += 1
                continue
            try:
                material = await trio.to_thread.run_sync(
                    lambda e=entry: self.staging.keyring.open(
                        e["crypto_headers"], object_name=f"oss://{self.store.name}/{key}"))
            except Exception as exc:
                quarantine(entry["id"], f"cannot unwrap the data key with the configured "
                                        f"master keys: {exc}")
                continue
            base_etag = entry.get("base_etag")
            base = _PinnedBase(self, key, base_etag, entry["base_len"]) \
                if base_etag and entry["base_len"] > 0 else None
            try:
                st = self.staging.restore(entry, material, base)
            except OSError as exc:
                quarantine(entry["id"], f"cannot open its data file: {exc.strerror}")
                continue
            self._restored(path, entry, st)
            restored += 1
        return restored

    def _restored(self, path: str, entry: dict[str, Any], st: Any) -> None:
        """A replayed staging becomes its file's pending upload."""
        meta = posix.from_headers(entry["posix"], is_dir=False, fallback_mtime=time.time(),
                                  policy=self.policy)
        node = self.inodes.bind(path, stat.S_IFREG, meta)
        node.meta = meta
        node.staging = st
        node.dirty = True
        node.unlinked = False
        node.exists_remote = st.base_etag is not None
        node.etag = st.base_etag
        node.size = entry["size"]
        node.headers = dict(st.kept) if st.relay else {}
        node.headers_expires = float("inf")
        if self.writeback is not None:
            self.writeback.schedule(node, 0)
        log.info("journal: replayed %s (%d bytes%s), upload queued", self.where(node),
                 entry["size"], ", metadata change" if st.relay else "")

    # ------------------------------------------------------------------ attributes
    async def setattr(self, ino: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None) -> pyfuse3.EntryAttributes:
        node = self.node(ino)
        if self.read_only:
            raise _err(errno.EROFS)
        async with node.lock:
            if fields.update_size:
                if node.is_dir:
                    raise _err(errno.EISDIR)
                await self._truncate_locked(node, attr.st_size)
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
            if fields.update_atime:             # UTIME_OMIT leaves the other time alone
                node.meta.atime_ns = attr.st_atime_ns
                meta_changed = True
            if meta_changed or fields.update_size:
                node.meta.touch_ctime()
            st = node.staging
            if node.dirty and st is not None and st.relay:
                st.changed = True                   # acknowledged: journal the change
                await self.commit_locked(node, materialize=False, durable=False)
                if node.open_count == 0:
                    self._reupload_later(node)      # a burst costs one re-upload
            elif node.dirty:
                if fh is None and node.open_count == 0:
                    await self._close_locked(node)
                elif st is not None and st.committed:
                    st.changed = True
            elif meta_changed and not node.unlinked:
                await self._persist_meta(node)
        return self.attrs(node)

    async def _persist_meta(self, node: Node) -> None:
        """A metadata-only change of a clean node (caller holds its lock).

        Directory markers and native symlinks are small and plain: written again at once.
        Plain objects that CopyObject may copy take a CopyObject onto themselves (REPLACE).
        Every other object (client-side-encrypted ones, appendable ones, those above the
        copy limit: SPEC D.13) gets a ``Reupload`` of its unchanged stored bytes with the
        new headers, journaled now and sent by the upload queue after ``META_DELAY`` (so
        that a burst of changes costs one upload), at the next close of a writer, at fsync,
        or at unmount."""
        extra = posix.to_headers(node.meta)
        if node.ino == ROOT_INO and not self.prefix:
            return                              # the bucket root has no object to carry it
        if node.is_dir:
            key = self.dkey(node.path)
            info = await self.store.head(key)
            kept = kept_headers(info.headers) if info is not None else {}
            await self.store.put(key, b"", {**kept, **extra})
            node.marker = True
            node.headers = {**kept, **extra}
            node.headers_expires = time.monotonic() + self.ttl
            return
        if not node.exists_remote:
            return
        key = self.okey(node.path)
        if node.object_type == "Symlink":
            await self._persist_native_symlink(node, key, extra)
            return
        info = await self.store.head(key)
        if info is None:
            raise _err(errno.ENOENT)
        if fmt.parse_headers(info.headers) is not None or info.object_type == "Appendable" \
                or info.size > self.objects.copy_limit:
            await self._start_reupload(node, info)
            return
        headers = {**kept_headers(info.headers), **extra}
        etag = await self.store.copy(key, key, headers=headers, if_match=info.etag)
        node.headers = {**info.headers, **extra}
        self._meta_stored(node, key, etag, extra)

    def _meta_stored(self, node: Node, key: str, etag: str, extra: dict[str, str]) -> None:
        """Bookkeeping after new metadata of a file is in the bucket as version ``etag``."""
        node.headers_expires = node.meta_expires = time.monotonic() + self.ttl
        self.attr_cache.record(key, etag, node.size, extra, node.object_type,
                               not_after=self.store.server_now())
        if node.kernel_etag == node.etag:
            node.kernel_etag = etag            # same bytes: keep the page cache
        node.etag = etag
        self.inodes.note_entry(node.parent_path, Entry(node.name, node.kind, node.size, etag,
                                                       node.mtime, node.object_type))

    async def _persist_native_symlink(self, node: Node, key: str, extra: dict[str, str]) -> None:
        """A native symlink keeps its own metadata (SPEC D.6): PutSymlink again, same target."""
        target = await self.store.get_symlink(key)
        await self.store.put_symlink(key, target, extra)
        node.headers = dict(extra)
        node.headers_expires = node.meta_expires = time.monotonic() + self.ttl

    async def _start_reupload(self, node: Node, info: ObjectInfo) -> None:
        """Make ``node`` dirty with a journaled ``Reupload`` of ``info``'s version."""
        kept = kept_headers(info.headers)
        crypto = {k: v for k, v in kept.items() if k not in fmt.strip_crypto_headers(kept)}
        st = Reupload(self.staging, uuid.uuid4().hex, info.key, info.size, info.etag,
                      info.object_type, kept, crypto)
        self.staging.active.add(st)
        node.headers = dict(info.headers)
        node.staging = st
        node.dirty = True
        await self.commit_locked(node, materialize=False, durable=False)
        if node.open_count == 0:
            self._reupload_later(node)

    def _reupload_later(self, node: Node) -> None:
        if self.writeback is not None:
            self.writeback.schedule(node, max(self.write_back, META_DELAY))

    # ------------------------------------------------------------------ namespace changes
    async def _ensure_marker(self, dir_node: Node) -> None:
        """Keep a directory alive when its last child goes (implied directories vanish)."""
        if dir_node.ino == ROOT_INO or dir_node.marker:
            return
        key = self.dkey(dir_node.path)
        if await self.store.head(key) is None:
            await self.store.put(key, b"", posix.to_headers(dir_node.meta))
        dir_node.marker = True

    async def mkdir(self, parent_ino: int, name: str, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if self.read_only:
            raise _err(errno.EROFS)
        parent = self.node(parent_ino)
        path = join(parent.path, name)
        self.check_key_length(path, is_dir=True)
        meta = posix.new_meta(stat.S_IFDIR, mode, ctx.uid, ctx.gid)
        headers = posix.to_headers(meta)
        await self.store.put(self.dkey(path), b"", headers)
        node = self.inodes.bind(path, stat.S_IFDIR, meta)
        node.meta = meta
        node.marker = True
        node.unlinked = False
        node.exists_remote = True
        node.headers = headers
        node.headers_expires = time.monotonic() + self.ttl
        self.inodes.set_listing(path, {})
        self.inodes.note_entry(parent.path, Entry(name, stat.S_IFDIR))
        self._touch_dir(parent)
        node.nlookup += 1
        return self.attrs(node)

    async def symlink(self, parent_ino: int, name: str, target: str,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if self.read_only:
            raise _err(errno.EROFS)
        parent = self.node(parent_ino)
        path = join(parent.path, name)
        self.check_key_length(path)
        meta = posix.new_meta(stat.S_IFLNK, 0o777, ctx.uid, ctx.gid)
        attrs = await self._new_small_file(parent, name, meta,
                                           target.encode("utf-8", "surrogateescape"))
        node = self.inodes.at(path)
        if node is not None:
            node.symlink_target = target
        return attrs

    async def mknod(self, parent_ino: int, name: str, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """A fifo, socket or device node (or an empty regular file): an empty object whose
        ``x-oss-meta-mode`` carries the type and ``x-oss-meta-rdev`` the device number, as
        ossfs 1.x and s3fs store them; the kernel serves fifos and sockets itself."""
        if self.read_only:
            raise _err(errno.EROFS)
        kind = stat.S_IFMT(mode)
        if kind not in (*posix.SPECIAL_KINDS, stat.S_IFREG):
            raise _err(errno.EINVAL)
        parent = self.node(parent_ino)
        path = join(parent.path, name)
        self.check_key_length(path)
        meta = posix.new_meta(kind, mode, ctx.uid, ctx.gid)
        meta.rdev = rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
        return await self._new_small_file(parent, name, meta, b"")

    async def _new_small_file(self, parent: Node, name: str, meta: posix.PosixMeta,
                              body: bytes) -> pyfuse3.EntryAttributes:
        """Store a symlink or special file (encrypted body, POSIX headers) at once."""
        path = join(parent.path, name)
        extra = posix.to_headers(meta)
        self._undefer(self.okey(path))
        etag = await self.objects.write(self.okey(path), body, len(body), extra)
        node = self.inodes.bind(path, meta.kind, meta)
        node.meta = meta
        node.size, node.etag, node.mtime = len(body), etag, time.time()
        node.exists_remote, node.unlinked = True, False
        node.headers = extra
        node.headers_expires = node.meta_expires = time.monotonic() + self.ttl
        self.attr_cache.record(self.okey(path), etag, len(body), extra,
                               not_after=self.store.server_now())
        self.inodes.note_entry(parent.path, Entry(name, stat.S_IFREG, len(body), etag, node.mtime))
        self._touch_dir(parent)
        node.nlookup += 1
        return self.attrs(node)

    async def unlink(self, parent_ino: int, name: str) -> None:
        if self.read_only:
            raise _err(errno.EROFS)
        parent = self.node(parent_ino)
        node = await self._child(parent, name)
        if node.is_dir:
            raise _err(errno.EISDIR)
        async with node.lock:
            key = self.okey(node.path)
            if node.exists_remote and node.open_count and node.etag:
                # POSIX keeps an unlinked file readable while it is open: the object goes
                # at the last close (``_delete_deferred``); the name is gone at once
                self._deferred[key] = (node, node.etag)
            elif node.exists_remote:
                await self.store.delete(key)
            self.attr_cache.forget(key)
            node.dirty = False
            if node.staging is not None:
                if node.open_count == 0:
                    old, node.staging = node.staging, None  # the journal entry goes before we answer
                    await self.staging.drop(old)
                else:                                # still open: keep the data, drop the entry
                    await trio.to_thread.run_sync(functools.partial(
                        self.staging.journal.remove, node.staging.ident, durable=True))
                    node.staging.committed = False
            if self.writeback is not None:
                self.writeback.forget(node)
            self.inodes.drop_entry(parent.path, name)
            self.inodes.detach(node)
        self._touch_dir(parent)
        await self._ensure_marker(parent)

    def _touch_dir(self, node: Node) -> None:
        """An entry of directory ``node`` was added, removed or renamed: its mtime and ctime
        become now, as on a local file system; stored on its ``dir/`` marker where it has one
        about ``META_DELAY`` later (a burst of changes in one directory costs one PUT), kept
        in memory for directories that exist only as a key prefix."""
        now = time.time_ns()
        node.meta.mtime_ns = node.meta.ctime_ns = now
        self._dir_touched[node.path] = now
        if node.ino == ROOT_INO or not node.marker or node.path in self._dirs_to_store:
            return
        if not self._dirs_to_store:
            self.spawn(self._store_dir_times_later)
        self._dirs_to_store.add(node.path)

    async def _store_dir_times_later(self) -> None:
        await trio.sleep(META_DELAY)
        await self.store_dir_times()

    async def store_dir_times(self) -> None:
        """Write the times of touched directories to their markers (also at unmount)."""
        paths, self._dirs_to_store = self._dirs_to_store, set()
        for path in sorted(paths):
            node = self.inodes.at(path)
            if node is None or not node.is_dir or not node.marker or node.unlinked:
                continue
            try:
                async with node.lock:
                    await self._persist_meta(node)
            except OssEncError as exc:
                log.info("%s: directory times not stored: %s", self.where(node), exc)

    async def _dir_is_empty(self, node: Node) -> bool:
        page = await self.store.list_page(self.dkey(node.path), "/", None, 3)
        marker = self.dkey(node.path)
        if any(o.key != marker for o in page.objects) or page.prefixes:
            return False
        return not any(c.parent_path == node.path and not c.unlinked and not c.exists_remote
                       for c in self.inodes.under(node.path))

    async def rmdir(self, parent_ino: int, name: str) -> None:
        if self.read_only:
            raise _err(errno.EROFS)
        parent = self.node(parent_ino)
        node = await self._child(parent, name)
        if not node.is_dir:
            raise _err(errno.ENOTDIR)
        if not await self._dir_is_empty(node):
            raise _err(errno.ENOTEMPTY)
        await self.store.delete(self.dkey(node.path))
        self.inodes.drop_entry(parent.path, name)
        self.inodes.invalidate_dir(node.path)
        self.inodes.detach(node)
        self._touch_dir(parent)
        await self._ensure_marker(parent)

    async def rename(self, p_old: int, n_old: str, p_new: int, n_new: str, flags: int) -> None:
        if self.read_only:
            raise _err(errno.EROFS)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise _err(errno.EINVAL)
        old_parent, new_parent = self.node(p_old), self.node(p_new)
        src = await self._child(old_parent, n_old)
        try:
            dst: Node | None = await self._child(new_parent, n_new)
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
            if dst.is_dir and not await self._dir_is_empty(dst):
                raise _err(errno.ENOTEMPTY)
        new_path = join(new_parent.path, n_new)
        self.check_key_length(new_path, is_dir=src.is_dir)
        replaced = None if src.is_dir else self._undefer(self.okey(new_path))
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
            self.inodes.invalidate_dir(dst.path)
        self.inodes.drop_entry(old_parent.path, n_old)
        self.inodes.note_entry(new_parent.path, Entry(n_new, src.kind, src.size, src.etag, src.mtime))
        src.meta.touch_ctime()
        self._touch_dir(old_parent)
        if new_parent is not old_parent:
            self._touch_dir(new_parent)
        if src.is_dir:
            self.inodes.invalidate_dir(new_parent.path)
        await self._ensure_marker(old_parent)

    async def _rename_file_locked(self, src: Node, dst: Node | None, new_path: str,
                                  replaced: str | None) -> None:
        """Move a file's object (or its pending upload) to ``new_path``, replacing ``dst``
        (or ``replaced``: the ETag of an object unlinked there while open); the caller
        holds the locks of both."""
        st = src.staging if src.dirty else None
        if st is not None and not st.complete:
            await st.materialize()          # the old name's object goes away below
        if src.exists_remote and st is not None and st.relay:
            # a pending metadata change goes to the new name at once: one re-upload
            # instead of a copy now and a re-upload later (rsync's temp file + rename)
            extra = posix.to_headers(src.meta)
            copied = await self.objects.relay(st.source(), self.okey(new_path),
                                              {**st.kept, **extra})
            await self.store.delete(self.okey(src.path))
            self.attr_cache.forget(self.okey(src.path))
            self.attr_cache.record(self.okey(new_path), copied, src.size, extra,
                                   src.object_type, not_after=self.store.server_now())
            src.staging, src.dirty = None, False
            if self.writeback is not None:
                self.writeback.forget(src)
            await self.staging.drop(st)     # its journal entry is done with
            st = None
            src.etag = copied
        elif st is not None and (st.committed or not src.exists_remote):
            # acknowledged content goes up under the new name, replacing the target's
            # version there; the old name's object (if any) is the version it was to
            # replace, and goes with the name: no copy of it
            if st.base_etag is not None:
                await self._delete_version(self.okey(src.path), st.base_etag)
                self.attr_cache.forget(self.okey(src.path))
            target = dst.etag if dst is not None and dst.exists_remote else replaced
            st.base_etag = target
            src.exists_remote, src.etag = target is not None, target
        elif src.exists_remote:
            # copy first (replacing any target), then delete: a failure in between
            # leaves two copies, never none
            copied = await self._copy_object(
                self.okey(src.path), self.okey(new_path),
                ObjectInfo(self.okey(src.path), src.size, src.etag or "", src.mtime,
                           src.object_type))
            await self.store.delete(self.okey(src.path))
            self.attr_cache.forget(self.okey(src.path))
            if st is not None and st.base_etag is not None:
                st.base_etag = copied        # the version we now build on
            src.etag = copied
        if dst is not None:
            dst.dirty = False
            if dst.staging is not None and dst.open_count == 0:
                old, dst.staging = dst.staging, None
                await self.staging.drop(old)
            elif dst.staging is not None and dst.staging.committed:
                # still open: keep its data for the readers, but nothing to replay
                await trio.to_thread.run_sync(functools.partial(
                    self.staging.journal.remove, dst.staging.ident, durable=True))
                dst.staging.committed = False
            if self.writeback is not None:
                self.writeback.forget(dst)
            self.inodes.detach(dst)
        self.inodes.move(src.path, new_path)
        if src.staging is not None:
            src.staging.key = self.okey(new_path)
            if st is not None and st.committed:
                await st.save_manifest(durable=True)

    async def _rename_dir(self, src: Node, new_path: str, dst: Node | None) -> None:
        """Copy every object, then delete the originals: a failure leaves both, never neither."""
        old_prefix, new_prefix = self.dkey(src.path), self.dkey(new_path)
        objects = [o async for o in self.store.iter_objects(old_prefix, "")]
        keys = [o.key for o in objects]
        busy = [n for n in self.inodes.under(src.path) if n.dirty or n.open_count]
        for n in busy:
            await n.lock.acquire()
        try:
            for n in busy:                 # their old objects go away: fetch what they need
                if n.dirty and n.staging is not None and not n.staging.complete:
                    await n.staging.materialize()
            limiter = trio.CapacityLimiter(8)
            copied: dict[str, str] = {}

            async def copy_one(o: ObjectInfo) -> None:
                async with limiter:
                    copied[o.key] = await self._copy_object(
                        o.key, new_prefix + o.key[len(old_prefix):], o)
            async with trio.open_nursery() as nursery:
                for o in objects:
                    nursery.start_soon(copy_one, o)
            if old_prefix not in keys:
                await self.store.put(new_prefix, b"", posix.to_headers(src.meta))
            await self.store.delete_many(keys)
            self.attr_cache.forget_under(old_prefix)
            if dst is not None:
                self.inodes.detach(dst)
            self.inodes.move(src.path, new_path)
            for n in busy:
                st = n.staging
                if st is None:
                    continue
                old_key = st.key
                st.key = self.okey(n.path)
                if st.base_etag is not None and old_key in copied:
                    st.base_etag = copied[old_key]     # the version we now build on
                    n.etag = copied[old_key]
                if n.dirty and st.committed:
                    await st.save_manifest(durable=True)
            src.marker = True
        finally:
            for n in busy:
                n.lock.release()

    async def _copy_object(self, src: str, dst: str, info: ObjectInfo) -> str:
        """One object of a rename, copied with its headers (``EncryptedObjects.copy``); a
        native symlink is made again with its own target and metadata, since GET/HEAD of a
        link answer for its target (SPEC D.6). Returns the new ETag ("" for a link)."""
        if info.object_type != "Symlink":
            return await self.objects.copy(src, dst, info)
        target = await self.store.get_symlink(src)
        own = await self.store.head(src)
        meta = {k: v for k, v in (own.headers if own is not None else {}).items()
                if k.startswith("x-oss-meta-")}
        await self.store.put_symlink(dst, target, meta)
        return ""

    def statfs(self) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 38
        s.f_files = s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = NAME_MAX
        return s

