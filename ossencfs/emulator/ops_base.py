"""Shared pieces of the emulator's OSS operations: request/response shapes, OSS rules
(key names, metadata limits, conditions, ranges) and the helpers every operation group uses.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from email.utils import parsedate_tz, mktime_tz
from typing import Callable, Protocol
from urllib.parse import unquote, unquote_to_bytes

from .storage import Entry, OpenObject, Storage, BucketState, TempObject
from .xmlout import OssError, http_date

MIN_PART = 100 * 1024
MAX_OBJECT = 5 << 30
MAX_META = 8 * 1024
OWNER_ID = "1512345678901234"
STORED_HEADERS = ("content-type", "content-encoding", "content-disposition", "cache-control",
                  "expires", "content-language")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_CHUNK = 1 << 20
_CSE = "x-oss-meta-client-side-encryption-"


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
    size = sum(len(k) + len(v) for k, v in out.items() if k.startswith("x-oss-meta-"))
    if size > MAX_META:
        raise OssError(400, "MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size.")
    return out


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


def _write_guard(h: dict[str, str], forbid: bool) -> Callable[[Entry | None], None]:
    """Checks on the current target just before a write becomes visible."""
    if_match = h.get("if-match")
    if_none = h.get("if-none-match")

    def check(cur: Entry | None) -> None:
        if forbid and cur is not None:
            raise OssError(409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten.")
        if if_match is not None and (cur is None or not _etag_matches(if_match, cur.etag)):
            raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.",
                           Condition="If-Match")
        if if_none is not None and cur is not None and _etag_matches(if_none, cur.etag):
            raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.",
                           Condition="If-None-Match")
    return check


def parse_range(spec: str, size: int, standard: bool) -> tuple[int, int] | None:
    """(start, end) inclusive for a 206, None to ignore the Range (200), or 416 InvalidRange."""
    def bad() -> None:
        if standard:
            raise OssError(416, "InvalidRange", "The requested range cannot be satisfied.",
                           RangeRequested=spec, ActualObjectSize=str(size))
        return None

    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", spec)
    if not m or (not m.group(1) and not m.group(2)):
        return bad()
    s, e = m.group(1), m.group(2)
    if s:
        start = int(s)
        end = int(e) if e else size - 1
        if e and end < start:
            return bad()
        if start >= size:
            return bad()
        if end >= size:
            if not standard and e:
                return None
            end = size - 1
        return start, end
    n = int(e)
    if n == 0 or size == 0:
        return bad()
    if n > size:
        if not standard:
            return None
        n = size
    return size - n, size - 1


class OpsBase:
    """State and helpers every operation group shares."""

    def __init__(self, storage: Storage, *, region: str = "oss-cn-hangzhou", endpoint_host: str = "127.0.0.1") -> None:
        self.st = storage
        self.region = region
        self.endpoint_host = endpoint_host

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
        """Copy the request body into ``tmp``, verifying Content-MD5 and the size limit."""
        if ctx.body.length is None and "chunked" not in ctx.headers.get("transfer-encoding", "").lower():
            raise OssError(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
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

    def object_headers(self, e: Entry, *, crc: bool = True) -> list[tuple[str, str]]:
        h = [("Content-Type", e.headers.get("content-type", "application/octet-stream")),
             ("ETag", f'"{e.etag}"'), ("Last-Modified", http_date(e.mtime)), ("Accept-Ranges", "bytes"),
             ("x-oss-object-type", e.type), ("x-oss-storage-class", e.storage_class)]
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
