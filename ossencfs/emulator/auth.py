"""Server-side verification of OSS signatures V1 (header and presigned URL) and V4 (SPEC D.2/D.3).

The string to sign is rebuilt from what arrived on the wire (decoded key, decoded query,
header values as sent) so that a client signing anything differently is rejected exactly as
real OSS would reject it: 403 with the (status, Code) pairs oss2 maps to its exception classes.
"""
from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import time
from dataclasses import dataclass
from email.utils import parsedate_tz, mktime_tz

from .xmlout import OssError

MAX_SKEW = 15 * 60
# Longest validity of a V4 presigned URL: x-oss-expires is 1..604800 s (7 days), error page
# https://www.alibabacloud.com/help/en/oss/support/0002-00000232
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600

SUBRESOURCES = frozenset("""
acl uploads location cors logging website referer lifecycle delete append tagging objectMeta
uploadId partNumber security-token position symlink x-oss-process response-content-type
response-content-language response-expires response-cache-control response-content-disposition
response-content-encoding restore callback callback-var stat bucketInfo versions versioning
versionId encryption policy requestPayment qos qosInfo x-oss-traffic-limit x-oss-request-payer
sequential continuation-token inventory inventoryId worm wormId wormExtend comp live status vod
startTime endTime img style styleName replication replicationProgress replicationLocation cname
asyncFetch transferAcceleration regionList metaQuery resourceGroup x-oss-async-process group link
objectInfo x-oss-ac-source-ip x-oss-ac-subnet-mask x-oss-ac-vpc-id x-oss-ac-forward-allow
x-oss-write-get-object-response bucketArchiveDirectRead httpsConfig redundancyTransition
x-oss-target-redundancy-type x-oss-redundancy-transition-taskid accessPoint accessPointPolicy
publicAccessBlock x-oss-access-point-name requesterQosInfo qosRequester resourcePoolInfo
resourcePool resourcePoolBuckets
""".split())

_V4_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


@dataclass
class SignedRequest:
    """What the verifier needs from an HTTP request."""

    method: str
    bucket: str | None
    key: str
    params: list[tuple[str, str]]          # form-decoded, order as received
    headers: dict[str, str]                 # lower-case name -> value as received (latin-1 str)


def _b(v: str) -> bytes:
    """Header values arrive latin-1 decoded; recover the bytes the client signed."""
    try:
        return v.encode("latin-1")
    except UnicodeEncodeError:
        return v.encode("utf-8")


def _v4_encode(raw: bytes, keep_slash: bool) -> str:
    out = []
    for c in raw:
        if c in _V4_SAFE or (keep_slash and c == 0x2F):
            out.append(chr(c))
        else:
            out.append("%%%02X" % c)
    return "".join(out)


def _check_skew(ts: float | None, what: str) -> None:
    if ts is None:
        raise OssError(403, "AccessDenied", f"Invalid or missing {what} header.")
    if abs(time.time() - ts) > MAX_SKEW:
        raise OssError(403, "RequestTimeTooSkewed",
                       "The difference between the request time and the current time is too large.",
                       RequestTime=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts)),
                       ServerTime=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))


def _check_v4_scope(day: str, region: str, product: str, date_time: str, want_region: str | None) -> None:
    """The V4 credential scope ``<day>/<region>/<product>`` must name this service, as OSS checks it.

    Answers as real OSS does (400 InvalidArgument): a region other than the bucket's region id
    ("Invalid signing region in Authorization header.", EC 0002-00000226, seen in
    aliyun/alibabacloud-oss-go-sdk-v2 issue 29; pages 0002-00000226/-228: the ``oss-`` prefix is
    not allowed either), a product other than ``oss`` ("Invalid signing product in Authorization
    header.", EC 0002-00000227, aliyun/alibabacloud-oss-python-sdk-v2 issue 74), and a day that is
    not the day of x-oss-date (page 0002-00000212: the SignDate is the signing day; message
    modelled on the two above).
    """
    if product != "oss":
        raise OssError(400, "InvalidArgument", "Invalid signing product in Authorization header.",
                       EC="0002-00000227")
    if want_region is not None and region != want_region:
        raise OssError(400, "InvalidArgument", "Invalid signing region in Authorization header.",
                       EC="0002-00000226")
    if len(day) != 8 or not day.isdigit() or day != date_time[:8]:
        raise OssError(400, "InvalidArgument", "Invalid signing date in Authorization header.",
                       EC="0002-00000212")


