"""Amazon S3-compatible requests, answered as OSS answers them for an account that has
S3-compatible access (help.aliyun.com/en/oss/developer-reference/use-aws-sdks-to-access-oss).

Why it exists: ``scripts/bench_mounts.py`` compares the mount with the S3 tools people point at
OSS (s3fs-fuse, the project ossfs 1.x is a fork of, and rclone), run against this emulator.
ossencfs itself never sends these requests.

What real OSS does and this models, the stricter reading where the pages leave room:
- S3-compatible authentication is off until technical support enables it: a V4 request is
  refused with EC 0002-00000033, a V2 one with 0002-00000032 (both 403). The emulator refuses
  both unless started with ``s3_compat`` (``--s3-compat``), and V2 always.
- Only header-signed ``AWS4-HMAC-SHA256`` (page 0002-00000411: "OSS only accepts
  AWS4-HMAC-SHA256"); a recomputed signature that differs is 403 SignatureDoesNotMatch (page
  0002-00000429), as is a skewed ``x-amz-date``. As S3 requires: ``host`` and ``x-amz-date``
  are signed, and so is every ``x-amz-*`` / ``x-oss-*`` header sent (403 AccessDenied
  otherwise: a header added after signing, such as a copy source, changes nothing), and a
  hexadecimal ``x-amz-content-sha256`` must be the body's (400 XAmzContentSHA256Mismatch).
- The scope's region: the bucket's region id, or ``us-east-1``, which the page's AWS SDK 2.x
  example (``Region.AWS_GLOBAL``) and s3fs and rclone by default sign with.
- STS: ``x-amz-security-token`` is checked as ``x-oss-security-token`` is.
- The S3 names of OSS headers are accepted and answered: ``x-amz-meta-*`` is the object's user
  metadata (``x-oss-meta-*``), ``x-amz-copy-source*`` and ``x-amz-metadata-directive`` name a
  copy, ``x-amz-storage-class`` and ``x-amz-acl`` the class and ACL (OSS's values). Headers
  asking for what the emulator does not model (server-side encryption, tagging, object lock,
  website redirects) are refused (400 NotImplemented) rather than ignored.
- aws-chunked uploads (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``) are refused: the page above has
  AWS SDK users turn chunked encoding off.

Not modelled: presigned S3 URLs (refused as unsigned), S3's storage-class names.
"""
from __future__ import annotations

import calendar
import hashlib
import hmac
import io
import re
import time
from typing import Iterable
from urllib.parse import unquote_to_bytes

from .auth import MAX_SKEW, Verifier, _b, _v4_encode
from .faults import Faults, Throttle
from .request_body import BodyReader
from .xmlout import OssError

V4 = "AWS4-HMAC-SHA256 "
V2 = "AWS "

# request header (S3 name) -> the OSS header the operations read
_COPY = "x-amz-copy-source"
_RENAMED = {"x-amz-metadata-directive": "x-oss-metadata-directive",
            "x-amz-storage-class": "x-oss-storage-class",
            "x-amz-acl": "x-oss-object-acl",
            _COPY: "x-oss-copy-source",
            "x-amz-copy-source-range": "x-oss-copy-source-range",
            "x-amz-copy-source-if-match": "x-oss-copy-source-if-match",
            "x-amz-copy-source-if-none-match": "x-oss-copy-source-if-none-match",
            "x-amz-copy-source-if-modified-since": "x-oss-copy-source-if-modified-since",
            "x-amz-copy-source-if-unmodified-since": "x-oss-copy-source-if-unmodified-since",
            "x-amz-security-token": "x-oss-security-token"}
_NOT_MODELLED = ("x-amz-server-side-encryption", "x-amz-tagging", "x-amz-object-lock",
                 "x-amz-website-redirect-location")
_SPACES = re.compile(r"\s+")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
UNSIGNED = "UNSIGNED-PAYLOAD"


def signed_for_s3(headers: dict[str, str]) -> bool:
    """Whether a request (lower-case header names) carries an S3 ``Authorization``."""
    auth = headers.get("authorization", "")
    return auth.startswith(V4) or auth.startswith(V2)


def oss_headers(headers: dict[str, str]) -> dict[str, str]:
    """An S3 request's headers under the OSS names the operations read (OSS's own names
    pass as they are); the signing headers (date, payload hash) are left out."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name.startswith("x-amz-meta-"):
            out["x-oss-meta-" + name[len("x-amz-meta-"):]] = value
        elif name in _RENAMED:
            if name == _COPY and not value.startswith("/"):
                value = "/" + value             # S3 allows "bucket/key", OSS names "/bucket/key"
            out[_RENAMED[name]] = value
        elif not name.startswith("x-amz-"):
            out[name] = value
    return out


def s3_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """An answer's headers as an S3 client reads them: user metadata as ``x-amz-meta-*``."""
    return [("x-amz-meta-" + name[11:], value) if name.lower().startswith("x-oss-meta-")
            else (name, value) for name, value in headers]


