"""The encrypted-object layer: what oss2's CryptoBucket is, but async, ranged and parallel.

Readers fetch ciphertext with ranged GETs aligned down to 16 bytes and decrypt only what was
asked for; the counter comes from the offset we *requested* (never from a response header).
Writers encrypt under a fresh data key and upload with a single PUT or a parallel multipart
upload whose layout every SDK accepts (SPEC A.4, A.10). Anything that blocks (unwrapping a
key, which may call KMS; AES over large buffers) runs in a worker thread.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping

import trio

from .aio import raise_first, read_in_order
from .envelope import format as fmt
from .envelope.ctr import crypt_at, in_thread
from .envelope.keys import ContentMaterial, KeyRing, MasterKey
from .errors import (FormatError, NotFoundError, OssEncError, RejectedError,
                     WrongKeyError)
from .esdk_objects import EsdkObjects, EsdkReader
from .multipart import (BLOCK, MultipartSender, check_unchanged, copy_in_parts,
                        is_own_upload, plan_part_size)
from .relay import RELAY_PIECE, RelaySource, relay_window
from .store import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)

__all__ = ["COPY_LIMIT", "EncryptedObjects", "ObjectReader", "check_length", "crypt_async",
           "is_own_upload", "keep_layout", "kept_headers", "plan_part_size"]

#: The largest source CopyObject takes: 1 GB in the older API pages and SDK guides, 5 GB in
#: the current ones (SPEC D.13); the conservative reading (10^9 bytes) is the default.
COPY_LIMIT = 1_000_000_000

# Headers of an object that a metadata change (CopyObject REPLACE, or a re-upload) must
# send again to keep the object as it was, besides its user metadata.
_KEPT_STANDARD = ("content-type", "cache-control", "content-disposition", "content-encoding",
                  "content-language", "expires", "x-oss-server-side-encryption",
                  "x-oss-server-side-encryption-key-id", "x-oss-server-side-data-encryption",
                  "x-oss-storage-class")


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """What a metadata change must re-send to keep an object as it was (names lower-case):
    every ``x-oss-meta-*`` (each CSE header included, SPEC A.10 item 8) and the standard
    headers above; the caller lays its changes over it. A name already in lower case is kept
    as it is (``store.info`` interns them): ``str.lower`` always makes a new string, and a
    mount keeps these for every object it knows (``fs.attrs.node_headers``)."""
    out = {}
    for name, value in headers.items():
        n = name if name.islower() else name.lower()
        if n.startswith("x-oss-meta-") or n in _KEPT_STANDARD:
            out[n] = value
    return out


async def crypt_async(key: bytes, counter0: int, offset: int, data: bytes) -> bytes:
    """crypt_at, in a worker thread when the buffer is large enough to stall the loop."""
    if not in_thread(len(data)):
        return crypt_at(key, counter0, offset, data)
    return await trio.to_thread.run_sync(crypt_at, key, counter0, offset, data)


def check_length(info: ObjectInfo) -> None:
    """FormatError when an encrypted object's stored body is not as long as its
    ``unencrypted-content-length`` header says (V2 or legacy name; SPEC A.7): CTR adds no
    bytes, so a difference means a torn or tampered object, whose prefix must not be served
    as the whole. Objects without the header (optional in every SDK) pass."""
    headers = fmt.parse_headers(info.headers)
    want = headers.unencrypted_content_length if headers is not None else None
    if want is not None and want != info.size:
        kind = "truncated" if info.size < want else "over-long"
        raise FormatError(f"{kind} object: the body is {info.size} bytes, its "
                          f"unencrypted-content-length header says {want}")


class ObjectReader:
    """Random access to one object version (pinned by ETag: a change surfaces as ConflictError)."""

    def __init__(self, store: ObjectStore, info: ObjectInfo,
                 material: ContentMaterial | None) -> None:
        self.store = store
        self.info = info
        self.key = info.key
        self.size = info.size
        self.material = material
        self.encrypted = material is not None

    async def read(self, offset: int, length: int) -> bytes:
        """Plaintext [offset, offset+length), clipped at EOF; one ranged GET."""
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        end = min(self.size, offset + length) - 1
        if offset > end:
            return b""
        start = offset - offset % BLOCK if self.encrypted else offset
        cipher = await self.read_cipher(start, end + 1 - start)
        plain = await self._decrypt_async(start, cipher)
        return plain[offset - start:]

    async def read_cipher(self, offset: int, length: int) -> bytes:
        """Raw stored bytes [offset, offset+length) clipped at EOF, for the block cache (the
        contract of every ``read_cipher``: offset and length, as ``Staging.read_cipher``)."""
        end = min(offset + length, self.size) - 1      # HTTP ranges are inclusive
        if offset > end:
            return b""
        return await self.store.get_range(self.key, offset, end, if_match=self.info.etag or None)

    async def read_cipher_blocks(self, offset: int, length: int, block: int) -> list[bytes]:
        """``read_cipher`` in one GET, as ``block``-byte pieces (the last may be shorter), each
        read as it arrives: the block cache's blocks without a copy (``readahead``)."""
        end = min(offset + length, self.size) - 1
        if offset > end:
            return []
        return await self.store.get_range_pieces(self.key, offset, end, block,
                                                 if_match=self.info.etag or None)

    def decrypt(self, offset: int, cipher: bytes | memoryview) -> bytes:
        """Plaintext of ``cipher`` that starts at object offset ``offset`` (any alignment)."""
        if self.material is None:
            return cipher if isinstance(cipher, bytes) else bytes(cipher)
        return crypt_at(self.material.key, self.material.counter0, offset, cipher)

    async def _decrypt_async(self, offset: int, cipher: bytes) -> bytes:
        if self.material is None:
            return cipher
        return await crypt_async(self.material.key, self.material.counter0, offset, cipher)

    async def chunks(self, chunk_size: int = 8 << 20, parallelism: int = 4,
                     start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        """Plaintext [start, stop or EOF) in order, ``parallelism`` ranged GETs at a time
        (``aio.read_in_order``)."""
        chunk_size = max(BLOCK, chunk_size - chunk_size % BLOCK)
        limit = self.size if stop is None else min(stop, self.size)
        async for piece in read_in_order(self.read, chunk_size, parallelism, start, limit):
            yield piece


class EncryptedObjects:
    """Reads and writes objects of one bucket through a KeyRing."""

    def __init__(self, store: ObjectStore, keyring: KeyRing | None, *, part_size: int = 8 << 20,
                 multipart_threshold: int = 16 << 20, upload_parallelism: int = 4,
                 copy_limit: int = COPY_LIMIT, esdk: EsdkObjects | None = None) -> None:
        self.store = store
        self.keyring = keyring
        self.esdk = esdk
        self.copy_limit = copy_limit
        self.part_size = part_size
        self.multipart_threshold = multipart_threshold
        self.upload_parallelism = max(1, upload_parallelism)

    # ---------------------------------------------------------------- reading

    async def material_for(self, info: ObjectInfo) -> ContentMaterial | None:
        """The object's data key, None for a plain object (which then reads as stored)."""
        headers = fmt.parse_headers(info.headers)
        if headers is None:
            return None
        if self.keyring is None:
            raise WrongKeyError(f"oss://{self.store.name}/{info.key} is encrypted "
                                f"({headers.wrap_alg}) and no master key is configured")
        return await trio.to_thread.run_sync(
            functools.partial(self.keyring.open, headers,
                              object_name=f"oss://{self.store.name}/{info.key}"))

    async def open_reader(self, key: str,
                          info: ObjectInfo | None = None) -> ObjectReader | EsdkReader:
        """A reader of the object: OSS-SDK format, Encryption SDK format or plain."""
        if info is None or not info.headers:
            info = await self.store.head(key)
            if info is None:
                raise NotFoundError(f"oss://{self.store.name}/{key}: no such object")
        if self.esdk is not None:
            layout = await self.esdk.layout(info)
            if layout is not None:
                return await self.esdk.open(info, layout)
        try:
            check_length(info)
            material = await self.material_for(info)
        except FormatError as exc:
            raise FormatError(f"oss://{self.store.name}/{key}: {exc}") from exc
        return ObjectReader(self.store, info, material)

    async def plain_size(self, info: ObjectInfo) -> int:
        """The size a reader of ``info`` shows: the stored size, but the ciphertext length of
        a Python-layout ESDK object (one small ranged GET the first time; docs/esdk.md)."""
        if self.esdk is None:
            return info.size
        layout = await self.esdk.layout(info)
        return layout.ct_len if layout is not None else info.size

    # ---------------------------------------------------------------- writing

    def multipart_part_size(self, size: int) -> int | None:
        """The part size ``upload`` will use for ``size`` bytes, or None for a single PUT."""
        if size < self.multipart_threshold or size <= self.part_size:
            return None
        return plan_part_size(size, self.part_size)

    async def upload(self, key: str, size: int, read_cipher: Callable[[int, int], Awaitable[bytes]],
                     crypto_headers: Mapping[str, str],
                     extra_headers: Mapping[str, str] | None = None, *,
                     forbid_overwrite: bool = False, if_match: str | None = None,
                     progress: Callable[[int], None] | None = None,
                     read_cipher_sync: Callable[[int, int], bytes] | None = None,
                     record_length: bool = True) -> str:
        """Upload ``size`` already-encrypted bytes; returns the new ETag.

        ``read_cipher(offset, n)`` is called in increasing offset order, once per byte, so
        it may be backed by a stream. data-size/part-size and unencrypted-content-length
        headers are set here (they describe the upload layout, which only this method
        decides; ``record_length=False`` keeps the caller's length header as it is, for a relay).
        ``read_cipher_sync`` (blocking, same bytes, any order): for a single PUT the body is
        then read in the request's worker thread, and for a multipart upload each part while
        it is sent (``multipart.MultipartSender``).
        """
        base = {k.lower(): v for k, v in (extra_headers or {}).items()}
        crypto = {k.lower(): v for k, v in crypto_headers.items()
                  if k.lower() not in (fmt.H_DATA_SIZE, fmt.H_PART_SIZE)}
        if record_length and fmt.H_KEY in crypto:
            # the plaintext length, as the Java SDK always records it (SPEC A.7): a reader
            # then knows a torn body from a whole one (``check_length``)
            crypto[fmt.H_UNENC_LENGTH] = str(size)
        part_size = self.multipart_part_size(size)
        if part_size is None:
            def checked(data: bytes) -> bytes:
                if len(data) != size:
                    raise OssEncError(f"oss://{self.store.name}/{key}: source gave "
                                      f"{len(data)} bytes, expected {size}")
                return data
            source: bytes | Callable[[], bytes]
            if read_cipher_sync is not None and size:
                reader = read_cipher_sync
                source = lambda: checked(reader(0, size))  # noqa: E731
            else:
                source = checked(await read_cipher(0, size) if size else b"")
            if if_match:
                # PutObject takes no If-Match on real OSS (SPEC D.13): a HEAD right before
                # the PUT is the check; README "Conflicts" says how wide its window is.
                await check_unchanged(self.store, key, if_match)
            etag = await self.store.put(key, source, {**base, **crypto},
                                        forbid_overwrite=forbid_overwrite)
            if progress:
                progress(size)
            return etag
        if fmt.H_KEY in crypto:
            crypto[fmt.H_DATA_SIZE] = str(size)
            crypto[fmt.H_PART_SIZE] = str(part_size)
        sender = MultipartSender(self.store, key, size, part_size, self.upload_parallelism)
        return await sender.send({**base, **crypto}, crypto, read_cipher, read_cipher_sync,
                                 forbid_overwrite=forbid_overwrite, if_match=if_match,
                                 progress=progress)

    async def write(self, key: str, chunks: AsyncIterable[bytes] | bytes, size: int,
                    extra_headers: Mapping[str, str] | None = None, *,
                    forbid_overwrite: bool = False, if_match: str | None = None,
                    crypto_extra: Mapping[str, str] | None = None,
                    progress: Callable[[int], None] | None = None) -> str:
        """Encrypt a plaintext stream of exactly ``size`` bytes under a fresh key and upload it.

        ``crypto_extra``: more CSE headers to send (e.g. unencrypted-content-md5); ``if_match``
        guards ``key`` as in ``upload``."""
        if self.keyring is None:
            raise WrongKeyError("no master key configured for writing")
        part_size = self.multipart_part_size(size)
        material, crypto = await trio.to_thread.run_sync(functools.partial(
            self.keyring.new_object,
            data_size=size if part_size else None, part_size=part_size))
        source = _CipherSource(chunks, size, material)
        crypto = {**crypto, **{k.lower(): v for k, v in (crypto_extra or {}).items()}}
        return await self.upload(key, size, source.read, crypto, extra_headers,
                                 forbid_overwrite=forbid_overwrite, if_match=if_match,
                                 progress=progress)

    # --------------------------------------------------------------- relay

    async def relay(self, src: ObjectInfo, dst: str, headers: Mapping[str, str], *,
                    forbid_overwrite: bool = False, if_match: str | None = None,
                    progress: Callable[[int], None] | None = None) -> str:
        """Upload the stored bytes of the version ``src`` names as ``dst`` with ``headers``
        (the complete new metadata: user metadata, CSE headers, standard headers); returns
        the new ETag. Nothing is decrypted: an encrypted object keeps its data key, IV and
        ciphertext, which is what a metadata change or a move of it must do on real OSS,
        where CopyObject may neither change a CSE object's metadata (EC 0005-00000421) nor
        copy appendable objects or objects above the copy limit, and UploadPartCopy refuses
        CSE sources (EC 0042-00000309; SPEC D.13, A.10 item 8).

        Every GET is pinned to ``src.etag`` (If-Match), so a source changed meanwhile is a
        ConflictError, never a mix of versions. The object is fetched as parallel ranged GETs
        of ``relay.RELAY_PIECE`` bytes, whatever the part size, relayed into a multipart
        upload whose parts go several at once (``multipart.parts_at_once``); memory stays at
        about 2 x parallelism x max(part size, 8 MiB) (parts being sent, as many fetched
        ahead: ``relay.relay_window``).
        ``if_match``/``forbid_overwrite`` guard ``dst`` as in ``upload``.
        """
        crypto = {k.lower(): v for k, v in headers.items()}
        plain = {k.lower() for k in fmt.strip_crypto_headers(crypto)}
        crypto = {k: v for k, v in crypto.items() if k not in plain}
        base = {k.lower(): v for k, v in headers.items() if k.lower() in plain}
        unit = self.multipart_part_size(src.size) or max(src.size, 1)
        etag = ""
        try:
            async with trio.open_nursery() as nursery:
                source = RelaySource(self.store, src, RELAY_PIECE,
                                     relay_window(unit, self.upload_parallelism), nursery)
                try:
                    etag = await self.upload(dst, src.size, source.read, crypto, base,
                                             forbid_overwrite=forbid_overwrite,
                                             if_match=if_match, progress=progress,
                                             record_length=False)
                finally:
                    nursery.cancel_scope.cancel()       # fetches still ahead are not needed
        except BaseExceptionGroup as eg:
            raise_first(eg)                             # one cause, as ``upload`` raises it
        return etag

    # --------------------------------------------------------------- copy

    async def copy(self, src: str, dst: str, info: ObjectInfo | None = None) -> str:
        """Copy the object ``src`` to ``dst`` with every header kept (a rename's first half);
        returns the new ETag. CopyObject with the COPY directive where OSS allows it (SPEC
        D.13: allowed for CSE objects, PY test_copy_crypto_object); appendable objects and
        objects above ``copy_limit`` (``info`` tells, when the caller knows them), and any
        copy OSS refuses, are copied another way (``_relay_copy``): a plain object by
        UploadPartCopy, server-side; a CSE or appendable one relayed through the client
        (``relay``: ciphertext only, nothing decrypted)."""
        if info is not None and not self.copies_in_one_request(info):
            return await self._relay_copy(src, dst)
        try:
            return await self.store.copy(src, dst)
        except RejectedError as exc:
            log.info("%s; copying through the client instead", exc)
            return await self._relay_copy(src, dst)

    def copies_in_one_request(self, info: ObjectInfo) -> bool:
        """Whether ``copy`` of ``info`` is one CopyObject (OSS copies it server-side: a
        round trip, whatever its size) rather than parts or a relay through the client."""
        return info.object_type != "Appendable" and info.size <= self.copy_limit

    async def _relay_copy(self, src: str, dst: str) -> str:
        """A copy CopyObject cannot make: a plain object by UploadPartCopy (nothing passes
        through the client), a CSE or appendable one relayed (OSS refuses UploadPartCopy
        from those: EC 0042-00000309, doc-detail/31994)."""
        info = await self.store.head(src)
        if info is None:
            raise NotFoundError(f"oss://{self.store.name}/{src}: no such object")
        if info.object_type in ("Normal", "Multipart") and fmt.parse_headers(info.headers) is None:
            return await copy_in_parts(self.store, info, dst, kept_headers(info.headers))
        return await self.relay(info, dst, kept_headers(info.headers))

    # --------------------------------------------------------------- rewrap

    async def rewrap(self, key: str, master: MasterKey) -> None:
        """Wrap the object's data key under ``master``; the data is not touched.

        A re-upload of the unchanged ciphertext with the new key headers (``relay``), since
        OSS refuses metadata changes of CSE objects by CopyObject (SPEC D.13); the HEAD check
        before the PUT/Complete keeps a concurrent writer's version from being overwritten.
        """
        info = await self.store.head(key)
        if info is None:
            raise NotFoundError(f"oss://{self.store.name}/{key}: no such object")
        old = fmt.parse_headers(info.headers)
        if old is None:
            raise FormatError(f"oss://{self.store.name}/{key} is not encrypted; nothing to re-wrap")
        material = await self.material_for(info)
        assert material is not None
        new = await trio.to_thread.run_sync(_wrap_existing, master, material, old)
        await self.replace_crypto(info, new)

    async def replace_crypto(self, info: ObjectInfo, new: fmt.CryptoHeaders, *,
                             progress: Callable[[int], None] | None = None) -> str:
        """Re-upload the version ``info`` names (it must carry the HEAD's headers) with its
        ciphertext unchanged and ``new`` as its CSE header set; every other header kept.
        ConflictError when the object changed since ``info`` was read (``relay``'s HEAD
        check before the PUT/Complete). Returns the new ETag."""
        kept = kept_headers(fmt.strip_crypto_headers(info.headers))
        return await self.relay(info, info.key, {**kept, **fmt.emit_headers(new)},
                                if_match=info.etag, progress=progress)


def _wrap_existing(master: MasterKey, material: ContentMaterial,
                   old: fmt.CryptoHeaders) -> fmt.CryptoHeaders:
    """A V2 header set for an existing data key under ``master``, layout fields kept."""
    return keep_layout(master.wrap(material), old)


def keep_layout(new: fmt.CryptoHeaders, old: fmt.CryptoHeaders) -> fmt.CryptoHeaders:
    """``new`` (a fresh wrapping) with ``old``'s layout and plaintext fields."""
    return replace(
        new,
        data_size=old.data_size,
        part_size=old.part_size,
        unencrypted_content_length=old.unencrypted_content_length,
        unencrypted_content_md5=old.unencrypted_content_md5,
    )


class _CipherSource:
    """Turns a plaintext chunk stream into sequential ``read_cipher(offset, n)`` answers."""

    def __init__(self, chunks: AsyncIterable[bytes] | bytes, size: int,
                 material: ContentMaterial) -> None:
        if isinstance(chunks, (bytes, bytearray, memoryview)):
            chunks = _one(bytes(chunks))
        self._iter = chunks.__aiter__()
        self._size = size
        self._pos = 0
        self._pending = bytearray()
        self._material = material

    async def read(self, offset: int, n: int) -> bytes:
        if offset != self._pos:
            raise OssEncError(f"internal: non-sequential read at {offset}, expected {self._pos}")
        while len(self._pending) < n:
            try:
                piece = await self._iter.__anext__()
            except StopAsyncIteration:
                raise OssEncError(f"source ended after {self._pos + len(self._pending)} "
                                  f"bytes, expected {self._size}") from None
            self._pending += piece
        plain = bytes(self._pending[:n])
        del self._pending[:n]
        self._pos += n
        if self._pos == self._size and (self._pending or await _has_more(self._iter)):
            raise OssEncError(f"source is longer than the {self._size} bytes announced")
        return await crypt_async(self._material.key, self._material.counter0, offset, plain)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _has_more(it: AsyncIterator[bytes]) -> bool:
    try:
        while True:
            piece = await it.__anext__()
            if piece:
                return True
    except StopAsyncIteration:
        return False
