"""The state every room of the file system model shares, and the few helpers on it.

Why it exists: ``FsModel``'s rooms (``attrs``, ``freshness``, ``lifecycle``, ``metadata``,
``namespace``, ``rename``, ``files``, ``replay``) work on one set of objects -- the inode
table, the store, the encrypted objects layer, the block cache, the staging area, the upload
queue -- and one mount configuration (prefix, policy, ttl). They are kept here, in one place,
instead of being threaded through every call; each room receives this object plus the rooms
below it, never the rooms above. ``FsModel`` (``fs.model``) *is* this object with the rooms and
the public API added, so that what the mounter sets after construction (``writeback``,
``kernel_forget``) is seen by every room at once.

Also here: object keys of paths (ossfs layout, ``fs.keymap``), and the table of objects of
files unlinked while open (deleted at their last close), which listings, creates, renames and
releases all consult.
"""
from __future__ import annotations

import errno
import logging
import time
from typing import Awaitable, Callable

import pyfuse3

from ..errors import OssEncError
from ..objects import EncryptedObjects
from ..store import ObjectStore

from . import keymap, posix
from .attrcache import AttrCache
from .cache import BlockCache
from .inodes import ROOT_INO, InodeTable, Node
from .stagingarea import StagingArea
from .uploader import Uploader
from .writeback import WriteBack

log = logging.getLogger(__name__)

#: seconds a metadata change of a closed file waits for more changes before its re-upload
#: (``cp -a``/``rsync -a``/``tar x`` set mode, owner and times in separate calls)
META_DELAY = 1.0
MAX_KEY_BYTES = 1023   # the longest object key OSS takes (SPEC D.5, InvalidObjectName)
NAME_MAX = 1024        # the longest name FUSE passes (FUSE_NAME_MAX); the key limit still holds


def fuse_err(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


_err = fuse_err


class FsContext:
    def __init__(self, store: ObjectStore, objects: EncryptedObjects, cache: BlockCache, staging: StagingArea,
                 uploader: Uploader, *, prefix: str, policy: posix.MountPolicy, ttl: float,
                 read_only: bool, spawn: Callable[[Callable[[], Awaitable[object]]], bool],
                 write_back: float = 0.0, attr_cache: AttrCache | None = None,
                 listing_attrs: bool = False) -> None:
        self.store = store
        self.attr_cache = attr_cache if attr_cache is not None else AttrCache(None)
        self.listing_attrs = listing_attrs
        self.write_back = write_back
        self.writeback: WriteBack[Node] | None = None     # set by the mounter
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
        root.headers_expires_mono = float("inf")
        root.marker = True
        #: when this mount started: the stable time of directories that exist only as key
        #: prefixes and were not changed here (no marker object to carry a time)
        self.started_wall = time.time()
        #: mtime (ns) of directories whose entries changed here, until a listing of a later
        #: marker says otherwise (set by ``namespace``, read by ``freshness``)
        self.dir_touched: dict[str, int] = {}
        #: (key, ETag) of object versions whose bad POSIX metadata was reported already
        self.warned_meta: set[tuple[str, str]] = set()
        #: objects of files unlinked while open: key -> (node, ETag), deleted at last close
        self.deferred: dict[str, tuple[Node, str]] = {}
        #: tells the kernel to drop a cached name (pyfuse3; a no-op below FUSE)
        self.kernel_forget: Callable[[int, str], None] = lambda ino, name: None

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

    def node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise _err(errno.ENOENT)
        return node

    # ------------------------------------------------------------------ unlinked while open
    async def delete_deferred(self, node: Node) -> None:
        """The last close of a file unlinked while open: its object goes now, unless the name
        was taken again meanwhile (``undefer``) or another client replaced the object."""
        key = next((k for k, (n, _) in self.deferred.items() if n is node), None)
        if key is None:
            return
        _, etag = self.deferred.pop(key)
        try:
            await self.delete_version(key, etag)
        except OssEncError as exc:
            log.warning("oss://%s/%s: unlinked while open, not deleted at its last close: %s",
                        self.store.name, key, exc)

    async def delete_version(self, key: str, etag: str) -> None:
        """Delete ``key`` if it still holds version ``etag`` (OSS has no conditional delete:
        a HEAD right before is the check); another client's newer version stays."""
        info = await self.store.head(key)
        if info is not None and info.etag == etag:
            await self.store.delete(key)

    def undefer(self, key: str) -> str | None:
        """``key`` is written again (create, rename onto it): an unlinked-while-open object
        there must not be deleted at its last close; returns its ETag, which the new
        object replaces."""
        hit = self.deferred.pop(key, None)
        return hit[1] if hit is not None else None

    def hidden(self, key: str, etag: str | None) -> bool:
        """An object unlinked here while open: listings must not show it."""
        hit = self.deferred.get(key)
        return hit is not None and hit[1] == etag
