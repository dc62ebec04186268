"""Shared pieces of the emulator's OSS operations: request/response shapes, OSS rules
(key names, metadata limits, conditions, ranges) and the helpers every operation group uses.
"""
from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from xml.etree import ElementTree
from dataclasses import dataclass, field
from email.utils import parsedate_tz, mktime_tz
from typing import Callable, Protocol
from urllib.parse import unquote, unquote_to_bytes

from .storage import Entry, OpenObject, Storage, BucketState, TempObject
from .xmlout import OssError, http_date

MIN_PART = 100 * 1024
MAX_OBJECT = 5 << 30
# CopyObject: "You can call CopyObject to copy an object that is up to 1 GB in size and call UploadPartCopy
# to copy an object that is larger than 1 GB" (alibabacloud.com/help/doc-detail/118923, doc-detail/31994).
# Newer CopyObject pages (doc-detail/31979) allow 5 GB and more for same-bucket copies; the older, lower
# figure is the conservative one, and "GB" is read as 10**9 bytes (the stricter of GB / GiB).
DEFAULT_COPY_LIMIT = 10 ** 9
DEFAULT_RESTORE_SECONDS = 1.0
ARCHIVE_CLASSES = ("Archive", "ColdArchive", "DeepColdArchive")
STORAGE_CLASSES = ("Standard", "IA") + ARCHIVE_CLASSES
MAX_META = 8 * 1024
OWNER_ID = "1512345678901234"
STORED_HEADERS = ("content-type", "content-encoding", "content-disposition", "cache-control",
                  "expires", "content-language")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_CHUNK = 1 << 20
_CSE = "x-oss-meta-client-side-encryption-"
# Legacy oss2 (2.6-2.10) CSE metadata (SPEC A.8); counted as CSE too (stricter reading).
_CSE_LEGACY = ("x-oss-meta-oss-crypto-", "x-oss-meta-oss-cek-alg", "x-oss-meta-oss-wrap-alg")
_META_NAME_RE = re.compile(r"[A-Za-z0-9-]+")


class Settings(Protocol):
    copy_limit: int
    restore_seconds: float


class _DefaultSettings:
    copy_limit = DEFAULT_COPY_LIMIT
    restore_seconds = DEFAULT_RESTORE_SECONDS


class Body(Protocol):
    def read(self, n: int) -> bytes: ...
    def readinto(self, view: memoryview) -> int: ...
    length: int | None


@dataclass
class Ctx:
    method: str
    bucket: str | None
    key: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Body
    host: str
    s3: bool = False          # signed as an S3 request (``s3compat``)


@dataclass
class Resp:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: tuple[OpenObject, int, int] | None = None   # (object, offset, length) streamed after headers
    content_length: int | None = None             # for HEAD: the length a GET would have


def valid_bucket_name(name: str) -> bool:
    return bool(_BUCKET_RE.match(name))


def _crc_header(crc: int | None) -> list[tuple[str, str]]:
    """OSS clients skip an absent CRC but reject a wrong one, so unknown means omitted."""
    return [] if crc is None else [("x-oss-hash-crc64ecma", str(crc))]


def _strip_etag(v: str) -> str:
    return v.strip().strip('"').upper()


def _etag_matches(cond: str, etag: str) -> bool:
    return any(c.strip() == "*" or _strip_etag(c) == etag.upper() for c in cond.split(","))


def _parse_http_date(v: str) -> float | None:
    t = parsedate_tz(v)
    return float(mktime_tz(t)) if t else None


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() == "true"


