"""Freshness: what the bucket holds now, as far as the ttl lets us believe it.

Why it exists: every other room asks the same questions -- what is in this directory, is this
node's metadata still fresh, does this name exist -- and the answers come from listings,
HEADs, the persistent attribute cache and stat-ahead. This room owns those answers (and the
``STAT_AHEAD`` machinery), so the rooms above never talk to the store to *read* metadata.

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

import errno
import functools
import logging
import stat
import time
import weakref
from typing import NoReturn

import pyfuse3
import trio

from ..errors import FormatError, NetworkError, OssEncError
from ..store import ObjectInfo
from . import keymap, posix
from .attrs import Attrs, node_headers
from .context import FsContext, fuse_err as _err
from .inodes import ROOT_INO, DirListing, Entry, Node, join
from .readahead import BlockSource

log = logging.getLogger(__name__)

STAT_AHEAD = 64        # entries resolved ahead of a stat walk, in parallel
WALK_MIN = 2           # files opened in readdir order before their successors are fetched
WALK_SKIP = 4          # the next open may skip this many names and still continue the walk


class Freshness:
    def __init__(self, ctx: FsContext, attr: Attrs) -> None:
        self.ctx = ctx
        self.attr = attr
        self._resolving: dict[str, trio.Event] = {}    # path -> HEAD in flight (stat-ahead)
        self._walks: dict[str, tuple[str, int]] = {}   # dir path -> (last opened name, run)
        #: dir path -> (listing, last name stat-ahead went through, since when: monotonic)
        self._ahead: dict[str, tuple[weakref.ref[DirListing], str, float]] = {}

    async def list_dir(self, node: Node) -> dict[str, Entry]:
        lst = self.ctx.inodes.listing(node.path)
        if lst is not None:
            return lst.entries
        # changes made here while the pages come in are replayed onto them (``fs.inodes``)
        since = self.ctx.inodes.begin_listing(node.path)
        try:
            entries = await self._fetch_listing(node)
        except NetworkError as exc:
            self.ctx.inodes.end_listing(node.path, since, None)
            stale = self.ctx.inodes.stale_listing(node.path)
            if stale is None:
                raise
            log.info("listing %s: %s; serving the cached listing", self.ctx.where(node), exc)
            return self._with_local(node, dict(stale.entries))
        except BaseException:
            self.ctx.inodes.end_listing(node.path, since, None)
            raise
        lst = self.ctx.inodes.end_listing(node.path, since, entries)
        assert lst is not None
        self._with_local(node, lst.entries)
        prefix = self.ctx.dkey(node.path)
        self.ctx.attr_cache.listed(
            prefix, {prefix + name for name, e in lst.entries.items() if e.kind != stat.S_IFDIR},
            {prefix + name + ("/" if e.kind == stat.S_IFDIR else "") for name, e in lst.entries.items()})
        return lst.entries

    async def _fetch_listing(self, node: Node) -> dict[str, Entry]:
        """Every entry OSS lists in the directory, all pages."""
        prefix = self.ctx.dkey(node.path)
        entries: dict[str, Entry] = {}
        token: str | None = None
        while True:
            page = await self.ctx.store.list_page(prefix, "/", token, 1000)
            for obj in page.objects:
                if obj.key == prefix:
                    continue                  # the directory's own marker
                name = keymap.name(obj.key[len(prefix):])
                if name in entries or (self.ctx.deferred and self.ctx.hidden(obj.key, obj.etag)):
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
        for child in self.ctx.inodes.children(node.path):
            if not child.unlinked and (not child.exists_remote or child.dirty):
                entries[child.name] = Entry(child.name, child.kind, child.size, child.etag,
                                            child.mtime)
        return entries

    def node_from_entry(self, parent: Node, entry: Entry) -> Node:
        path = join(parent.path, entry.name)
        existing = self.ctx.inodes.at(path)
        if existing is not None and (existing.kind == entry.kind or existing.headers is not None
                                     or existing.meta_expires_mono > 0
                                     or existing.dirty or not existing.exists_remote):
            if entry.kind != stat.S_IFDIR and existing.kind != stat.S_IFDIR and \
                    not existing.dirty and existing.exists_remote:
                if entry.etag and entry.etag != existing.etag:
                    # changed remotely: take size/time from the listing, re-HEAD on next stat
                    existing.size, existing.etag, existing.mtime = entry.size, entry.etag, entry.mtime
                    existing.headers = None
                    existing.symlink_target = None
                    existing.meta_expires_mono = 0
                if not self.meta_fresh(existing):
                    known = self._listed_meta(path, entry)
                    if known is not None and known.kind == existing.kind:
                        existing.meta = known
                    if (known is not None and known.kind == existing.kind) or \
                            (self.ctx.listing_attrs and existing.headers is None):
                        existing.meta_expires_mono = self._listing_expiry(parent)
                self.size_settled(existing)
            return existing
        is_dir = entry.kind == stat.S_IFDIR
        meta = None if is_dir else self._listed_meta(path, entry)
        trusted = meta is not None or (self.ctx.listing_attrs and not is_dir)
        if meta is None:
            meta = posix.default_meta(is_dir=is_dir, mtime=entry.mtime or self.ctx.started_wall,
                                      policy=self.ctx.policy)
            if entry.kind == stat.S_IFLNK:
                meta.mode = stat.S_IFLNK | 0o777
        node = self.ctx.inodes.bind(path, entry.kind if is_dir else meta.kind, meta)
        node.size, node.etag, node.mtime, node.object_type = (entry.size, entry.etag, entry.mtime,
                                                              entry.object_type)
        if trusted:
            node.meta_expires_mono = self._listing_expiry(parent)
            self.size_settled(node)
        return node

    def _listed_meta(self, path: str, entry: Entry) -> posix.PosixMeta | None:
        """The attributes recorded for exactly the version a listing shows (``attrcache``)."""
        hit = self.ctx.attr_cache.lookup(self.ctx.okey(path), entry.etag, entry.size, entry.mtime)
        if hit is None:
            return None
        headers, object_type = hit
        meta = posix.from_headers(headers, is_dir=False, fallback_mtime=entry.mtime,
                                  policy=self.ctx.policy)
        if object_type == "Symlink":
            meta.mode = stat.S_IFLNK | stat.S_IMODE(meta.mode)
        return meta

    def _listing_expiry(self, parent: Node) -> float:
        lst = self.ctx.inodes.stale_listing(parent.path)
        return lst.expires_mono if lst is not None else time.monotonic() + self.ctx.ttl

    @staticmethod
    def _fresh(node: Node) -> bool:
        return node.headers is not None and node.headers_expires_mono > time.monotonic()

    def meta_fresh(self, node: Node) -> bool:
        return node.meta_expires_mono > time.monotonic() or self._fresh(node)

    def _needs_head(self, node: Node, full: bool = False) -> bool:
        """``full``: every header is needed (to open it), not only its POSIX attributes."""
        if node.ino == ROOT_INO or node.dirty or not node.exists_remote:
            return False
        return not (self._fresh(node) if full else self.meta_fresh(node))

    async def resolve(self, node: Node, full: bool = False) -> Node:
        """Make sure ``node``'s attributes (``full``: all its headers) are fresh, with one HEAD
        if need be; may return a new node (type)."""
        pending = self._resolving.get(node.path)
        if pending is not None:           # a stat-ahead HEAD is on its way: share it
            await pending.wait()
            node = self.ctx.inodes.at(node.path) or node
        if not self._needs_head(node, full):
            return node
        try:
            return await self._resolve_remote(node)
        except NetworkError as exc:
            if node.headers is None and node.exists_remote and not node.is_dir and \
                    node.etag is None:
                raise
            # offline: what we knew stays valid (cached blocks are pinned by ETag anyway)
            log.info("%s: %s; serving cached attributes", self.ctx.where(node), exc)
            return node

    async def _resolve_remote(self, node: Node) -> Node:
        path = node.path
        if node.is_dir:
            info = await self.ctx.store.head(self.ctx.dkey(path))
            if node.path != path:       # renamed meanwhile: the answer is of the old name
                return node
            node.marker = info is not None
            headers = info.headers if info is not None else {}
            node.headers = node_headers(headers)
            node.headers_expires_mono = time.monotonic() + self.ctx.ttl
            node.meta = posix.from_headers(headers, is_dir=True,
                                           fallback_mtime=info.mtime if info else self.ctx.started_wall,
                                           policy=self.ctx.policy)
            touched = self.ctx.dir_touched.get(node.path)
            if touched is not None and touched > node.meta.mtime_ns:
                node.meta.mtime_ns = node.meta.ctime_ns = touched    # not stored (yet)
            return node
        if node.object_type == "Symlink":
            return await self._resolve_native_link(node)
        info = await self._head_file(node, self.ctx.okey(path))
        if self.moved_meanwhile(node, path):
            return node
        if info is None:
            self.gone(node)
        kind = self.attr.file_kind(info)
        if kind != node.kind:
            node = self.ctx.inodes.bind(node.path, kind, node.meta)
        self.attr.apply_file_info(node, info)
        if kind == stat.S_IFLNK and info.object_type == "Symlink":
            node.meta.mode = stat.S_IFLNK | stat.S_IMODE(node.meta.mode or 0o777)
        await self.probe_size(node)       # part of its attributes (also for stat-ahead)
        return node

    async def _head_file(self, node: Node, key: str) -> ObjectInfo | None:
        """A HEAD of a file; or, on a mount that looks for Encryption SDK messages, whatever
        answers it and that look at once (``EsdkObjects.head``): a small object's whole body
        then comes along and goes to the block cache, so reading it costs no other GET."""
        esdk = self.ctx.objects.esdk
        if esdk is None:
            return await self.ctx.store.head(key)
        got = await esdk.head(key, node.size, node.etag, node.headers)
        if got is None:
            return None
        info, body = got
        if body is not None:
            self._keep_block0(info, body)
        return info

    def _keep_block0(self, info: ObjectInfo, data: bytes) -> None:
        """Put a GET's ``data`` (the object's start, as stored) in the block cache as block 0
        when it is all of that block, unless a fetch of it is under way."""
        cache = self.ctx.cache
        if data and len(data) == min(info.size, cache.block_size) and \
                cache.pending(info.key, info.etag, 0) is None:
            cache.settle(info.key, info.etag, 0, data)

    @staticmethod
    def moved_meanwhile(node: Node, path: str) -> bool:
        """Whether ``node`` was renamed (or written) while a request about ``path``
        was out: its answer is then about an old name or version and must not be applied;
        a HEAD of the old key of a file renamed meanwhile answers 404, and taking that as
        "gone" once dropped the file under its new name (tests/mount/test_stress.py)."""
        return node.path != path or node.dirty

    def gone(self, node: Node) -> NoReturn:
        """The object behind ``node`` is gone: forget it and answer ENOENT."""
        self.ctx.attr_cache.forget(self.ctx.okey(node.path))
        self.ctx.inodes.drop_entry(node.parent_path, node.name)
        if node.open_count == 0:
            self.ctx.inodes.detach(node)
        raise _err(errno.ENOENT)

    async def _resolve_native_link(self, node: Node) -> Node:
        """A native OSS symlink (known as one from a listing, SPEC D.6): a HEAD of it answers
        with the *target's* size, ETag and type but the link's *own* user metadata, so only
        its metadata is taken from the HEAD; a dangling link (HEAD 404) is confirmed by
        GetObjectMeta, which describes the link itself."""
        path = node.path
        key = self.ctx.okey(path)
        info = await self.ctx.store.head(key)
        if info is None:
            own = await self.ctx.store.get_object_meta(key)
            if self.moved_meanwhile(node, path):
                return node
            if own is None or own.object_type != "Symlink":
                self.gone(node)
            headers: dict[str, str] = {}
        else:
            headers = {k: v for k, v in info.headers.items() if k.startswith("x-oss-meta-")}
        node.headers = headers
        node.headers_expires_mono = node.meta_expires_mono = time.monotonic() + self.ctx.ttl
        node.meta = posix.from_headers(headers, is_dir=False, fallback_mtime=node.mtime,
                                       policy=self.ctx.policy)
        node.meta.mode = stat.S_IFLNK | stat.S_IMODE(node.meta.mode or 0o777)
        return node

    async def child(self, parent: Node, name: str) -> Node:
        if not parent.is_dir:
            raise _err(errno.ENOTDIR)
        path = join(parent.path, name)
        existing = self.ctx.inodes.at(path)
        if existing is not None and (existing.dirty or not existing.exists_remote
                                     or (not existing.is_dir and self.meta_fresh(existing))):
            return existing          # a HEAD within ttl proves it exists
        self._stat_ahead(parent, name)
        if existing is not None and not existing.is_dir and not existing.unlinked \
                and self.ctx.inodes.listing(parent.path) is None \
                and self.ctx.inodes.stale_listing(parent.path) is not None:
            # known from an expired listing: its own HEAD answers, not a whole re-listing
            try:
                return await self.resolve(existing)
            except pyfuse3.FUSEError as exc:
                if exc.errno != errno.ENOENT:
                    raise             # ENOENT: it may be a directory now; list to find out
        if existing is not None and existing.is_dir and not existing.unlinked \
                and self.ctx.inodes.listing(parent.path) is None \
                and self.ctx.inodes.stale_listing(parent.path) is not None \
                and await self._dir_still_there(existing):
            return existing           # the kernel revalidating a path: no listing of the parent
        entries = await self.list_dir(parent)
        entry = entries.get(name)
        if entry is None:
            raise _err(errno.ENOENT)
        return await self.resolve(self.node_from_entry(parent, entry))

    async def _dir_still_there(self, node: Node) -> bool:
        """A known directory, checked with one request (a HEAD of its marker, or a one-key
        listing when it has none) instead of a listing of its whole parent."""
        try:
            node = await self.resolve(node)
            if node.marker:
                return True
            page = await self.ctx.store.list_page(self.ctx.dkey(node.path), "/", None, 1)
        except NetworkError:
            return True               # offline: what we knew stays valid
        return bool(page.objects or page.prefixes)

    def _small(self, node: Node) -> bool:
        """A regular file whose whole content is one cache block (one GET fetches it)."""
        return node.kind == stat.S_IFREG and node.object_type != "Symlink" and not node.dirty \
            and node.exists_remote and 0 < node.size <= self.ctx.cache.block_size

    def _block0_wanted(self, node: Node) -> bool:
        key, etag = self.ctx.okey(node.path), node.etag or ""
        return self._small(node) and not self.ctx.cache.in_memory(key, etag, 0) \
            and not self.ctx.cache.on_disk(key, etag, 0) \
            and self.ctx.cache.pending(key, etag, 0) is None

    def _stat_ahead(self, parent: Node, name: str, count: int = STAT_AHEAD,
                    content: bool = False) -> None:
        """HEADs of the ``count`` entries after ``name``; ``content``: a small file gets a GET
        of its whole content instead (it answers what the HEAD would, ``_get_ahead``)."""
        lst = self.ctx.inodes.stale_listing(parent.path)
        if lst is None or name not in lst.entries:
            return
        content = content or self.reading_walk(parent)
        beyond, since = self._stat_ahead_mark(parent, lst, content)
        names = lst.names_after(name, count, beyond)
        for later in names:
            path = join(parent.path, later)
            entry = lst.entries.get(later)
            if path in self._resolving or entry is None:
                continue
            node = self.node_from_entry(parent, entry)
            if node.is_dir:
                continue
            if content and self._block0_wanted(node):
                job = functools.partial(self._get_ahead, node, path)
            elif self._needs_head(node):
                job = functools.partial(self._head_ahead, node, path)
            else:
                continue
            self._resolving[path] = trio.Event()
            if not self.ctx.spawn(job):
                self._resolving.pop(path).set()
                self._ahead.pop(parent.path, None)
                return
        if names and not content:
            self._ahead[parent.path] = (weakref.ref(lst), names[-1], since)

    def _stat_ahead_mark(self, parent: Node, lst: DirListing,
                         content: bool) -> tuple[str | None, float]:
        """(name up to which stat-ahead already went in this listing, since when): a stat
        walk looks only past it, not at all ``STAT_AHEAD`` names again at every stat. Every
        ttl/2 the whole window is looked at again (answers fetched ahead that expired before
        their stat are fetched again, several at once)."""
        now = time.monotonic()
        mark = self._ahead.get(parent.path)
        if content or mark is None or mark[0]() is not lst or now - mark[2] >= self.ctx.ttl / 2:
            if len(self._ahead) > 64:
                self._ahead.pop(next(iter(self._ahead)))
            return None, now
        return mark[1], mark[2]

    # -- small files read one after the other (``cat *``, ``cp -r`` out, ``grep -r``) -------
    def reading_walk(self, parent: Node) -> bool:
        walk = self._walks.get(parent.path)
        return walk is not None and walk[1] >= WALK_MIN

    def opened(self, node: Node) -> None:
        """A clean file is opened: detect files of one directory opened in readdir order,
        and once ``WALK_MIN`` were, fetch the content of the small ones that follow (up to
        ``STAT_AHEAD``, several GETs at once) so that their opens and reads send nothing."""
        parent = self.ctx.inodes.at(node.parent_path)
        lst = self.ctx.inodes.stale_listing(node.parent_path)
        if parent is None or lst is None or node.name not in lst.entries:
            return
        last, run = self._walks.get(parent.path, ("", 0))
        run = run + 1 if last and node.name in lst.names_after(last, WALK_SKIP) else 1
        self._walks[parent.path] = (node.name, run)
        if len(self._walks) > 64:
            self._walks.pop(next(iter(self._walks)))
        if run >= WALK_MIN:
            self._stat_ahead(parent, node.name, min(STAT_AHEAD, 4 << (run - WALK_MIN)), True)

    async def resolve_for_read(self, node: Node) -> Node:
        """``resolve(node, full=True)`` for an open; a small file whose headers are not fresh
        is resolved with one GET of its content (into the block cache), not a HEAD now and a
        GET at the first read."""
        pending = self._resolving.get(node.path)
        if pending is not None:
            await pending.wait()
            node = self.ctx.inodes.at(node.path) or node
        if not self._needs_head(node, full=True) or not self._block0_wanted(node):
            return await self.resolve(node, full=True)
        try:
            if await self._fetch_small(node):
                return self.ctx.inodes.at(node.path) or node
        except OssEncError:
            pass       # offline (resolve() decides what that means), or empty now (416)
        return await self.resolve(node, full=True)

    async def _fetch_small(self, node: Node) -> ObjectInfo | None:
        """One GET of a small file's first block: its headers are applied to ``node`` and
        the block goes to the block cache. None when that did not settle it (gone, empty,
        a symlink or directory now): the caller HEADs as before."""
        path = node.path
        key = self.ctx.okey(path)
        got = await self.ctx.store.get_head(key, self.ctx.cache.block_size)
        if got is None or self.moved_meanwhile(node, path):
            return None                 # the caller resolves it again under its name now
        info, data = got
        if self.attr.file_kind(info) != node.kind or info.object_type == "Symlink":
            return None
        self.attr.apply_file_info(node, info)
        esdk = self.ctx.objects.esdk
        if esdk is not None and esdk.may_be_python(info.size, info.headers):
            # maybe an Encryption SDK message, whose ciphertext starts after its DER header:
            # the body is no block 0 of the reader's ciphertext (docs/esdk.md)
            return info
        self._keep_block0(info, data)
        return info

    def _done_resolving(self, path: str) -> None:
        """A HEAD or GET ahead registered under ``path`` ended. Keyed by the path it was
        started for: the node may have been renamed meanwhile (a KeyError here once ended a
        mount under a parallel rename workload)."""
        done = self._resolving.pop(path, None)
        if done is not None:
            done.set()

    async def _get_ahead(self, node: Node, path: str) -> None:
        try:
            with trio.move_on_after(max(30.0, self.ctx.ttl)):
                info = await self._fetch_small(node)
                if info is None:
                    await self._resolve_remote(node)
                else:       # the data key too: the RSA/KMS unwrap is off the open's path
                    await self.ctx.objects.material_for(info)
        except Exception as exc:        # the open itself retries and reports
            log.debug("read-ahead of %s: %s", self.ctx.where(node), exc)
        finally:
            self._done_resolving(path)

    async def _head_ahead(self, node: Node, path: str) -> None:
        try:
            with trio.move_on_after(max(30.0, self.ctx.ttl)):
                await self._resolve_remote(node)
        except Exception as exc:        # the stat itself will retry and report
            log.debug("stat-ahead %s: %s", self.ctx.where(node), exc)
        finally:
            self._done_resolving(path)

    async def lookup(self, parent_ino: int, name: str) -> pyfuse3.EntryAttributes:
        parent = self.ctx.node(parent_ino)
        if name == ".":
            node = parent
        elif name == "..":
            node = self.ctx.inodes.at(parent.parent_path) or parent
        else:
            node = await self.child(parent, name)
            await self.probe_size(node)
        node.nlookup += 1
        return self.attr.attrs(node)

    async def getattr(self, ino: int) -> pyfuse3.EntryAttributes:
        node = self.ctx.node(ino)
        if node.unlinked:
            return self.attr.attrs(node)
        resolved = await self.resolve(node)
        if resolved is not node:          # became another type: make the kernel look again
            raise _err(errno.ENOENT)
        await self.probe_size(node)
        return self.attr.attrs(node)

    async def probe_size(self, node: Node) -> None:
        """Learn whether a file is a Python-layout Encryption SDK object, whose plaintext is
        smaller than what is stored (one ranged GET per object version; docs/esdk.md). A
        broken message keeps its stored size here; opening it reports the error."""
        if self.size_settled(node):
            return
        etag, stored, key = node.etag or "", node.size, self.ctx.okey(node.path)
        info = ObjectInfo(key=key, size=stored, etag=etag, mtime=node.mtime,
                          object_type=node.object_type, headers=dict(node.headers or {}))
        try:
            size = await self.ctx.objects.plain_size(info)
        except FormatError:
            size = stored             # opening it reports the error
        except OssEncError as exc:    # changed or unreachable: the next stat tries again
            log.debug("%s: size probe: %s", self.ctx.where(node), exc)
            return
        self.ctx.attr_cache.record_probe(key, etag, stored, size)
        if node.etag == etag and node.size == stored:
            node.esdk_etag, node.esdk_plain = etag, (size if size != stored else None)

    def size_settled(self, node: Node) -> bool:
        """Whether stat can show ``node``'s size without a probe: it needs none, or this
        version was probed before (by this mount or an earlier one: the attribute cache, which
        also records "no ESDK message" for versions whose headers proved it). No request: a
        readdir entry answered from here gets an attribute timeout, so ``ls -l`` sends no
        GETATTR per entry."""
        if not self.attr.size_unknown(node):
            return True
        etag, stored = node.etag or "", node.size
        size = self.ctx.attr_cache.probed_size(self.ctx.okey(node.path), etag, stored)
        if size is None:
            return False
        node.esdk_etag, node.esdk_plain = etag, (size if size != stored else None)
        return True

    def forget(self, ino: int, n: int) -> None:
        self.ctx.inodes.forget(ino, n)

    async def source(self, node: Node) -> BlockSource:
        headers = node.headers
        if headers is None or not headers:
            await self.resolve(node, full=True)
            headers = node.headers or {}
        info = ObjectInfo(key=self.ctx.okey(node.path), size=node.size, etag=node.etag or "",
                          mtime=node.mtime, object_type=node.object_type, headers=dict(headers))
        if not info.headers:
            info = await self.ctx.store.head(info.key) or info
        reader = await self.ctx.objects.open_reader(info.key, info)
        return BlockSource(self.ctx.cache, reader, info.key, info.etag, reader.size, self.ctx.spawn)
