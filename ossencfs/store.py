"""Async object store: oss2.Bucket driven from trio, with retries and typed errors.

oss2 is blocking, so every call runs in a worker thread behind a CapacityLimiter: one for
requests that move data (GET, PUT, parts: their number bounds memory and bandwidth shares) and
a wider one for small metadata requests (HEAD, listings, deletes), whose cost is one round
trip each, so a stat walk over a directory seen for the first time is not queued behind 16 at
a time. The connection pool is as large as both limiters together, so that no thread ever
waits for a socket. Transient failures (network, 5xx, throttling, truncated bodies) are retried with
capped exponential backoff and full jitter; everything else becomes an ``ossencfs.errors``
type at once, so the layers above never see an oss2 or requests exception.
"""
from __future__ import annotations

import functools
import collections
import email.utils
import hashlib
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping, Sequence, TypeVar

import crcmod
import oss2
import oss2.exceptions
import oss2.http
import requests
import requests.adapters
import trio
import urllib3.exceptions

from .credentials import CredentialSource
from .errors import (
    AccessDeniedError,
    CredentialsError,
    ArchivedError,
    ConflictError,
    NetworkError,
    NotFoundError,
    OssEncError,
    RejectedError,
    StoreError,
)

log = logging.getLogger(__name__)


def _drop_raw_get_warning(record: logging.LogRecord) -> bool:
    # oss2 warns on every plain GET of an encrypted object; fetching ciphertext is our job.
    return "encrypted object will return raw data" not in record.getMessage()


logging.getLogger("oss2.models").addFilter(_drop_raw_get_warning)

T = TypeVar("T")
META_CONCURRENCY = 64
_META_OPS = frozenset({"head", "get_head", "list", "delete", "delete_many", "get_symlink", "put_symlink",
                       "restore"})

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
# Throttling and overload answers (SPEC D.13: 503 with these codes, 429 QpsLimitExceeded):
# retried with backoff like any 5xx.
_THROTTLE_CODES = {"Throttling", "SlowDown", "RequestTimeout", "ServiceUnavailable",
                   "InternalError", "QpsLimitExceeded", "TooManyRequests",
                   "TotalQpsLimitExceeded", "MetaOperationQpsLimitExceeded",
                   "DownloadTrafficRateLimitExceeded", "UploadTrafficRateLimitExceeded",
                   "ActiveRequestLimitExceeded"}
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "SymlinkTargetNotExist", ""}
# 403 answers to credentials that expired or were replaced while a request was under way
# (EC 0002-00000007 SecurityTokenExpired, 0002-00000006 InvalidSecurityToken, and
# InvalidAccessKeyId for an STS key OSS no longer knows): retried once with fresh credentials.
_STALE_CREDENTIAL_CODES = {"SecurityTokenExpired", "InvalidSecurityToken", "InvalidAccessKeyId"}


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
    objects: list[ObjectInfo]
    prefixes: list[str]
    next_token: str | None


class _Transient(Exception):
    """A response we did not trust (short body, wrong range): worth one more try."""


#: CRC-64/ECMA as OSS reports it (x-oss-hash-crc64ecma), built once. oss2's own check builds
#: its 256-entry table in pure Python on every request (~0.3 ms of GIL time per PUT or GET,
#: more than the rest of a small upload's client-side work), so it is off on our bucket
#: (``enable_crc = False``) and every body is checked here with this function instead.
crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)


