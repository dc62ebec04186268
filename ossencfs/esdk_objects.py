"""Encryption SDK (ESDK) objects as readers: detection, ranged reads, GCM verification.

``EsdkObjects.layout(info)`` tells an ESDK object from the others: the Java layout by its three
metadata headers, the Python layout by the DER structure at the start of the body (one ranged
GET of ``esdk.PROBE_SIZE`` bytes, remembered per object version). ``EsdkReader`` gives random
access to the plaintext with ranged GETs of the ciphertext (docs/esdk.md):

* GCM and CTR decrypt from any offset by counter arithmetic (``esdk.crypt_range``);
* a read that covers the whole object -- every byte from offset 0 to the end, in any number of
  reads -- checks the GCM tag before the read that reaches the end returns (``note_read``);
  a mismatch is IntegrityError (EIO) for that read and every later one that reaches the end.
  Partial reads (not from 0 to the end) are *not* verified, as the format allows;
* ``chunks`` (``ossencfs cat``/``cp``) always verifies, whatever range it returns;
* CBC has no counter: ``read`` fetches the block before the range too (``direct``: the mount
  reads it through ``read``, not through its block cache). The size of a CBC-PKCS5 object is
  known only once its last block is decrypted (at open).
"""
from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from typing import AsyncIterator, Awaitable, Callable, Mapping

import trio

from .aio import read_in_order
from .envelope import der, esdk
from .envelope import format as fmt
from .errors import (ArchivedError, FormatError, IntegrityError, KeyUnavailableError,
                     RejectedError, WrongKeyError)
from .kms_regions import EsdkKeyring
from .store import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)

_VERIFY_PIECE = 4 << 20          # gap filling for verification reads this much per GET
_MAX_HEADER = 1 << 20           # a Python-layout header longer than this is refused
_PROBES = 8192                   # object versions whose probe answer is remembered
#: bytes a GET standing in for a HEAD fetches from an object above ``esdk.PROBE_SIZE``
#: (``EsdkObjects.head``): enough for an ESDK header with one KMS-wrapped data key; a longer
#: one costs a second ranged GET. A HEAD's own answer is ~0.5 KiB, so `ls -l` of large
#: objects costs little more bandwidth than before (2,000 entries: ~2 MB, not 8 MB).
HEAD_PROBE = 1024

FetchCipher = Callable[[int, int], Awaitable[bytes | memoryview]]