def _meta_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers an object keeps: content-* style ones and user metadata (lower-case names)."""
    out = {k: v for k, v in headers.items() if k in STORED_HEADERS or k.startswith("x-oss-meta-")}
    for k in out:
        # "Keys ... can only contain letters, digits and hyphens; underscores and other characters are
        # not supported" (help.aliyun.com/en/oss/user-guide/0011-00000004; 0011-00000002 lists the same
        # rule under the 8 KB limit). Status/Code are not documented: 400 InvalidArgument is modelled.
        if k.startswith("x-oss-meta-") and not _META_NAME_RE.fullmatch(k[len("x-oss-meta-"):]):
            raise OssError(400, "InvalidArgument", "The user metadata key contains invalid characters.",
                           ArgumentName=k, EC="0011-00000004")
    size = sum(len(k) + len(v) for k, v in out.items() if k.startswith("x-oss-meta-"))
    if size > MAX_META:
        # help.aliyun.com/en/oss/user-guide/0011-00000002 (total user metadata above 8 KB)
        raise OssError(400, "MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size.",
                       EC="0011-00000002")
    return out


def _forbid_overwrite(h: dict[str, str]) -> bool:
    """x-oss-forbid-overwrite: "Valid values are true and false only"
    (help.aliyun.com/en/oss/user-guide/0017-00000279). Case-sensitive (stricter reading; every SDK sends
    lower-case); Status/Code are not documented: 400 InvalidArgument is modelled."""
    v = h.get("x-oss-forbid-overwrite")
    if v is None:
        return False
    if v not in ("true", "false"):
        raise OssError(400, "InvalidArgument", "The value of x-oss-forbid-overwrite is invalid.",
                       ArgumentName="x-oss-forbid-overwrite", ArgumentValue=v, EC="0017-00000279")
    return v == "true"


def _no_put_conditions(h: dict[str, str]) -> None:
    """PutObject takes no condition headers: 400 NotImplemented "A header you provided implies
    functionality that is not implemented." with <Header> (help.aliyun.com/en/oss/user-guide/0017-00000245).
    Applied to AppendObject too (stricter reading: it is a PutObject variant and documents no conditions)."""
    for name in ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"):
        if name.lower() in h:
            raise OssError(400, "NotImplemented", "A header you provided implies functionality that is not implemented.",
                           Header=name, EC="0017-00000245")


def _storage_class(h: dict[str, str], default: str = "Standard") -> str:
    v = h.get("x-oss-storage-class")
    if v is None:
        return default
    if v not in STORAGE_CLASSES:
        raise OssError(400, "InvalidArgument", "The storage class you specified is not valid.",
                       ArgumentName="x-oss-storage-class", ArgumentValue=v)
    return v


def is_cse(headers: dict[str, str]) -> bool:
    """Whether stored (or sent) metadata marks a client-side-encrypted object (V2 or legacy oss2 names)."""
    return any(k.startswith(_CSE) or k.startswith(_CSE_LEGACY) for k in headers)


def _cse_error(ec: str, message: str) -> OssError:
    """CSE refusals. The EC pages (help.aliyun.com/en/oss/user-guide/0005-000004xx, 0042-00000309) give no
    Status/Code; oss2 maps (400, InvalidEncryptionRequest) (oss2/exceptions.py) and its own test expects it
    for a REPLACE copy that changes CSE metadata (aliyun-oss-python-sdk tests/test_crypto_object.py,
    test_copy_crypto_object_with_replace_encryption_meta). Messages paraphrase the EC pages."""
    return OssError(400, "InvalidEncryptionRequest", message, EC=ec)


def _cse_check_required(h: dict[str, str]) -> bool:
    """A Put/Initiate/UploadPart carrying any CSE header must carry key, start, cek-alg and wrap-alg
    (help.aliyun.com/en/oss/user-guide/0005-00000401 ... -404). True when CSE headers are present."""
    if not any(k.startswith(_CSE) for k in h):
        return False
    for name, ec in (("key", "0005-00000401"), ("start", "0005-00000402"), ("cek-alg", "0005-00000403"),
                     ("wrap-alg", "0005-00000404")):
        if _CSE + name not in h:
            raise _cse_error(ec, f"The {_CSE}{name} header is missing from a client-side encryption request.")
    return True


def _cse_int(h: dict[str, str], name: str, missing_ec: str, bad_ec: str) -> int:
    """data-size / part-size: required (0005-00000406 / -407) and integers (0005-00000408 / -409)."""
    v = h.get(_CSE + name)
    if v is None:
        raise _cse_error(missing_ec, f"The {_CSE}{name} header is missing from a client-side encryption request.")
    try:
        n = int(v, 10)
    except ValueError:
        n = -1
    if n < 0:
        raise _cse_error(bad_ec, f"The {_CSE}{name} header is not an integer.")
    return n


_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def parse_xml_body(body: bytes, tag: str | None = None, s3: bool = False) -> ElementTree.Element:
    """A request body's XML root (of ``tag`` when given), else 400 MalformedXML as OSS answers.
    In an S3 request (``s3``), elements in the S3 namespace
    (``xmlns="http://s3.amazonaws.com/doc/2006-03-01/"``, which S3 clients put on
    CompleteMultipartUpload and Delete) are read as without it: OSS's S3-compatible access takes
    AWS SDK requests unchanged (``s3compat``). OSS's own requests name no namespace, and no
    page says OSS reads one there: they keep the plain names (the stricter reading)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise OssError(400, "MalformedXML", "The XML you provided was not well-formed.") from None
    for el in root.iter() if s3 else ():
        if el.tag.startswith(_S3_NS):
            el.tag = el.tag[len(_S3_NS):]
    if tag is not None and root.tag != tag:
        raise OssError(400, "MalformedXML", "The XML you provided was not well-formed.")
    return root


