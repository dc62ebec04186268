"""What OSS says about objects: ``ObjectInfo`` (a HEAD's headers or a listing's entry) and a
``Listing`` page, parsed from oss2's answers. No requests are made here.
"""
from __future__ import annotations

import email.utils
import sys
from dataclasses import dataclass, field
from typing import Mapping


#: storage classes whose objects must be restored (RestoreObject) before a GET (SPEC D.13)
ARCHIVE_CLASSES = ("Archive", "ColdArchive", "DeepColdArchive")


@dataclass
class ObjectInfo:
    """What OSS says about one object; ``headers`` is empty when it came from a listing."""

    key: str
    size: int
    etag: str
    mtime: float
    object_type: str
    headers: dict[str, str] = field(default_factory=dict)
    storage_class: str = ""      # Standard, IA, Archive, ColdArchive, DeepColdArchive


@dataclass
class Listing:
    """One ListObjectsV2 page: objects, common prefixes, and the continuation token of the next
    page (None on the last one)."""

    objects: list[ObjectInfo]
    prefixes: list[str]
    next_token: str | None


def http_time(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0


#: headers that describe one HTTP exchange, not the object: not kept in ``ObjectInfo``
#: (the mount keeps every known object's headers in memory, ~40 % of them were these)
EXCHANGE_HEADERS = frozenset({"date", "server", "connection", "keep-alive", "accept-ranges",
                              "x-oss-request-id", "x-oss-server-time", "content-range"})


#: headers whose values repeat from object to object
_FEW_VALUES = frozenset({"content-type", "x-oss-object-type", "x-oss-storage-class",
                         "x-oss-meta-client-side-encryption-cek-alg",
                         "x-oss-meta-client-side-encryption-wrap-alg"})


def info_from_headers(key: str, headers: Mapping[str, str]) -> ObjectInfo:
    """The object a HEAD or GET answered for, with its headers (lower-case; those of the
    exchange itself left out). Names, and values that repeat, are interned: the mount keeps
    the headers of every object it knows (``fs.inodes.Node.headers``)."""
    h = {}
    for k, v in headers.items():
        name = sys.intern(str(k).lower())
        if name not in EXCHANGE_HEADERS:
            h[name] = sys.intern(str(v)) if name in _FEW_VALUES else str(v)
    return ObjectInfo(
        key=key,
        size=int(h.get("content-length", "0") or 0),
        etag=h.get("etag", "").strip('"'),
        mtime=http_time(h.get("last-modified")),
        object_type=h.get("x-oss-object-type", "Normal"),
        headers=h,
        storage_class=h.get("x-oss-storage-class", ""),
    )