def verify(verifier: Verifier, enabled: bool, method: str, raw_path: str,
           params: list[tuple[str, str]], headers: dict[str, str]) -> str:
    """Check an S3 request's ``AWS4-HMAC-SHA256`` header signature (``params`` form-decoded in
    the order received, ``headers`` as received, lower-case names) against ``verifier``'s
    credentials and region; the access key id. The payload hash is checked by
    ``checked_body``. OssError as OSS answers otherwise (see the module docstring)."""
    auth = headers.get("authorization", "")
    if not enabled or not auth.startswith(V4):
        ec = "0002-00000033" if auth.startswith(V4) else "0002-00000032"
        raise OssError(403, "AccessDenied", "The authentication mode compatible with Amazon S3 "
                       "is not enabled for this account.", EC=ec)
    for name in headers:
        if name.startswith(_NOT_MODELLED):
            raise OssError(400, "NotImplemented", f"{name} is not supported by this emulator.")
    fields = dict(p.strip().partition("=")[::2] for p in auth[len(V4):].split(","))
    scope = fields.get("Credential", "").split("/")
    signed = fields.get("SignedHeaders", "")
    sig = fields.get("Signature", "")
    if len(scope) != 5 or scope[3] != "s3" or scope[4] != "aws4_request" or not signed or not sig:
        raise OssError(400, "InvalidArgument", "Authorization header is invalid.")
    ak, day, region = scope[:3]
    amz_date = headers.get("x-amz-date", "")
    try:
        ts = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise OssError(403, "AccessDenied", "Invalid or missing x-amz-date header.") from None
    if abs(time.time() - ts) > MAX_SKEW or day != amz_date[:8]:
        raise OssError(403, "RequestTimeTooSkewed",
                       "The difference between the request time and the current time is too large.")
    payload = headers.get("x-amz-content-sha256", "")
    if payload.startswith("STREAMING-"):
        raise OssError(400, "InvalidArgument", "aws-chunked uploads are not supported; turn the "
                       "SDK's chunked encoding off.")
    if payload != UNSIGNED and not _SHA256_HEX.fullmatch(payload):
        raise OssError(400, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD "
                       "or the SHA-256 of the body in lower-case hex.")
    if verifier.region is not None and region not in (verifier.region, "us-east-1"):
        raise OssError(400, "InvalidArgument", "Invalid signing region in Authorization header.",
                       EC="0002-00000226")
    names = signed.split(";")
    unsigned = [n for n in headers if n.startswith(("x-amz-", "x-oss-")) and n not in names
                and n != "authorization"]
    if "host" not in names or "x-amz-date" not in names or unsigned:
        raise OssError(403, "AccessDenied", "There were headers present in the request which "
                       "were not signed.", HeadersNotSigned=", ".join(unsigned or ["host"]))
    sk = verifier.secret(ak, headers.get("x-amz-security-token"))
    canon_headers = b"".join(n.encode() + b":" + _b(_SPACES.sub(" ", headers.get(n, "").strip()))
                             + b"\n" for n in names)
    query = sorted((_v4_encode(k.encode(), False), _v4_encode(v.encode(), False)) for k, v in params)
    creq = b"\n".join([method.encode(), _v4_encode(unquote_to_bytes(raw_path), True).encode(),
                       "&".join(f"{k}={v}" for k, v in query).encode(), canon_headers,
                       signed.encode(), payload.encode()])
    sts = (f"AWS4-HMAC-SHA256\n{amz_date}\n{day}/{region}/s3/aws4_request\n"
           f"{hashlib.sha256(creq).hexdigest()}")
    key = ("AWS4" + sk).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    want = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(want, sig.encode("utf-8", "replace")):
        raise OssError(403, "SignatureDoesNotMatch", "The request signature we calculated does "
                       "not match the signature you provided.", StringToSign=sts,
                       SignatureProvided=sig, OSSAccessKeyId=ak, EC="0002-00000429")
    return ak


def checked_body(body: BodyReader, headers: dict[str, str]) -> BodyReader:
    """The body of a verified S3 request whose ``x-amz-content-sha256`` is a hash: read whole
    and compared (400 XAmzContentSHA256Mismatch, before the operation has any effect), then
    served again from memory. ``UNSIGNED-PAYLOAD``: ``body`` as it is."""
    payload = headers.get("x-amz-content-sha256", UNSIGNED)
    if payload == UNSIGNED:
        return body
    data = b"".join(iter(lambda: body.read(1 << 20), b""))
    if hashlib.sha256(data).hexdigest() != payload:
        raise OssError(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' "
                       "header does not match what was computed.")
    return BodyReader(io.BytesIO(data), len(data), False, Throttle(Faults()))   # throttled once