def _check_key(key: str) -> None:
    raw = key.encode("utf-8")
    if not raw or len(raw) > 1023 or key[0] in "/\\":
        raise OssError(400, "InvalidObjectName", "The specified object is not valid.", Key=key)


def _copy_source(ctx: Ctx) -> tuple[str, str]:
    src = ctx.headers["x-oss-copy-source"]
    if "?" in src:
        src = src.split("?", 1)[0]
    raw = src[1:] if src.startswith("/") else src
    bucket, sep, key = raw.partition("/")
    if not sep or not key:
        raise OssError(400, "InvalidArgument", "Copy Source must mention the source bucket and key.",
                       ArgumentName="x-oss-copy-source", ArgumentValue=ctx.headers["x-oss-copy-source"])
    try:
        key = unquote_to_bytes(key).decode("utf-8")
    except UnicodeDecodeError:
        raise OssError(400, "InvalidArgument", "Copy Source is not valid UTF-8.") from None
    return unquote(bucket), key


def _check_conditions(h: dict[str, str], e: Entry, prefix: str = "") -> None:
    """If-* (or x-oss-copy-source-if-*) rules: 412 for match/unmodified, 304 for none-match/modified."""
    v = h.get(prefix + "if-match")
    if v is not None and not _etag_matches(v, e.etag):
        raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.",
                       Condition=prefix + "If-Match")
    v = h.get(prefix + "if-unmodified-since")
    if v is not None:
        t = _parse_http_date(v)
        if t is not None and int(e.mtime) > t:
            raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.",
                           Condition=prefix + "If-Unmodified-Since")
    v = h.get(prefix + "if-none-match")
    if v is not None and _etag_matches(v, e.etag):
        raise OssError(304, "NotModified", "Not Modified")
    v = h.get(prefix + "if-modified-since")
    if v is not None:
        t = _parse_http_date(v)
        if t is not None and int(e.mtime) <= t:
            raise OssError(304, "NotModified", "Not Modified")


