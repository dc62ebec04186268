"""Writing objects: PutObject (a retried PUT that did land is not a conflict with itself),
CopyObject, RestoreObject, deletes and native symlinks.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Callable, Mapping, Sequence

import oss2

from ..errors import ConflictError
from .bodies import check_crc
from .reads import ObjectReads


class ObjectWrites(ObjectReads):
    """PUT, copy, restore, delete and symlink requests of one bucket (a PUT may HEAD: a read)."""

    async def put(self, key: str, data: bytes | Callable[[], bytes], headers: Mapping[str, str],
                  *, forbid_overwrite: bool = False) -> str:
        """PutObject; returns the new ETag. ``data`` may be a function giving the body (called
        in the worker thread, so that reading it from disk costs no thread hop of its own).

        PutObject takes no condition headers on real OSS (If-Match and the other three give
        400 NotImplemented, EC 0017-00000245, SPEC D.13): a caller that must not overwrite a
        newer version checks with a HEAD first (``EncryptedObjects.upload``); a new name is
        protected with ``x-oss-forbid-overwrite`` (409 FileAlreadyExists)."""
        h = dict(headers)
        if forbid_overwrite:
            h["x-oss-forbid-overwrite"] = "true"
        attempts: list[int] = []
        if callable(data):
            source: Callable[[], bytes] = data
            data = b""
        else:
            body = data
            source = lambda: body  # noqa: E731

        def run() -> str:
            nonlocal data
            data = source()
            result = self._dated(self.bucket.put_object(key, data, headers=h))
            check_crc("put", data, result)
            return result.etag
        try:
            etag = await self._call("put", key, run, attempts)
        except ConflictError:
            # A retried PUT whose first attempt did land (reply lost) must not report a
            # conflict with itself: same bytes => same MD5 ETag.
            if not (forbid_overwrite and len(attempts) > 1):
                raise
            info = await self.head(key)
            digest = hashlib.md5(data).hexdigest().upper()
            if info is None or info.etag.upper() != digest:
                raise
            etag = info.etag
        self.bytes_sent += len(data)
        return etag

    async def copy(self, src: str, dst: str, *, headers: Mapping[str, str] | None = None,
                   if_match: str | None = None) -> str:
        """CopyObject ``src`` to ``dst`` in this bucket; returns the new ETag.

        ``headers``: REPLACE the metadata with these (refused by OSS for a client-side-
        encrypted source, EC 0005-00000421, SPEC D.13: use a re-upload for those); None:
        COPY directive, every header kept. Refused by OSS for appendable sources and above
        the copy size limit (SPEC D.13), which ``EncryptedObjects.copy`` checks first.
        ``if_match``: the source must still have this ETag (else ConflictError)."""
        h: dict[str, str] = {}
        if headers is not None:
            h.update(headers)
            h["x-oss-metadata-directive"] = "REPLACE"
        if if_match:
            h["x-oss-copy-source-if-match"] = f'"{if_match}"'
        return await self._call(
            "copy", dst,
            lambda: self._dated(self.bucket.copy_object(self.name, src, dst, headers=h)).etag)

    async def restore(self, key: str, days: int = 1, tier: str | None = None) -> bool:
        """RestoreObject (``POST ?restore``) of an Archive / Cold Archive object: True when a
        restore was started (202), False when one is running already (409
        RestoreAlreadyInProgress) or the object is restored (200; its expiry is extended).
        ``tier`` (Expedited, Standard, Bulk) is sent for Cold Archive objects only, which
        require a JobParameters element; Archive objects take ``days`` alone."""
        def run() -> int:
            config = oss2.models.RestoreConfiguration(
                days=days, job_parameters=oss2.models.RestoreJobParameters(tier)
                if tier else None)
            return self.bucket.restore_object(key, input=config).status
        try:
            status = await self._call("restore", key, run)
        except ConflictError:
            return False
        return status == 202

    async def delete(self, key: str) -> None:
        await self._call("delete", key, lambda: self.bucket.delete_object(key))

    async def delete_many(self, keys: Sequence[str]) -> None:
        keys = list(keys)
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            await self._call("delete_many", batch[0],
                             functools.partial(self.bucket.batch_delete_objects, batch))

    async def put_symlink(self, key: str, target: str, headers: Mapping[str, str]) -> None:
        h = dict(headers)
        await self._call("put_symlink", key, lambda: self.bucket.put_symlink(target, key, headers=h))

    async def get_symlink(self, key: str) -> str:
        return await self._call("get_symlink", key,
                                lambda: self.bucket.get_symlink(key).target_key)
