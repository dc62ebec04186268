"""Reading objects: HEAD, GetObjectMeta, ranged GETs that return exactly the bytes asked for
(or an error, never silently different bytes), and one GET that also answers a HEAD.
"""
from __future__ import annotations

import re

import oss2.exceptions

from ..errors import ConflictError, NotFoundError, StoreError
from .bodies import read_body, read_body_pieces
from .calls import StoreBase
from .failures import Transient
from .info import ObjectInfo, info_from_headers

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class ObjectReads(StoreBase):
    """HEAD and GET requests of one bucket."""

    async def head(self, key: str) -> ObjectInfo | None:
        """None when absent, so that callers can probe without try/except."""
        def run() -> ObjectInfo:
            try:
                r = self.bucket.head_object(key)
            except oss2.exceptions.NoSuchBucket:
                raise NotFoundError(f"oss://{self.name}: no such bucket") from None
            return info_from_headers(key, r.headers)
        try:
            return await self._call("head", key, run)
        except NotFoundError:
            return None

    async def get_object_meta(self, key: str) -> ObjectInfo | None:
        """GetObjectMeta (``HEAD ?objectMeta``): size, ETag, Last-Modified and type of the
        object itself, a native symlink included (which a HEAD answers for its target, SPEC
        D.6); no user metadata. None when absent."""
        def run() -> ObjectInfo:
            return info_from_headers(key, self.bucket.get_object_meta(key).headers)
        try:
            return await self._call("head", key, run)
        except NotFoundError:
            return None

    async def get_range(self, key: str, start: int, end: int, *,
                        if_match: str | None = None) -> bytes:
        """Bytes [start, end] exactly, or an error: never silently different bytes.

        The caller knows the size and never asks past EOF (SPEC pitfall 4); we still insist on
        a 206 whose Content-Range is the one we asked for, or a 200 carrying exactly the
        whole object when the whole object was asked for.
        """
        return b"".join(await self.get_range_pieces(key, start, end, end - start + 1,
                                                    if_match=if_match))

    async def get_range_pieces(self, key: str, start: int, end: int, piece: int, *,
                               if_match: str | None = None) -> list[bytes]:
        """``get_range`` as pieces of ``piece`` bytes (the last may be shorter), each read from
        the socket as it arrives (``bodies.read_body_pieces``): the block cache's blocks."""
        if start < 0 or end < start:
            raise ValueError(f"bad range {start}-{end}")
        want = end - start + 1
        headers = {"x-oss-range-behavior": "standard"}
        if if_match:
            headers["If-Match"] = f'"{if_match}"'

        def run() -> list[bytes]:
            r = self.bucket.get_object(key, byte_range=(start, end), headers=headers)
            raw = r.resp.response
            try:
                status = r.status
                cr = raw.headers.get("Content-Range")
                total = -1
                if status == 206:
                    m = _CONTENT_RANGE.match(cr or "")
                    if not m or int(m.group(1)) != start or int(m.group(2)) != end:
                        if m and int(m.group(1)) == start and m.group(3) != "*" \
                                and int(m.group(3)) <= end:
                            raise ConflictError(
                                f"get oss://{self.name}/{key}: object is shorter than expected "
                                f"({m.group(3)} bytes, wanted up to {end})")
                        raise Transient(f"unexpected Content-Range {cr!r} for {start}-{end}")
                    total = int(m.group(3)) if m.group(3) != "*" else -1
                elif status == 200:
                    length = int(raw.headers.get("Content-Length", "-1"))
                    if not (start == 0 and length == want):
                        raise StoreError(
                            f"get oss://{self.name}/{key}: server ignored Range {start}-{end} "
                            f"(200, {length} bytes)")
                    total = length
                else:
                    raise StoreError(f"get oss://{self.name}/{key}: unexpected status {status}")
            except BaseException:
                raw.close()
                raise
            return read_body_pieces(raw, want, piece, whole=start == 0 and total == want)

        pieces = await self._call("get", key, run)
        self.bytes_fetched += want
        return pieces

    async def get_head(self, key: str, length: int, *,
                       if_match: str | None = None) -> tuple[ObjectInfo, bytes] | None:
        """One GET of the first ``length`` bytes (or the whole object if it is shorter) that
        also answers what a HEAD would: (info with every header, bytes). None when absent.

        ``Range: bytes=0-(length-1)`` with ``x-oss-range-behavior: standard``: OSS clips an
        end past EOF and answers 206 with ``Content-Range: bytes 0-(n-1)/n`` (the object size);
        an empty object answers 416 InvalidRange, which this maps to ``RejectedError`` (the
        caller falls back to a HEAD). https://help.aliyun.com/zh/oss/developer-reference/getobject
        ("x-oss-range-behavior: standard"). The body's CRC-64 is checked when it is the whole
        object. A small file's first read is then one request instead of a HEAD and a GET.
        """
        headers = {"x-oss-range-behavior": "standard"}
        if if_match:
            headers["If-Match"] = f'"{if_match}"'

        def run() -> tuple[ObjectInfo, bytes]:
            r = self.bucket.get_object(key, byte_range=(0, length - 1), headers=headers)
            raw = r.resp.response
            try:
                info = info_from_headers(key, raw.headers)
                m = _CONTENT_RANGE.match(raw.headers.get("Content-Range") or "")
                if r.status == 206 and m and m.group(1) == "0" and m.group(3) != "*":
                    info.size = int(m.group(3))
                    want = int(m.group(2)) + 1
                elif r.status == 200:
                    want = info.size
                else:
                    raise Transient(f"unexpected answer {r.status} "
                                     f"{raw.headers.get('Content-Range')!r} to 0-{length - 1}")
                info.headers["content-length"] = str(info.size)   # what a HEAD says
            except BaseException:
                raw.close()
                raise
            return info, read_body(raw, want, whole=want == info.size)

        try:
            info, data = await self._call("get_head", key, run)
        except NotFoundError:
            return None
        self.bytes_fetched += len(data)
        return info, data