class Verifier:
    """Checks a request against configured credentials; returns the access key id.

    ``region`` is the V4 region id requests must be signed for (``cn-hangzhou``; an
    ``oss-`` prefix as in GetBucketLocation is removed); None accepts any region.
    """

    def __init__(self, credentials: dict[str, str], sts_tokens: dict[str, str] | None = None,
                 region: str | None = None) -> None:
        self.credentials = dict(credentials)
        self.sts_tokens = dict(sts_tokens or {})
        self.region = region.removeprefix("oss-") if region else None

    def secret(self, ak: str, token: str | None) -> str:
        """The secret of access key ``ak`` sent with STS ``token`` (None: none sent); OssError
        403 InvalidAccessKeyId / InvalidSecurityToken as OSS answers otherwise."""
        sk = self.credentials.get(ak)
        if sk is None:
            raise OssError(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records.",
                           OSSAccessKeyId=ak)
        want = self.sts_tokens.get(ak)
        if want is not None and token != want:
            raise OssError(403, "InvalidSecurityToken", "The security token you provided is invalid.")
        if want is None and token:
            raise OssError(403, "InvalidAccessKeyId", "The access key id is not an STS key but a token was sent.",
                           OSSAccessKeyId=ak)
        return sk

    def verify(self, req: SignedRequest) -> str:
        auth = req.headers.get("authorization", "")
        if auth.startswith("OSS4-HMAC-SHA256 "):
            return self._verify_v4(req, auth)
        if auth.startswith("OSS "):
            return self._verify_v1(req, auth)
        q = dict(req.params)
        if "OSSAccessKeyId" in q and "Signature" in q and "Expires" in q:
            return self._verify_v1_url(req, q)
        if q.get("x-oss-signature-version") == "OSS4-HMAC-SHA256" and "x-oss-signature" in q:
            return self._verify_v4_url(req, q)
        if auth:
            raise OssError(400, "InvalidArgument", "Authorization header is invalid.")
        raise OssError(403, "AccessDenied", "You have no right to access this object because of bucket acl.")

    # ---- V1 ------------------------------------------------------------------------------
    def _resource(self, req: SignedRequest, skip: frozenset[str] = frozenset()) -> bytes:
        res = "/" if not req.bucket else f"/{req.bucket}/{req.key}"
        sub = sorted((k, v) for k, v in req.params if k in SUBRESOURCES and k not in skip)
        if sub:
            res += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
        return res.encode("utf-8")

    def _oss_headers(self, req: SignedRequest) -> bytes:
        items = sorted((k, v) for k, v in req.headers.items() if k.startswith("x-oss-"))
        return b"".join(k.encode() + b":" + _b(v) + b"\n" for k, v in items)

    def _v1_check(self, req: SignedRequest, ak: str, sig: str, date: str, sk: str) -> None:
        sts = b"\n".join([req.method.encode(), _b(req.headers.get("content-md5", "")),
                          _b(req.headers.get("content-type", "")), _b(date),
                          self._oss_headers(req) + self._resource(req)])
        want = base64.b64encode(hmac.new(sk.encode("utf-8"), sts, hashlib.sha1).digest()).decode()
        if not hmac.compare_digest(want, sig):
            raise OssError(403, "SignatureDoesNotMatch",
                           "The request signature we calculated does not match the signature you provided.",
                           StringToSign=sts.decode("utf-8", "replace"), SignatureProvided=sig,
                           OSSAccessKeyId=ak)

    def _verify_v1(self, req: SignedRequest, auth: str) -> str:
        cred = auth[4:].strip()
        ak, sep, sig = cred.rpartition(":")
        if not sep:
            raise OssError(400, "InvalidArgument", "Authorization header is invalid.")
        date = req.headers.get("x-oss-date") or req.headers.get("date", "")
        parsed = parsedate_tz(date) if date else None
        _check_skew(mktime_tz(parsed) if parsed else None, "Date")
        sk = self.secret(ak, req.headers.get("x-oss-security-token"))
        self._v1_check(req, ak, sig, date, sk)
        return ak

    def _verify_v1_url(self, req: SignedRequest, q: dict[str, str]) -> str:
        ak, expires = q["OSSAccessKeyId"], q["Expires"]
        try:
            exp = int(expires)
        except ValueError:
            raise OssError(403, "AccessDenied", "Invalid Expires.") from None
        if exp < time.time():
            raise OssError(403, "AccessDenied", "Request has expired.", Expires=expires)
        sk = self.secret(ak, q.get("security-token"))
        self._v1_check(req, ak, q["Signature"], expires, sk)
        return ak

    # ---- V4 ------------------------------------------------------------------------------
    def _verify_v4(self, req: SignedRequest, auth: str) -> str:
        fields: dict[str, str] = {}
        for part in auth[len("OSS4-HMAC-SHA256 "):].split(","):
            k, _, v = part.strip().partition("=")
            fields[k] = v
        cred = fields.get("Credential", "")
        sig = fields.get("Signature", "")
        pieces = cred.split("/")
        if len(pieces) != 5 or pieces[4] != "aliyun_v4_request" or not sig:
            raise OssError(400, "InvalidArgument", "Authorization header is invalid.")
        ak, day, region, product, _ = pieces
        date_time = req.headers.get("x-oss-date", "")
        try:
            ts = calendar.timegm(time.strptime(date_time, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            ts = None
        _check_skew(ts, "x-oss-date")
        _check_v4_scope(day, region, product, date_time, self.region)
        payload = req.headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
        if payload != "UNSIGNED-PAYLOAD":
            raise OssError(400, "InvalidArgument", "x-oss-content-sha256 must be UNSIGNED-PAYLOAD.")
        sk = self.secret(ak, req.headers.get("x-oss-security-token"))
        self._v4_check(req, ak, sk, day, region, product, date_time, fields.get("AdditionalHeaders", ""),
                       payload, sig, req.params)
        return ak

    def _verify_v4_url(self, req: SignedRequest, q: dict[str, str]) -> str:
        pieces = q.get("x-oss-credential", "").split("/")
        if len(pieces) != 5 or pieces[4] != "aliyun_v4_request":
            raise OssError(400, "InvalidArgument", "x-oss-credential is invalid.")
        ak, day, region, product, _ = pieces
        date_time = q.get("x-oss-date", "")
        try:
            ts = calendar.timegm(time.strptime(date_time, "%Y%m%dT%H%M%SZ"))
            expires = int(q.get("x-oss-expires", ""))
        except ValueError:
            raise OssError(403, "AccessDenied", "Invalid x-oss-date or x-oss-expires.") from None
        _check_v4_scope(day, region, product, date_time, self.region)
        if not 1 <= expires <= MAX_PRESIGN_EXPIRES:      # page 0002-00000232 (8 days is refused)
            raise OssError(400, "InvalidArgument", "x-oss-expires is invalid: it must be 1 to 604800 seconds.",
                           EC="0002-00000232")
        if ts + expires < time.time():
            raise OssError(403, "AccessDenied", "Request has expired.")
        sk = self.secret(ak, q.get("x-oss-security-token"))
        params = [(k, v) for k, v in req.params if k != "x-oss-signature"]
        self._v4_check(req, ak, sk, day, region, product, date_time, q.get("x-oss-additional-headers", ""),
                       "UNSIGNED-PAYLOAD", q["x-oss-signature"], params)
        return ak

    def _v4_check(self, req: SignedRequest, ak: str, sk: str, day: str, region: str, product: str,
                  date_time: str, additional_raw: str, payload: str, sig: str,
                  params: list[tuple[str, str]]) -> None:
        additional = sorted(h.strip().lower() for h in additional_raw.split(";") if h.strip())
        uri = "/" if not req.bucket else f"/{req.bucket}/{req.key}"
        canon_uri = _v4_encode(uri.encode("utf-8"), True)
        enc = sorted((_v4_encode(k.encode("utf-8"), False), _v4_encode(v.encode("utf-8"), False))
                     for k, v in params)
        canon_query = "&".join(f"{k}={v}" if v else k for k, v in enc)
        signed = sorted((k, v) for k, v in req.headers.items()
                        if k.startswith("x-oss-") or k in ("content-type", "content-md5") or k in additional)
        canon_headers = b"".join(k.encode() + b":" + _b(v) + b"\n" for k, v in signed)
        creq = b"\n".join([req.method.encode(), canon_uri.encode(), canon_query.encode(),
                           canon_headers, ";".join(additional).encode(), payload.encode()])
        scope = f"{day}/{region}/{product}/aliyun_v4_request"
        sts = f"OSS4-HMAC-SHA256\n{date_time}\n{scope}\n{hashlib.sha256(creq).hexdigest()}"
        key = hmac.new(("aliyun_v4" + sk).encode("utf-8"), day.encode(), hashlib.sha256).digest()
        for part in (region, product, "aliyun_v4_request"):
            key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
        want = hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig):
            raise OssError(403, "SignatureDoesNotMatch",
                           "The request signature we calculated does not match the signature you provided.",
                           StringToSign=sts, SignatureProvided=sig, OSSAccessKeyId=ak,
                           CanonicalRequest=creq.decode("utf-8", "replace"))
