"""One multipart upload of bytes already in their stored form: parts, Complete, or Abort.

Why it exists: every large upload (a new file's ciphertext, a relay of an object's stored
bytes) sends its parts the same way; ``objects.EncryptedObjects.upload`` decides the layout
and the headers, this module only sends. Shapes and limits: parts are numbered from 1, every
part but the last is ``part_size`` bytes, at most ``MAX_PARTS`` parts of at least
``MIN_PART_SIZE`` bytes (oss2 CryptoBucket's minimum, SPEC A.4; OSS's part limits,
https://www.alibabacloud.com/help/en/oss/developer-reference/uploadpart).
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable, Mapping

import trio

from .aio import raise_first
from .envelope import format as fmt
from .errors import ConflictError, NotFoundError, OssEncError
from .store import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)

MIN_PART_SIZE = 100 * 1024          # oss2 CryptoBucket minimum (SPEC A.4)
MAX_PARTS = 10000
BLOCK = 16
#: parts sent at once when read from a file as they go (each holds ``PartBody.PIECE`` in
#: memory). Over slow connections each part takes a connection's bandwidth, so the upload
#: goes in waves of this many: 256 MiB over the cloud profile (32 parts of 8 MiB, 50 Mbit/s
#: per connection), ``dd`` from /dev/urandom until unmounted, took 5.8-6.1 s with 16 (and
#: 1 MiB pieces: peak RSS 89-90 MiB), 4.3-4.4 s with 32 (75 MiB); ``bench_mounts.py``'s
#: write, medians of 3: 3.80 -> 3.57 s (issue 17; ossfs 2.0 sends 64). They take the data
#: connections (``--connections``, 32) in turn with reads: a GET asked for meanwhile waits
#: for the next part to end, not for the whole upload.
STREAMED_PARTS = 32
#: Buffered parts in flight hold at most ``upload_parallelism`` x this many bytes: small parts
#: go more at once (up to ``STREAMED_PARTS``), so a 100 KiB part size is not 80 times slower
#: than the default 8 MiB one (each part costs a round trip).
BUFFER_PART = 8 << 20

ReadCipher = Callable[[int, int], Awaitable[bytes]]
ReadCipherSync = Callable[[int, int], bytes]


def plan_part_size(size: int, part_size: int) -> int:
    """The part size to use for ``size`` bytes: a multiple of 16, >= 100 KiB, <= 10000 parts.

    Starts from the configured size (rounded up to 16) and doubles, like oss2, until the
    object fits in 10000 parts.
    """
    p = max(MIN_PART_SIZE, part_size)
    p = (p + BLOCK - 1) // BLOCK * BLOCK
    while (size + p - 1) // p > MAX_PARTS:
        p *= 2
    return p


def parts_at_once(part_size: int, parallelism: int) -> int:
    """Buffered parts sent at once: ``parallelism``, more for parts below ``BUFFER_PART``
    (at most ``STREAMED_PARTS``), so the bytes in flight stay under parallelism x 8 MiB."""
    return max(parallelism, min(STREAMED_PARTS, parallelism * BUFFER_PART // max(1, part_size)))


def is_own_upload(info: ObjectInfo | None, wrapped_key: str | None, size: int,
                  headers: Mapping[str, str] | None = None) -> bool:
    """Did our own earlier upload land (its reply lost, a crash, a retried request)? The one
    criterion for every caller: the object carries the wrapped data key of that upload and
    has its size (and, when given, these headers: a re-upload keeps the object's own key,
    so only its new headers tell it apart). A wrapped key is made for one upload only
    (``KeyRing.new_object``), so another client's object never carries it."""
    return (info is not None and bool(wrapped_key) and info.size == size
            and info.headers.get(fmt.H_KEY) == wrapped_key
            and all(info.headers.get(k) == v for k, v in (headers or {}).items()))


async def check_unchanged(store: ObjectStore, key: str, etag: str) -> None:
    """ConflictError unless ``key`` is still the version ``etag``: PutObject takes no
    If-Match on real OSS and CompleteMultipartUpload none either (SPEC D.13), so a HEAD
    right before them is the check (README "Conflicts" says how wide its window is)."""
    current = await store.head(key)
    if current is None or current.etag != etag:
        raise ConflictError(f"oss://{store.name}/{key} changed since it was read")


async def abort_quietly(store: ObjectStore, key: str, upload_id: str) -> None:
    """AbortMultipartUpload after a failure (shielded from cancellation); a failure of the
    abort itself is logged, never raised over the first one."""
    with trio.CancelScope(shield=True):
        try:
            await store.abort_multipart(key, upload_id)
        except OssEncError as exc:
            log.warning("could not abort upload %s of %s: %s", upload_id, key, exc)


