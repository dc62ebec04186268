"""Multipart uploads: initiate, upload a part (from memory, or read from its source while it is
sent: ``bodies.PartBody``), complete and abort.
"""
from __future__ import annotations

from typing import Callable, Mapping

import oss2
import oss2.exceptions

from ..errors import NotFoundError
from .bodies import PartBody, check_crc
from .calls import StoreBase
from .failures import LocalSourceError, Transient


class Multipart(StoreBase):
    """The multipart-upload requests of one bucket."""

    async def init_multipart(self, key: str, headers: Mapping[str, str], *,
                             forbid_overwrite: bool = False) -> str:
        h = dict(headers)
        if forbid_overwrite:
            h["x-oss-forbid-overwrite"] = "true"
        return await self._call(
            "init_multipart", key,
            lambda: self.bucket.init_multipart_upload(key, headers=h).upload_id)

    async def upload_part(self, key: str, upload_id: str, part_number: int,
                          data: bytes | tuple[Callable[[int, int], bytes], int, int],
                          headers: Mapping[str, str]) -> str:
        """UploadPart. ``data`` is the body, or ``(read, offset, size)``: the body is then
        read with the blocking ``read(offset, n)`` while it is sent, a piece at a time
        (``PartBody``), so a part in flight holds ``PartBody.PIECE`` bytes, not the part."""
        h = dict(headers)

        def run() -> str:
            if isinstance(data, tuple):
                body = PartBody(*data)
                try:
                    result = self.bucket.upload_part(key, upload_id, part_number, body, headers=h)
                except oss2.exceptions.RequestError:
                    if body.local_error is not None:
                        raise LocalSourceError(body.local_error) from None
                    raise
                if body.left:
                    raise Transient(f"part {part_number}: {body.left} bytes not sent")
                server = getattr(result, "crc", None)
                if server is not None and server != body.crc:
                    raise Transient("upload part: CRC-64 of the sent body does not match "
                                     "x-oss-hash-crc64ecma")
            else:
                result = self.bucket.upload_part(key, upload_id, part_number, data, headers=h)
                check_crc("upload part", data, result)
            return result.etag
        etag = await self._call("upload_part", key, run)
        self.bytes_sent += data[2] if isinstance(data, tuple) else len(data)
        return etag

    async def upload_part_copy(self, src: str, key: str, upload_id: str, part_number: int,
                               start: int, end: int, *, if_match: str | None = None) -> str:
        """UploadPartCopy of bytes [start, end] of ``src`` (this bucket) as part
        ``part_number`` of ``key``; returns the part's ETag. ``if_match``: the source must
        still have this ETag (``x-oss-copy-source-if-match``, else ConflictError). OSS
        refuses it for client-side-encrypted sources (EC 0042-00000309) and appendable ones
        (https://www.alibabacloud.com/help/en/oss/developer-reference/uploadpartcopy)."""
        h = {"x-oss-copy-source-if-match": f'"{if_match}"'} if if_match else {}
        return await self._call(
            "upload_part_copy", key,
            lambda: self.bucket.upload_part_copy(self.name, src, (start, end), key, upload_id,
                                                 part_number, headers=h).etag)

    async def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]], *,
                                 forbid_overwrite: bool = False) -> str:
        h = {"x-oss-forbid-overwrite": "true"} if forbid_overwrite else {}
        infos = [oss2.models.PartInfo(n, etag) for n, etag in sorted(parts)]
        return await self._call(
            "complete_multipart", key,
            lambda: self._dated(
                self.bucket.complete_multipart_upload(key, upload_id, infos, headers=h)).etag)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await self._call("abort_multipart", key,
                             lambda: self.bucket.abort_multipart_upload(key, upload_id))
        except NotFoundError:
            pass  # already gone: the goal is reached