def _write_guard(forbid: bool) -> Callable[[Entry | None], None]:
    """Check on the current target just before a write becomes visible (there is no If-Match on writes:
    PutObject refuses condition headers, see _no_put_conditions). ``x-oss-forbid-overwrite: true`` on a
    name that exists: HTTP 409 FileAlreadyExists, for PutObject and CopyObject alike (error pages
    help.aliyun.com/en/oss/user-guide/0026-00000002 and .../0026-00000201), and for multipart uploads
    (alibabacloud.com/help/en/object-storage-service/latest/disable-overwriting-object-with-the-same-name).
    A new file's close relies on it: one PUT, no HEAD first."""
    def check(cur: Entry | None) -> None:
        if forbid and cur is not None:
            raise OssError(409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten.")
    return check


def _offset(digits: str) -> int:
    """A Range offset; any number of digits (a 5,000-digit one is just beyond every object: OSS then
    ignores the Range, or answers 416 InvalidRange with x-oss-range-behavior: standard, as for any
    out-of-range value, https://help.aliyun.com/en/oss/user-guide/http-status-code-416)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else 1 << 64


def parse_range(spec: str, size: int, standard: bool) -> tuple[int, int] | None:
    """(start, end) inclusive for a 206, None to ignore the Range (200), or 416 InvalidRange."""
    def bad() -> tuple[int, int] | None:
        if standard:
            raise OssError(416, "InvalidRange", "The requested range cannot be satisfied.",
                           RangeRequested=spec, ActualObjectSize=str(size))
        return None

    m = re.fullmatch(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*", spec)
    if not m or (not m.group(1) and not m.group(2)):
        return bad()
    s, e = m.group(1), m.group(2)
    if s:
        start = _offset(s)
        end = _offset(e) if e else size - 1
        if e and end < start:
            return bad()
        if start >= size:
            return bad()
        if end >= size:
            if not standard and e:
                return None
            end = size - 1
        return start, end
    n = _offset(e)
    if n == 0 or size == 0:
        return bad()
    if n > size:
        if not standard:
            return None
        n = size
    return size - n, size - 1


class OpsBase:
    """State and helpers every operation group shares."""

    def __init__(self, storage: Storage, *, region: str = "oss-cn-hangzhou", endpoint_host: str = "127.0.0.1",
                 settings: Settings | None = None) -> None:
        self.st = storage
        self.region = region
        self.endpoint_host = endpoint_host
        # live, shared with the server's admin endpoint: copy_limit, restore_seconds
        self.settings: Settings = settings if settings is not None else _DefaultSettings()
        # RestoreObject state per (bucket, key): (etag, mtime, requested_at, ready_at, expiry); in memory
        self.restores: dict[tuple[str, str], tuple[str, float, float, float, float]] = {}
        self._restore_lock = threading.Lock()

    # ---- helpers -------------------------------------------------------------------------
    def bucket(self, ctx: Ctx, name: str | None = None) -> BucketState:
        name = ctx.bucket if name is None else name
        b = self.st.get_bucket(name or "")
        if b is None:
            raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=name or "")
        return b

    def _entry_or_404(self, b: BucketState, key: str) -> Entry:
        e = self.st.lookup(b, key)
        if e is None:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        return e

    def _stream_body(self, ctx: Ctx, tmp: TempObject) -> None:
        """Copy the request body into ``tmp``, verifying Content-MD5 and the size limit (an
        unframed body was answered 411 before: ``oss_handler._unframed``)."""
        if ctx.body.length is not None and ctx.body.length > MAX_OBJECT:
            raise OssError(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size.")
        md5_hdr = ctx.headers.get("content-md5")
        want = None
        if md5_hdr is not None:
            try:
                want = base64.b64decode(md5_hdr, validate=True)
            except (binascii.Error, ValueError):
                want = b""
            if len(want) != 16:
                raise OssError(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
        try:
            tmp.stream_from(ctx.body.readinto, MAX_OBJECT, _CHUNK, ctx.body.length)
        except OverflowError:
            raise OssError(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size.") from None
        if want is not None and tmp.md5_digest != want:
            raise OssError(400, "InvalidDigest", "The Content-MD5 you specified did not match what we received.")

    @staticmethod
    def _content_type(ctx: Ctx, headers: dict[str, str]) -> None:
        headers.setdefault("content-type", "application/octet-stream")

    # ---- Archive / Cold Archive (help.aliyun.com RestoreObject; alibabacloud.com/help/en/oss/support/0016-00000404)
    def restore_state(self, bucket: str, e: Entry) -> tuple[str, float] | None:
        """None (never restored, or the restored copy expired), ("ongoing", ready_at) or ("done", expiry)."""
        with self._restore_lock:
            r = self.restores.get((bucket, e.key))
        if r is None or (r[0], r[1]) != (e.etag, e.mtime):
            return None
        now = time.time()
        if now < r[3]:
            return "ongoing", r[3]
        if now < r[4]:
            return "done", r[4]
        return None

    def _restore_header(self, bucket: str, e: Entry) -> list[tuple[str, str]]:
        """x-oss-restore as oss2's restore_object docstring shows it (oss2/api.py): 'ongoing-request="true"'
        while restoring, 'ongoing-request="false", expiry-date="<RFC 1123>"' once readable."""
        if e.storage_class not in ARCHIVE_CLASSES:
            return []
        st = self.restore_state(bucket, e)
        if st is None:
            return []
        if st[0] == "ongoing":
            return [("x-oss-restore", 'ongoing-request="true"')]
        return [("x-oss-restore", f'ongoing-request="false", expiry-date="{http_date(st[1])}"')]

    def _check_readable(self, bucket: str, e: Entry) -> None:
        """GetObject of an Archive/Cold Archive object that is not restored: 403 InvalidObjectState,
        "The operation is not valid for the object's state" (alibabacloud.com/help/en/oss/support/0016-00000404;
        message from alibabacloud.com/help/en/oss/the-the-operation-is-not-valid-for-the-object-s-state-...)."""
        if e.storage_class in ARCHIVE_CLASSES:
            st = self.restore_state(bucket, e)
            if st is None or st[0] != "done":
                raise OssError(403, "InvalidObjectState", "The operation is not valid for the object's state",
                               EC="0016-00000404")

    def _check_copy_source(self, bucket: str, src: Entry, *, part_copy: bool) -> None:
        """Refusals shared by CopyObject and UploadPartCopy, decided on the source alone."""
        if src.type == "Appendable":
            # "The CopyObject operation cannot be performed on appendable objects" (doc-detail/94412) and
            # UploadPartCopy: "Objects uploaded by calling AppendObject cannot be copied" (doc-detail/31994).
            # No Status/Code is documented: 400 OperationNotSupported (an oss2 exception class) is modelled.
            raise OssError(400, "OperationNotSupported", "The operation is not supported for appendable objects.",
                           Key=src.key)
        # An unrestored Archive source cannot be read, so it cannot be copied either (stricter reading;
        # same answer as GetObject, 0016-00000404).
        self._check_readable(bucket, src)
        if part_copy and is_cse(src.headers):
            # help.aliyun.com/en/oss/user-guide/0042-00000309
            raise _cse_error("0042-00000309", "The source object of UploadPartCopy uses client-side encryption.")

    def object_headers(self, e: Entry, *, crc: bool = True, bucket: str = "") -> list[tuple[str, str]]:
        h = [("Content-Type", e.headers.get("content-type", "application/octet-stream")),
             ("ETag", f'"{e.etag}"'), ("Last-Modified", http_date(e.mtime)), ("Accept-Ranges", "bytes"),
             ("x-oss-object-type", e.type), ("x-oss-storage-class", e.storage_class)]
        h += self._restore_header(bucket, e)
        if crc:
            h += _crc_header(e.crc64)
        if e.type == "Appendable":
            h.append(("x-oss-next-append-position", str(e.size)))
        for k, v in e.headers.items():
            if k == "content-type":
                continue
            name = k if k.startswith("x-oss-") else "-".join(p.capitalize() for p in k.split("-"))
            h.append((name, v))
        return h

    @staticmethod
    def _max(p: dict[str, str], name: str, default: int, cap: int) -> int:
        v = p.get(name, "")
        if v == "":
            return default
        try:
            n = int(v)
        except ValueError:
            n = -1
        if n < 0 or n > cap:
            raise OssError(400, "InvalidArgument", f"Argument {name} must be an integer between 0 and {cap}.",
                           ArgumentName=name, ArgumentValue=v)
        return n

    @staticmethod
    def _xml(parts: list[str], status: int = 200, headers: list[tuple[str, str]] | None = None) -> Resp:
        return Resp(status, [("Content-Type", "application/xml")] + (headers or []), "".join(parts).encode("utf-8"))
