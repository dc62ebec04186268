"""What the kernel is told about a node, and how a HEAD's answer becomes a node's state.

Why it exists: the translation from a node (POSIX metadata from object headers, ``fs.posix``;
size from the staging while dirty) to ``EntryAttributes`` -- including the timeouts that
decide how long the kernel may cache them -- is needed by every room that answers the kernel,
and must be the same everywhere. It depends on nothing but the shared state.
"""
from __future__ import annotations

import logging
import stat
import time
from types import MappingProxyType
from typing import Mapping

import pyfuse3

from ..objects import kept_headers
from ..store import ObjectInfo
from . import posix
from .attrcache import NOT_ESDK_PYTHON
from .context import FsContext
from .inodes import Node

log = logging.getLogger(__name__)


#: read-only header maps shared by every node whose kept headers are the same (issue 17):
#: those without ``x-oss-meta-*`` headers (plain objects of other tools) differ only in a few
#: standard values (Content-Type, storage class), so most nodes of a bucket share one map.
#: At most ``_SHARED_MAX`` of them; nodes with other sets keep a map of their own.
_SHARED: dict[frozenset[tuple[str, str]], Mapping[str, str]] = {}
_SHARED_MAX = 256


def node_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """What a node keeps of a HEAD's (or a GET's) headers (``Node.headers``): every header
    something reads from a node -- the CSE and Encryption SDK ``x-oss-meta-*`` headers (its
    reader, the size probe: ``EncryptedObjects.open_reader``, ``EsdkObjects.may_be_python``),
    the POSIX ones, and the standard ones a metadata change keeps (``objects.kept_headers``;
    it takes them from a fresh HEAD anyway) -- and ``x-oss-object-type``, which OSS answers
    for every object: an empty map means "headers unknown" to ``Freshness.source`` and
    ``open_reader``, which would HEAD again. Not kept: what the node holds in fields of its own
    (ETag, Content-Length, Last-Modified) and what nobody reads (x-oss-hash-crc64ecma, ...);
    a mount keeps this for every object it has seen (issue 17: a whole copy of the headers
    took ~550 of the ~2,200 bytes of Python memory per known inode). Without user metadata
    the map is a shared read-only one (``_SHARED``)."""
    kept = kept_headers(headers)
    object_type = headers.get("x-oss-object-type")
    if object_type is not None:
        kept["x-oss-object-type"] = object_type
    if any(name.startswith("x-oss-meta-") for name in kept):
        return kept
    key = frozenset(kept.items())
    shared = _SHARED.get(key)
    if shared is None:
        if len(_SHARED) >= _SHARED_MAX:
            return kept
        shared = _SHARED[key] = MappingProxyType(kept)
    return shared


class Attrs:
    def __init__(self, ctx: FsContext) -> None:
        self.ctx = ctx

    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.generation = 0
        a.st_mode = posix.shown_mode(node.meta, self.ctx.policy)
        a.st_nlink = 1
        a.st_uid = posix.shown_uid(node.meta, self.ctx.policy)
        a.st_gid = posix.shown_gid(node.meta, self.ctx.policy)
        size = node.staging.size if node.staging is not None else self.plain_size(node)
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
        known = node.headers is not None or node.meta_expires_mono > 0 or not node.exists_remote \
            or node.dirty
        a.attr_timeout = self.ctx.ttl if known and not self.size_unknown(node) else 0
        # a listing cannot tell a symlink object from a file: let the kernel re-lookup
        a.entry_timeout = self.ctx.ttl if (known or node.is_dir) else 0
        return a

    @staticmethod
    def plain_size(node: Node) -> int:
        """The size stat shows: the stored size, or the plaintext size of an Encryption SDK
        object (Python layout) once ``freshness.probe_size`` found it."""
        if node.esdk_plain is not None and node.esdk_etag == node.etag:
            return node.esdk_plain
        return node.size

    def size_unknown(self, node: Node) -> bool:
        """A stored regular file that may be a Python-layout ESDK object not probed yet: its
        attributes must not be cached by the kernel until the probe ran."""
        esdk = self.ctx.objects.esdk
        if esdk is None or node.kind != stat.S_IFREG or node.dirty or not node.exists_remote \
                or not node.etag or node.staging is not None:
            return False
        if node.esdk_etag is not None and node.esdk_etag == node.etag:
            return False
        if self.ctx.listing_attrs and node.headers is None:
            # -o listing_attrs trades exact attributes for no request per entry: a probe is a
            # request per entry, so an unprobed Python-layout message shows its stored size
            return False
        return esdk.may_be_python(node.size, node.headers)

    def apply_file_info(self, node: Node, info: ObjectInfo) -> None:
        if node.dirty:
            return
        # an equal ETag or time keeps the node's own object: that is the listing's, which its
        # entry holds too (one copy per known object rather than two, issue 17)
        if node.etag != info.etag:
            node.symlink_target = None
            node.etag = info.etag
        if node.mtime != info.mtime:
            node.mtime = info.mtime
        node.size = info.size
        node.object_type = info.object_type
        node.exists_remote = True
        if info.headers:
            node.headers = node_headers(info.headers)
            node.headers_expires_mono = node.meta_expires_mono = time.monotonic() + self.ctx.ttl
            node.meta = posix.from_headers(info.headers, is_dir=False, fallback_mtime=info.mtime,
                                           policy=self.ctx.policy)
            if node.meta.ignored and (info.key, info.etag) not in self.ctx.warned_meta:
                self.ctx.warned_meta.add((info.key, info.etag))      # once per version
                log.warning("%s: unusable POSIX metadata ignored (%s): written by another "
                            "client?", self.ctx.where(node), ", ".join(node.meta.ignored))
            self.ctx.attr_cache.record(self.ctx.okey(node.path), info.etag, info.size, info.headers,
                                   info.object_type, lastmod=info.mtime)
            self._note_not_esdk(node)
        elif node.headers is None:
            node.meta = posix.default_meta(is_dir=False, mtime=info.mtime, policy=self.ctx.policy)

    @staticmethod
    def _note_not_esdk(node: Node) -> None:
        """Headers that prove this version is no Python-layout Encryption SDK message (the
        CSE or Java-layout ones the attribute cache also goes by) settle its shown size once:
        ``size_unknown`` would otherwise parse them again at every stat and readdir entry."""
        headers = node.headers or {}
        if node.etag and node.kind == stat.S_IFREG and any(h in headers for h in NOT_ESDK_PYTHON):
            node.esdk_etag, node.esdk_plain = node.etag, None

    @staticmethod
    def file_kind(info: ObjectInfo) -> int:
        if info.object_type == "Symlink":
            return stat.S_IFLNK
        return posix.kind_of_headers(info.headers)