class MultipartSender:
    """Sends ``size`` bytes as one multipart upload of ``key``.

    ``read_cipher(offset, n)`` is awaited in increasing offset order, once per part, and
    its part is buffered while it is sent (``parts_at_once`` of them). ``read_cipher_sync``
    (blocking, any order; a file on disk): each part is read while it is sent
    (``store.PartBody``: 256 KiB in memory per part), so ``STREAMED_PARTS`` go at once."""

    def __init__(self, store: ObjectStore, key: str, size: int, part_size: int,
                 parallelism: int) -> None:
        self.store, self.key, self.size, self.part_size = store, key, size, part_size
        self.parallelism = parallelism
        self.etags: dict[int, str] = {}

    async def send(self, headers: Mapping[str, str], crypto: Mapping[str, str],
                   read_cipher: ReadCipher, read_cipher_sync: ReadCipherSync | None = None, *,
                   forbid_overwrite: bool = False, if_match: str | None = None,
                   progress: Callable[[int], None] | None = None) -> str:
        """Initiate (with ``headers``), the parts (each with the CSE ``crypto`` headers,
        which UploadPart repeats: SPEC D.13), the ``if_match`` check, Complete; the new ETag.
        Any failure aborts the upload and is raised (one cause, ``aio.raise_first``)."""
        upload_id = await self.store.init_multipart(self.key, headers,
                                                    forbid_overwrite=forbid_overwrite)
        try:
            await self._parts(upload_id, crypto, read_cipher, read_cipher_sync, progress)
            if if_match:
                await check_unchanged(self.store, self.key, if_match)   # as late as possible
            return await self._complete(upload_id, crypto, forbid_overwrite)
        except BaseException:
            await abort_quietly(self.store, self.key, upload_id)
            raise

    async def _parts(self, upload_id: str, crypto: Mapping[str, str], read_cipher: ReadCipher,
                     read_cipher_sync: ReadCipherSync | None,
                     progress: Callable[[int], None] | None) -> None:
        streamed = read_cipher_sync is not None
        slots = trio.Semaphore(max(self.parallelism, STREAMED_PARTS) if streamed
                               else parts_at_once(self.part_size, self.parallelism))

        async def one(number: int, data: bytes | tuple[ReadCipherSync, int, int]) -> None:
            try:
                self.etags[number] = await self.store.upload_part(self.key, upload_id, number,
                                                                  data, crypto)
            finally:
                slots.release()
            if progress:
                progress(data[2] if isinstance(data, tuple) else len(data))

        try:
            async with trio.open_nursery() as nursery:
                for number, offset in enumerate(range(0, self.size, self.part_size), 1):
                    n = min(self.part_size, self.size - offset)
                    await slots.acquire()   # bounds buffered parts
                    if read_cipher_sync is not None:
                        nursery.start_soon(one, number, (read_cipher_sync, offset, n))
                        continue
                    data = await read_cipher(offset, n)
                    if len(data) != n:
                        slots.release()
                        raise OssEncError(f"oss://{self.store.name}/{self.key}: source gave "
                                          f"{len(data)} bytes at {offset}, expected {n}")
                    nursery.start_soon(one, number, data)
        except BaseExceptionGroup as eg:
            raise_first(eg)

    async def _complete(self, upload_id: str, crypto: Mapping[str, str],
                        forbid_overwrite: bool) -> str:
        try:
            return await self.store.complete_multipart(
                self.key, upload_id, sorted(self.etags.items()), forbid_overwrite=forbid_overwrite)
        except (NotFoundError, ConflictError):
            # A retried Complete whose first attempt landed (reply lost) sees NoSuchUpload
            # or, with forbid-overwrite, its own object. The wrapped data key is unique
            # to this upload, so finding it on the object proves the upload completed.
            landed = await self.store.head(self.key)
            if landed is None or not is_own_upload(landed, crypto.get(fmt.H_KEY), self.size):
                raise
            return landed.etag


#: parts of a server-side copy (UploadPartCopy): no bytes pass through the client, so parts
#: are large; OSS takes 100 KiB to 5 GiB per part (doc-detail/31994)
PART_COPY_SIZE = 64 << 20


async def copy_in_parts(store: ObjectStore, src: ObjectInfo, dst: str,
                        headers: Mapping[str, str], parallelism: int = STREAMED_PARTS) -> str:
    """Copy the plain object version ``src`` (it must carry no CSE headers and not be
    appendable: OSS refuses UploadPartCopy from those, EC 0042-00000309 and doc-detail/31994)
    to ``dst`` with ``headers`` by a multipart upload of UploadPartCopy requests: the way OSS
    documents above the CopyObject size limit (doc-detail/31979: "call UploadPartCopy to copy
    an object larger than 1 GB"). Each part is pinned to ``src.etag``
    (``x-oss-copy-source-if-match``): a source changed meanwhile is a ConflictError. Returns
    the new ETag; a failure aborts the upload."""
    part_size = plan_part_size(src.size, PART_COPY_SIZE)
    upload_id = await store.init_multipart(dst, headers)
    etags: dict[int, str] = {}
    limiter = trio.CapacityLimiter(max(1, parallelism))

    async def one(number: int, start: int, end: int) -> None:
        async with limiter:
            etags[number] = await store.upload_part_copy(src.key, dst, upload_id, number,
                                                         start, end, if_match=src.etag or None)

    try:
        try:
            async with trio.open_nursery() as nursery:
                for number, offset in enumerate(range(0, src.size, part_size), 1):
                    nursery.start_soon(one, number, offset,
                                       min(src.size, offset + part_size) - 1)
        except BaseExceptionGroup as eg:
            raise_first(eg)
        return await store.complete_multipart(dst, upload_id, sorted(etags.items()))
    except BaseException:
        await abort_quietly(store, dst, upload_id)
        raise