class EsdkReader:
    """Random access to one ESDK object version (pinned by ETag), like ``ObjectReader``.

    ``size`` is the plaintext size; ``read_cipher``/``decrypt`` work in plaintext offsets (the
    ciphertext of byte i is stored at ``ct_start + i``), so the mount's block cache keeps
    ciphertext blocks as for every other object."""

    encrypted = True

    def __init__(self, store: ObjectStore, info: ObjectInfo, layout: esdk.Layout,
                 data_key: bytes, name: str,
                 verdicts: OrderedDict[tuple[str, str], IntegrityError | None] | None = None
                 ) -> None:
        self.store, self.info, self.layout = store, info, layout
        self.key = info.key
        self.name = name
        self._data_key = data_key
        self.size = layout.ct_len
        self.direct = layout.algorithm.mode == "cbc"
        self.verifies = layout.algorithm.mode == "gcm"
        self._verifier: esdk.GcmVerifier | None = None
        # verdicts of earlier readers of this version (None: verified), so that a reader
        # whose first bytes came from the kernel's page cache still fails at the end
        self._verdicts = verdicts if verdicts is not None else OrderedDict()
        self._version = (info.key, info.etag)
        self._verified = self._version in self._verdicts and self._verdicts[self._version] is None
        self._failed: IntegrityError | None = self._verdicts.get(self._version)
        self._lock = trio.Lock()
        #: the encrypted data key (its CMK ARN) KMS opened (set by ``EsdkObjects.open``)
        self.opened_by: esdk.DataKey | None = None

    def read_started(self, offset: int) -> None:
        """A read at ``offset`` begins: one at 0 starts the GCM check (before it awaits, so a
        concurrent read of the end cannot pass unchecked)."""
        if offset == 0 and self.verifies and self._verifier is None and not self._verified:
            self._verifier = esdk.GcmVerifier(self.layout, self._data_key)

    async def _stored(self, start: int, end: int) -> bytes:
        return await self.store.get_range(self.key, start, end, if_match=self.info.etag or None)

    async def read_cipher(self, offset: int, length: int) -> bytes:
        """Ciphertext of plaintext bytes [offset, offset+length), clipped at the end (the
        contract of every ``read_cipher``: ``objects.ObjectReader``, ``fs.staging.Staging``)."""
        start, end = offset, min(offset + length, self.layout.ct_len) - 1
        if start > end:
            return b""
        base = self.layout.ct_start
        return await self._stored(base + start, base + end)

    def decrypt(self, offset: int, cipher: bytes | memoryview) -> bytes:
        """Plaintext of ``cipher`` at ``offset`` -- unverified (GCM/CTR only)."""
        return esdk.crypt_range(self.layout, self._data_key, offset, cipher)

    async def read(self, offset: int, length: int) -> bytes:
        """Plaintext [offset, offset+length) clipped at the end; a read reaching the end after
        reads from 0 is verified first (GCM)."""
        end = min(self.size, offset + length)
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        if offset >= end:
            return b""
        if self.direct:
            return await self._read_cbc(offset, end)
        self.read_started(offset)
        cipher = await self.read_cipher(offset, end - offset)
        await self.note_read(offset, cipher, self._fetch)
        return self.decrypt(offset, cipher)

    async def _fetch(self, offset: int, n: int) -> bytes:
        return await self.read_cipher(offset, n)

    async def _read_cbc(self, offset: int, end: int) -> bytes:
        bs = esdk.BLOCK
        first = offset - offset % bs
        last = min(self.layout.ct_len, -(-end // bs) * bs)
        start = max(0, first - bs)
        fetched = await self.read_cipher(start, last - start)
        before, cipher = (fetched[:bs], fetched[bs:]) if first else (None, fetched)
        plain = esdk.crypt_range(self.layout, self._data_key, first, cipher, before)
        return plain[offset - first:end - first]

    async def fix_cbc_size(self) -> None:
        """CBC-PKCS5: the plaintext ends before the padding of the last block (one GET)."""
        alg = self.layout.algorithm
        if not (alg.pkcs5 and self.layout.ct_len):
            return
        bs = esdk.BLOCK
        n = self.layout.ct_len
        start = max(0, n - 2 * bs)
        fetched = await self.read_cipher(start, n - start)
        before = fetched[:bs] if n > bs else None
        last = esdk.crypt_range(self.layout, self._data_key, n - bs, fetched[-bs:], before)
        self.size = n - esdk.unpad_length(self.layout, last)

    async def _tag(self) -> bytes:
        if self.layout.tag is not None:
            return self.layout.tag
        start = self.layout.ct_start + self.layout.ct_len
        return esdk.read_tag(self.layout, await self._stored(start, self.info.size - 1))

    async def note_read(self, offset: int, cipher: bytes | memoryview,
                        fetch: FetchCipher) -> None:
        """Feed a read's ciphertext to the GCM check. Once a read started at 0, the read that
        reaches the end fills what the verifier has not seen (``fetch(offset, n)``: the caller's
        cached ciphertext) and checks the tag; IntegrityError (naming the object) on mismatch."""
        if not self.verifies or self._verified:
            return
        if self._failed is not None:
            if offset + len(cipher) >= self.size:
                raise self._failed
            return
        async with self._lock:
            if self._verified:
                return
            self.read_started(offset)
            v = self._verifier
            if v is None:
                return
            end = offset + len(cipher)
            if end >= self.size:
                while v.position < offset:
                    n = min(_VERIFY_PIECE, offset - v.position)
                    v.update(await fetch(v.position, n))
            if offset <= v.position < end:
                v.update(memoryview(cipher)[v.position - offset:])
            if end >= self.size and v.position == self.size:
                await self._finish(v)

    async def _finish(self, v: esdk.GcmVerifier) -> None:
        try:
            v.finish(await self._tag())
        except IntegrityError as exc:
            self._failed = IntegrityError(f"{self.name}: {exc}; nothing more is returned")
            self._remember(self._failed)
            raise self._failed from None
        self._verified = True
        self._remember(None)

    def _remember(self, verdict: IntegrityError | None) -> None:
        self._verdicts[self._version] = verdict
        while len(self._verdicts) > _PROBES:
            self._verdicts.popitem(last=False)

    async def verify(self) -> None:
        """Check the whole object now (GCM): what ``cat`` does before its last bytes."""
        if not self.verifies or self._verified:
            return
        if self._failed is not None:
            raise self._failed
        v = esdk.GcmVerifier(self.layout, self._data_key)
        while v.position < self.size:
            v.update(await self._fetch(v.position, min(_VERIFY_PIECE, self.size - v.position)))
        await self._finish(v)

    async def chunks(self, chunk_size: int = 8 << 20, parallelism: int = 4,
                     start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        """Plaintext [start, stop or end) in order; the whole object is verified (GCM) before
        the last piece is yielded, even for a sub-range (then it costs a whole download)."""
        limit = self.size if stop is None else min(stop, self.size)
        held: bytes | None = None
        async for piece in read_in_order(self.read, chunk_size, parallelism, start, limit):
            if held is not None:
                yield held
            held = piece
        await self.verify()         # done already when the reads covered the whole object
        if held is not None:
            yield held


class EsdkObjects:
    """Finds ESDK objects among a bucket's objects and opens them (``keys``: the data keys;
    None: ESDK objects fail with WrongKeyError)."""

    def __init__(self, store: ObjectStore, keys: EsdkKeyring | None, *, probe: bool = True) -> None:
        self.store = store
        self.keys = keys
        self.probe = probe
        self._probed: OrderedDict[tuple[str, str], esdk.Layout | None] = OrderedDict()
        self._verdicts: OrderedDict[tuple[str, str], IntegrityError | None] = OrderedDict()

    def where(self, key: str) -> str:
        return f"oss://{self.store.name}/{key}"

    def may_be_python(self, size: int, headers: Mapping[str, str] | None) -> bool:
        """Whether a probe could find a Python-layout object of ``size`` stored bytes (large
        enough, and no other encryption headers when the headers are known). Any CSE header
        counts, even a broken set (``fmt.is_encrypted``: the CSE reader reports what is wrong
        with it); a presence test, since a first ``ls -l`` asks this three times per entry."""
        if not self.probe or size < esdk.MIN_PYTHON_SIZE:
            return False
        if headers and (fmt.is_encrypted(headers) or esdk.has_java_headers(headers)):
            return False
        return True

    async def head(self, key: str, listed_size: int, listed_etag: str | None,
                   known_headers: Mapping[str, str] | None
                   ) -> tuple[ObjectInfo, bytes | None] | None:
        """What a HEAD of ``key`` answers (None: absent), and the object's whole body when it
        came along and is no Encryption SDK message (so it may be cached as it is stored).

        When the object may be a Python-layout message (its headers unknown, ``listed_size``
        large enough), one GET of its first ``HEAD_PROBE`` bytes (all of it up to
        ``PROBE_SIZE``: reading a small file then costs no request) replaces the HEAD: it
        answers the same headers and carries the probe's bytes, whose layout is remembered
        (``layout`` then sends no request). A plain object's first stat was a HEAD and a
        ranged GET (`ls -l` of 10,000 plain objects: 20,232 requests). Falls back to a HEAD
        where a GET is refused (an unrestored Archive object, an empty one: 416) or where the
        object is no longer the ``listed_etag`` version (it may be a symlink now, whose GET
        answers for its target)."""
        if not self.may_be_python(listed_size, known_headers):
            return await self._plain_head(key)
        try:
            got = await self.store.get_head(key, listed_size if listed_size <= esdk.PROBE_SIZE
                                            else HEAD_PROBE)
        except (RejectedError, ArchivedError):
            return await self._plain_head(key)
        if got is None:
            return None
        info, prefix = got
        if info.object_type == "Symlink" or (listed_etag and info.etag != listed_etag):
            return await self._plain_head(key)
        if listed_etag:
            # the same ETag: the caller's string (a node's, from the listing) rather than a
            # copy of it, in the node and in the probe answers kept below (issue 17)
            info.etag = listed_etag
        try:
            found = await self.layout(info, prefix)
        except FormatError:
            return info, None        # reported where its size or content is asked for
        return info, (prefix if found is None and len(prefix) == info.size else None)

    async def _plain_head(self, key: str) -> tuple[ObjectInfo, None] | None:
        info = await self.store.head(key)
        return None if info is None else (info, None)

    async def layout(self, info: ObjectInfo, prefix: bytes | None = None) -> esdk.Layout | None:
        """The object's ESDK layout, None for any other object; FormatError for a message
        that starts like an ESDK one but is broken (truncated, tampered lengths, bad ids).
        ``prefix``: the object's first bytes if the caller has them (one request less)."""
        if info.headers and esdk.has_java_headers(info.headers):
            try:
                return esdk.parse_java(info.headers, info.size)
            except FormatError as exc:
                raise FormatError(f"{self.where(info.key)}: {exc}") from None
        if not self.may_be_python(info.size, info.headers):
            return None
        ck = (info.key, info.etag)
        if ck in self._probed:
            self._probed.move_to_end(ck)
            return self._probed[ck]
        found = await self._probe(info, prefix)
        self._probed[ck] = found
        while len(self._probed) > _PROBES:
            self._probed.popitem(last=False)
        return found

    async def _probe(self, info: ObjectInfo, prefix: bytes | None) -> esdk.Layout | None:
        if prefix is None:
            want = min(esdk.PROBE_SIZE, info.size)
            prefix = await self.store.get_range(info.key, 0, want - 1,
                                                if_match=info.etag or None)
        if not esdk.looks_like_message(prefix):
            return None
        try:
            try:
                return esdk.parse_python(prefix, info.size)
            except der.Truncated as exc:
                if exc.needed > min(_MAX_HEADER, info.size):
                    raise FormatError("ESDK header too long or message truncated") from None
                prefix = await self.store.get_range(info.key, 0, exc.needed - 1,
                                                    if_match=info.etag or None)
                return esdk.parse_python(prefix, info.size)
        except FormatError as exc:
            raise FormatError(f"{self.where(info.key)}: broken ESDK message: {exc}") from None

    async def open(self, info: ObjectInfo, layout: esdk.Layout) -> EsdkReader:
        """A reader of ``info`` (BLOCKING parts run in a thread: KMS, the header check)."""
        name = self.where(info.key)
        if self.keys is None:
            raise WrongKeyError(f"{name} is an Encryption SDK object and no KMS access is "
                                f"configured")
        try:
            data_key, opened_by = await trio.to_thread.run_sync(
                functools.partial(self.keys.open_with, layout.header))
        except (FormatError, WrongKeyError, KeyUnavailableError) as exc:
            raise type(exc)(f"{name}: {exc}") from None
        reader = EsdkReader(self.store, info, layout, data_key, name, self._verdicts)
        reader.opened_by = opened_by
        await reader.fix_cbc_size()
        return reader
