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
  0002-00000429), as is a skewed ``x-amz-date``.
- The S3 names of OSS headers are accepted and answered: ``x-amz-meta-*`` is the object's user
  metadata (``x-oss-meta-*``), ``x-amz-copy-source*`` and ``x-amz-metadata-directive`` name a
  copy, ``x-amz-storage-class`` and ``x-amz-acl`` the class and ACL.
- aws-chunked uploads (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``) are refused: the page above has
  AWS SDK users turn chunked encoding off.

Not modelled: the payload hash is part of the signature as sent, but is not compared with the
body (bodies stream into storage); presigned S3 URLs (refused as unsigned).
"""
from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from typing import Iterable
from urllib.parse import unquote_to_bytes

from .auth import MAX_SKEW, _b, _v4_encode
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
            "x-amz-copy-source-if-unmodified-since": "x-oss-copy-source-if-unmodified-since"}
_SPACES = re.compile(r"\s+")


def signed_for_s3(headers: dict[str, str]) -> bool:
    """Whether a request (lower-case header names) carries an S3 ``Authorization``."""
    auth = headers.get("authorization", "")
    return auth.startswith(V4) or auth.startswith(V2)


def oss_headers(headers: dict[str, str]) -> dict[str, str]:
    """An S3 request's headers under the OSS names the operations read; other ``x-amz-*``
    headers (date, payload hash) served the signature only and are left out."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name.startswith("x-amz-meta-"):
            out["x-oss-meta-" + name[len("x-amz-meta-"):]] = value
        elif name in _RENAMED:
            if name == _COPY and not value.startswith("/"):
                value = "/" + value             # S3 allows "bucket/key", OSS names "/bucket/key"
            out[_RENAMED[name]] = value
        elif not name.startswith("x-amz-") and not name.startswith("x-oss-"):
            out[name] = value
    return out


def s3_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """An answer's headers as an S3 client reads them: user metadata as ``x-amz-meta-*``."""
    return [("x-amz-meta-" + name[11:], value) if name.lower().startswith("x-oss-meta-")
            else (name, value) for name, value in headers]


def verify(credentials: dict[str, str], enabled: bool, method: str, raw_path: str,
           params: list[tuple[str, str]], headers: dict[str, str]) -> str:
    """Check an S3 request's ``AWS4-HMAC-SHA256`` header signature (``params`` form-decoded in
    the order received, ``headers`` as received, lower-case names); the access key id.
    OssError as OSS answers otherwise (see the module docstring)."""
    auth = headers.get("authorization", "")
    if not enabled or not auth.startswith(V4):
        ec = "0002-00000033" if auth.startswith(V4) else "0002-00000032"
        raise OssError(403, "AccessDenied", "The authentication mode compatible with Amazon S3 "
                       "is not enabled for this account.", EC=ec)
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
    if not payload:
        raise OssError(400, "InvalidArgument", "Missing required header x-amz-content-sha256.")
    sk = credentials.get(ak)
    if sk is None:
        raise OssError(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not "
                       "exist in our records.", OSSAccessKeyId=ak)
    names = signed.split(";")
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
    if not hmac.compare_digest(hmac.new(key, sts.encode(), hashlib.sha256).hexdigest(), sig):
        raise OssError(403, "SignatureDoesNotMatch", "The request signature we calculated does "
                       "not match the signature you provided.", StringToSign=sts,
                       SignatureProvided=sig, OSSAccessKeyId=ak, EC="0002-00000429")
    return ak