def _check_crc(what: str, data: bytes, result: Any) -> None:
    """What oss2 does with enable_crc: the server's CRC of what it stored must be ours."""
    server = getattr(result, "crc", None)
    if server is not None and server != crc64(data):
        raise _Transient(f"{what}: CRC-64 of the sent body does not match x-oss-hash-crc64ecma")


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _http_time(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _info_from_headers(key: str, headers: Mapping[str, str]) -> ObjectInfo:
    h = _lower_headers(headers)
    return ObjectInfo(
        key=key,
        size=int(h.get("content-length", "0") or 0),
        etag=h.get("etag", "").strip('"'),
        mtime=_http_time(h.get("last-modified")),
        object_type=h.get("x-oss-object-type", "Normal"),
        headers=h,
        storage_class=h.get("x-oss-storage-class", ""),
    )


class ObjectStore:
    """One bucket, used concurrently from a trio loop."""

    def __init__(self, bucket: oss2.Bucket, *, concurrency: int = 16, retries: int = 5,
                 backoff_base: float = 0.1, backoff_max: float = 5.0,
                 meta_concurrency: int = META_CONCURRENCY,
                 credentials: CredentialSource | None = None) -> None:
        self.bucket = bucket
        #: where the bucket's auth takes its credentials (None: fixed ones inside the auth)
        self.credentials = credentials
        self.name: str = bucket.bucket_name
        self.concurrency = concurrency
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.limiter = trio.CapacityLimiter(concurrency)
        self.meta_limiter = trio.CapacityLimiter(meta_concurrency)
        #: attempts per operation, retries included (bench / tests)
        self.requests: collections.Counter[str] = collections.Counter()
        #: retried attempts per operation
        self.retried: collections.Counter[str] = collections.Counter()
        self.bytes_fetched = 0
        self.bytes_sent = 0
        self._clock_offset = 0.0          # OSS's clock minus ours, from the Date of replies
        _size_pool(bucket, concurrency + meta_concurrency)
        _cache_environment(bucket)
        bucket.enable_crc = False         # checked here, with a table built once (``crc64``)

    def _dated(self, result: T) -> T:
        """Learn OSS's clock from a reply's Date header (whole seconds: floored)."""
        when = _http_time(getattr(result, "headers", {}).get("Date"))
        if when:
            self._clock_offset = when - time.time()
        return result

    def server_now(self) -> float:
        """An upper bound of OSS's clock now, for comparing with Last-Modified values."""
        return time.time() + self._clock_offset + 1.0

    @classmethod
    def connect(cls, endpoint: str, bucket: str, access_key_id: str | None = None,
                access_key_secret: str | None = None, security_token: str | None = None, *,
                credentials: CredentialSource | None = None, region: str | None = None,
                auth_version: str = "v1", connect_timeout: float | None = None,
                concurrency: int = 16, **kw: Any) -> "ObjectStore":
        """Build the oss2 objects; V4 needs a region. Every request is signed with what
        ``credentials`` holds at that moment (oss2.ProviderAuth / ProviderAuthV4 call its
        ``get_credentials()`` per request), so renewed STS credentials are used at once; a
        fixed key pair (and token) is wrapped in a static source."""
        version = oss2.AUTH_VERSION_4 if auth_version == "v4" else oss2.AUTH_VERSION_1
        if version == oss2.AUTH_VERSION_4 and not region:
            raise OssEncError("signature V4 needs a region (--region)")
        if credentials is None:
            if not access_key_id or not access_key_secret:
                raise CredentialsError("no OSS credentials given")
            credentials = CredentialSource.static(access_key_id, access_key_secret,
                                                  security_token)
        auth = (oss2.ProviderAuthV4(credentials) if version == oss2.AUTH_VERSION_4
                else oss2.ProviderAuth(credentials))
        session = oss2.http.Session(pool_size=concurrency + kw.get("meta_concurrency", META_CONCURRENCY))
        try:
            b = oss2.Bucket(auth, endpoint, bucket, session=session,
                            connect_timeout=connect_timeout, region=region)
        except oss2.exceptions.ClientError as exc:
            raise OssEncError(f"bad endpoint or bucket name: {endpoint} {bucket}") from exc
        return cls(b, concurrency=concurrency, credentials=credentials, **kw)

    # ------------------------------------------------------------------ core

    async def _call(self, op: str, key: str, fn: Callable[[], T],
                    attempts: list[int] | None = None) -> T:
        attempt = 0
        renewed = False
        while True:
            self.requests[op] += 1
            if attempts is not None:
                attempts.append(attempt)
            signed_with = self.credentials.current if self.credentials is not None else None
            try:
                limiter = self.meta_limiter if op in _META_OPS else self.limiter
                return await trio.to_thread.run_sync(fn, limiter=limiter)
            except _LocalSourceError as exc:    # ours, not the network's: no retry here
                raise exc.error from None
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                if not renewed and await self._renewed_after(exc, signed_with):
                    renewed = True            # raced an expiry: once more, fresh credentials
                    self.retried[op] += 1
                    continue
                transient, mapped = self._classify(op, key, exc)
                if not transient or attempt >= self.retries:
                    raise mapped from exc
                delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
                delay = random.uniform(delay / 2, delay)
                log.info("%s %s: %s; retry %d in %.2fs", op, key, mapped, attempt + 1, delay)
                self.retried[op] += 1
                attempt += 1
                await trio.sleep(delay)

    async def _renewed_after(self, exc: Exception, signed_with: Any) -> bool:
        """Whether OSS refused the request's temporary credentials and new ones are in use now."""
        if (self.credentials is None or not isinstance(exc, oss2.exceptions.ServerError)
                or exc.status != 403 or getattr(exc, "code", "") not in _STALE_CREDENTIAL_CODES
                or signed_with is None or signed_with.security_token is None):
            return False
        source = self.credentials
        return await trio.to_thread.run_sync(lambda: source.renew(signed_with))

    def _classify(self, op: str, key: str, exc: Exception) -> tuple[bool, OssEncError]:
        what = f"{op} oss://{self.name}/{key}"
        if isinstance(exc, CredentialsError):
            # the credential source is down and its last credentials expired: like a network
            # outage (retried; the fs layer serves what it has cached, uploads stay journaled)
            return True, NetworkError(f"{what}: {exc}")
        if isinstance(exc, OssEncError):
            return False, exc
        if isinstance(exc, _Transient):
            return True, NetworkError(f"{what}: {exc}")
        if isinstance(exc, oss2.exceptions.RequestError):
            return True, NetworkError(f"{what}: network error: {_short(exc)}")
        if isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError,
                            ConnectionError, TimeoutError)):
            return True, NetworkError(f"{what}: network error: {type(exc).__name__}")
        if isinstance(exc, oss2.exceptions.InconsistentError):
            return True, NetworkError(f"{what}: CRC-64 mismatch in transfer")
        if isinstance(exc, oss2.exceptions.ServerError):
            status = exc.status
            code = getattr(exc, "code", "") or ""
            detail = f"{what}: {status} {code or 'error'}"
            message = (getattr(exc, "message", "") or "").strip()
            if message:
                detail += f" ({message})"
            if exc.request_id:
                detail += f" [request {exc.request_id}]"
            if status >= 500 or status == 429 or code in _THROTTLE_CODES:
                return True, NetworkError(detail)
            if status == 404 and code in _NOT_FOUND_CODES:
                return False, NotFoundError(detail)
            if status == 412 or code in ("PreconditionFailed", "FileAlreadyExists"):
                return False, ConflictError(detail)
            if status == 409:
                return False, ConflictError(detail)
            if status == 403 and code == "InvalidObjectState":
                return False, ArchivedError(
                    f"{what}: the object is archived and not restored; restore it with "
                    f"`ossencfs restore` (RestoreObject) and read it once the restore is done")
            if status == 403:
                return False, AccessDeniedError(detail, code or "AccessDenied")
            if status == 404:
                return False, NotFoundError(detail)
            if 400 <= status < 500:
                # a refusal retrying cannot change (NotImplemented, InvalidObjectName, ...)
                return False, RejectedError(detail, code, len(key.encode("utf-8", "replace")))
            return False, StoreError(detail)
        if isinstance(exc, oss2.exceptions.OssError):
            return False, StoreError(f"{what}: {_short(exc)}")
        return False, StoreError(f"{what}: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------ operations

    async def head(self, key: str) -> ObjectInfo | None:
        """None when absent, so that callers can probe without try/except."""
        def run() -> ObjectInfo:
            try:
                r = self.bucket.head_object(key)
            except oss2.exceptions.NoSuchBucket:
                raise NotFoundError(f"oss://{self.name}: no such bucket") from None
            return _info_from_headers(key, r.headers)
        try:
            return await self._call("head", key, run)
        except NotFoundError:
            return None

    async def get_object_meta(self, key: str) -> ObjectInfo | None:
        """GetObjectMeta (``HEAD ?objectMeta``): size, ETag, Last-Modified and type of the
        object itself, a native symlink included (which a HEAD answers for its target, SPEC
        D.6); no user metadata. None when absent."""
        def run() -> ObjectInfo:
            return _info_from_headers(key, self.bucket.get_object_meta(key).headers)
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
        if start < 0 or end < start:
            raise ValueError(f"bad range {start}-{end}")
        want = end - start + 1
        headers = {"x-oss-range-behavior": "standard"}
        if if_match:
            headers["If-Match"] = f'"{if_match}"'

        def run() -> bytes:
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
                        raise _Transient(f"unexpected Content-Range {cr!r} for {start}-{end}")
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
            return _body(raw, want, whole=start == 0 and total == want)

        data = await self._call("get", key, run)
        self.bytes_fetched += len(data)
        return data

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
                info = _info_from_headers(key, raw.headers)
                m = _CONTENT_RANGE.match(raw.headers.get("Content-Range") or "")
                if r.status == 206 and m and m.group(1) == "0" and m.group(3) != "*":
                    info.size = int(m.group(3))
                    want = int(m.group(2)) + 1
                elif r.status == 200:
                    want = info.size
                else:
                    raise _Transient(f"unexpected answer {r.status} "
                                     f"{raw.headers.get('Content-Range')!r} to 0-{length - 1}")
                info.headers["content-length"] = str(info.size)   # what a HEAD says
                info.headers.pop("content-range", None)
            except BaseException:
                raw.close()
                raise
            return info, _body(raw, want, whole=want == info.size)

        try:
            info, data = await self._call("get_head", key, run)
        except NotFoundError:
            return None
        self.bytes_fetched += len(data)
        return info, data

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
            _check_crc("put", data, result)
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

    async def list_page(self, prefix: str, delimiter: str = "/", token: str | None = None,
                        max_keys: int = 1000, start_after: str = "") -> Listing:
        def run() -> Listing:
            r = self.bucket.list_objects_v2(prefix=prefix, delimiter=delimiter,
                                            continuation_token=token or "", max_keys=max_keys,
                                            start_after=start_after)
            objs = [ObjectInfo(key=o.key, size=int(o.size), etag=(o.etag or "").strip('"'),
                               mtime=float(o.last_modified or 0), object_type=o.type or "Normal",
                               storage_class=o.storage_class or "")
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
                        raise _LocalSourceError(body.local_error) from None
                    raise
                if body.left:
                    raise _Transient(f"part {part_number}: {body.left} bytes not sent")
                server = getattr(result, "crc", None)
                if server is not None and server != body.crc:
                    raise _Transient("upload part: CRC-64 of the sent body does not match "
                                     "x-oss-hash-crc64ecma")
            else:
                result = self.bucket.upload_part(key, upload_id, part_number, data, headers=h)
                _check_crc("upload part", data, result)
            return result.etag
        etag = await self._call("upload_part", key, run)
        self.bytes_sent += data[2] if isinstance(data, tuple) else len(data)
        return etag

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

    async def put_symlink(self, key: str, target: str, headers: Mapping[str, str]) -> None:
        h = dict(headers)
        await self._call("put_symlink", key, lambda: self.bucket.put_symlink(target, key, headers=h))

    async def get_symlink(self, key: str) -> str:
        return await self._call("get_symlink", key,
                                lambda: self.bucket.get_symlink(key).target_key)


class _LocalSourceError(Exception):
    """A request body's local source failed (``PartBody.local_error``); ``_call`` raises
    ``error`` itself, unclassified and unretried (the caller decides: fs.lifecycle.for_good)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class PartBody:
    """A request body of ``size`` bytes read from ``read(offset, n)`` (blocking) a ``PIECE`` at
    a time as the HTTP client asks for it, with its CRC-64 computed on the way (``crc``).
    One per attempt: a retry starts again from ``offset``."""

    PIECE = 1 << 20

    def __init__(self, read: Callable[[int, int], bytes], offset: int, size: int) -> None:
        self._read, self._next, self.left = read, offset, size
        self._buf = memoryview(b"")
        self.crc = 0
        #: a local read failure: the HTTP client reports it as a network error, which would be
        #: retried; ``upload_part`` raises this instead (a staging file cut short is for good)
        self.local_error: OSError | None = None

    def __len__(self) -> int:           # requests takes it as the Content-Length
        return self.left + len(self._buf)

    def read(self, n: int = -1) -> bytes:
        if not self._buf and self.left:
            try:
                piece = self._read(self._next, min(self.PIECE, self.left))
            except OSError as exc:
                self.local_error = exc
                raise
            if not piece:
                return b""
            self._next += len(piece)
            self.left -= len(piece)
            self.crc = crc64(piece, self.crc)
            self._buf = memoryview(piece)
        n = len(self._buf) if n is None or n < 0 else n
        out, self._buf = self._buf[:n], self._buf[n:]
        return bytes(out)


def _body(raw: requests.Response, want: int, *, whole: bool) -> bytes:
    """Exactly ``want`` bytes of a GET's body (closes the response); its CRC-64 checked
    against x-oss-hash-crc64ecma (the whole object's) when ``whole``. Transient otherwise."""
    try:
        data = _read_all(raw, want)
    finally:
        raw.close()
    if len(data) != want:
        raise _Transient(f"short body: {len(data)} of {want} bytes")
    server_crc = raw.headers.get("x-oss-hash-crc64ecma")
    if whole and server_crc and crc64(data) != int(server_crc):
        raise _Transient("CRC-64 of the body does not match x-oss-hash-crc64ecma")
    return data


def _read_all(raw: requests.Response, expected: int) -> bytes:
    """Read a body of known length straight from urllib3 into one bytes object.

    No 8 KiB iteration and no join: one read of the exact size (urllib3 loops internally),
    topped up only if the socket hands back less. A short result is detected by the caller.
    """
    body = raw.raw
    data = body.read(expected, decode_content=False)
    if len(data) >= expected:
        return data
    parts = [data]
    got = len(data)
    while got < expected:
        more = body.read(expected - got, decode_content=False)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 200 else text[:200] + "..."


def _cache_environment(bucket: oss2.Bucket) -> None:
    """requests reads the proxy variables (and no_proxy) and the CA bundle variables from the
    environment again for every request, ~0.25 ms of GIL time each; a bucket talks to one
    host, so the answer is kept per (scheme, host) and the arguments given."""
    inner = getattr(getattr(bucket, "session", None), "session", None)
    if not isinstance(inner, requests.Session) or "merge_environment_settings" in vars(inner):
        return
    merge = inner.merge_environment_settings
    cache: dict[Any, dict[str, Any]] = {}

    def cached(url: str, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        parts = requests.utils.urlparse(url)
        try:
            key = (parts.scheme, parts.netloc, tuple(sorted((proxies or {}).items())), stream,
                   verify, cert, inner.trust_env)
            hash(key)
        except TypeError:               # unhashable arguments: not worth caching
            return merge(url, proxies, stream, verify, cert)
        settings = cache.get(key)
        if settings is None:
            if len(cache) > 64:
                cache.clear()
            settings = cache[key] = merge(url, dict(proxies) if proxies else proxies, stream,
                                          verify, cert)
        out = dict(settings)
        if isinstance(out.get("proxies"), dict):
            out["proxies"] = dict(out["proxies"])
        return out
    inner.merge_environment_settings = cached  # type: ignore[method-assign]
    if inner.auth is None:
        # requests also looks for ~/.netrc on every request (two stat calls and, if there is
        # one, a parse); its Basic auth would replace the OSS signature anyway: never wanted
        inner.auth = _keep_signature


def _keep_signature(request: Any) -> Any:
    """An auth hook that leaves the request as oss2 signed it."""
    return request


def _size_pool(bucket: oss2.Bucket, size: int) -> None:
    """Give a caller-made bucket a pool as large as our concurrency (default oss2 pool is 10)."""
    session = getattr(bucket, "session", None)
    inner = getattr(session, "session", None)
    if not isinstance(inner, requests.Session):
        return
    adapter = inner.get_adapter("http://")
    current = getattr(adapter, "_pool_maxsize", 0)
    if isinstance(adapter, requests.adapters.HTTPAdapter) and current < size:
        for scheme in ("http://", "https://"):
            inner.mount(scheme, requests.adapters.HTTPAdapter(pool_connections=size,
                                                              pool_maxsize=size))
