"""Listing a bucket: ListObjectsV2 pages, and every object under a prefix one page at a time."""
from __future__ import annotations

import sys
from typing import AsyncIterator

from .calls import StoreBase
from .info import Listing, ObjectInfo


class Listings(StoreBase):
    """ListObjectsV2 of one bucket."""

    async def list_page(self, prefix: str, delimiter: str = "/", token: str | None = None,
                        max_keys: int = 1000, start_after: str = "") -> Listing:
        def run() -> Listing:
            r = self.bucket.list_objects_v2(prefix=prefix, delimiter=delimiter,
                                            continuation_token=token or "", max_keys=max_keys,
                                            start_after=start_after)
            # the type and storage class repeat from object to object: interned, as a HEAD's
            # (``info_from_headers``), since a mount keeps the type of every listed entry
            objs = [ObjectInfo(key=o.key, size=int(o.size), etag=(o.etag or "").strip('"'),
                               mtime=float(o.last_modified or 0),
                               object_type=sys.intern(o.type or "Normal"),
                               storage_class=sys.intern(o.storage_class or ""))
                    for o in r.object_list]
            nxt = r.next_continuation_token if r.is_truncated else None
            return Listing(objs, list(r.prefix_list), nxt or None)
        return await self._call("list", prefix, run)

    async def iter_objects(self, prefix: str, delimiter: str = "",
                           start_after: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix`` (all pages, one at a time in memory), in key order,
        optionally only those after ``start_after``; for recursive copies and tools."""
        token: str | None = None
        while True:
            page = await self.list_page(prefix, delimiter, token, start_after=start_after)
            for o in page.objects:
                yield o
            if not page.next_token:
                return
            token = page.next_token
