"""Who may call the local KMS: the POP (RPC) signature, Timestamp, SecurityToken and
SignatureNonce checks a real KMS makes before any action, with its error codes.

Why it exists: our KMS client and oss2's ``AliKMSProvider`` must be signed and checked exactly as
the real gateway checks them (SPEC §C), and these checks are the same for every action.
"""
from __future__ import annotations

import base64
import collections
import datetime as _dt
import hashlib
import hmac
import threading
import time
from typing import Callable
from urllib.parse import quote

from .kms_errors import KmsApiError, missing

MAX_CLOCK_SKEW = 15 * 60          # seconds; the documented tolerance of the POP gateway
_NONCE_TTL = 2 * MAX_CLOCK_SKEW


def pct(s: str) -> str:
    """RFC 3986 percent-encoding as POP signing wants it (unreserved: A-Z a-z 0-9 - _ . ~)."""
    return quote(s, safe="-_.~")


def string_to_sign(method: str, params: dict[str, str]) -> str:
    """SPEC C.2: METHOD&%2F&pct(sorted canonical query), every param except Signature."""
    items = sorted((pct(k), pct(v)) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{k}={v}" for k, v in items)
    return f"{method}&{pct('/')}&{pct(canonical)}"


def rpc_signature(secret: str, sts: str) -> str:
    """Base64 HMAC-SHA1 of the string to sign under ``secret + "&"`` (SPEC C.2)."""
    mac = hmac.new((secret + "&").encode(), sts.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


class RpcAuthenticator:
    """Checks one request's signature parameters against ``credentials`` (AccessKeyId ->
    secret) and ``sts_tokens`` (temporary AccessKeyId -> SecurityToken, the reverse mapping is
    accepted too); remembers nonces for twice the clock skew so none is used twice."""

    def __init__(self, credentials: dict[str, str], sts_tokens: dict[str, str]) -> None:
        self.credentials = credentials
        self.sts_tokens = sts_tokens
        #: set by the emulator when it issues expiring STS credentials (``emulator/sts.py``)
        self.token_expired: Callable[[str], bool] | None = None
        self._lock = threading.Lock()
        self._nonces: collections.OrderedDict[str, float] = collections.OrderedDict()

    def authenticate(self, method: str, params: dict[str, str]) -> None:
        """Raise the KmsApiError a real KMS answers when the request is not properly signed."""
        self._check_present(params)
        self._check_signature(method, params)
        now = time.time()
        self._check_timestamp(params["Timestamp"], now)
        self._check_token(params["AccessKeyId"], params.get("SecurityToken"))
        self._check_nonce(params["SignatureNonce"], now)

    @staticmethod
    def _check_present(params: dict[str, str]) -> None:
        for name in ("AccessKeyId", "Signature", "SignatureMethod", "SignatureVersion",
                     "SignatureNonce", "Timestamp"):
            if not params.get(name):
                if name.startswith("Signature") and name != "SignatureNonce":
                    raise KmsApiError(400, "IncompleteSignature",
                                      f"The request signature does not conform to Aliyun standards: {name} missing.")
                raise missing(name)
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            raise KmsApiError(400, "IncompleteSignature",
                              "The request signature does not conform to Aliyun standards.")

    def _check_signature(self, method: str, params: dict[str, str]) -> None:
        secret = self.credentials.get(params["AccessKeyId"])
        if secret is None:
            raise KmsApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        sts = string_to_sign(method, params)
        if not hmac.compare_digest(rpc_signature(secret, sts).encode(), params["Signature"].encode()):
            # The client compares the text after ':' with its own string-to-sign (SPEC C.4).
            raise KmsApiError(400, "SignatureDoesNotMatch",
                              "Specified signature is not matched with our calculation. server string to sign is:" + sts)

    @staticmethod
    def _check_timestamp(timestamp: str, now: float) -> None:
        try:
            ts = _dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=_dt.timezone.utc).timestamp()
        except ValueError:
            raise KmsApiError(400, "IllegalTimestamp",
                              'The input parameter "Timestamp" that is mandatory for processing this request is not supplied.') from None
        if abs(now - ts) > MAX_CLOCK_SKEW:
            raise KmsApiError(400, "IllegalTimestamp",
                              "Specified time stamp or date value is expired.")

    def _check_token(self, ak: str, token: str | None) -> None:
        if token and self.token_expired is not None and self.token_expired(token):
            # the POP gateway's public error (emulator/sts.py cites the source)
            raise KmsApiError(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")
        expected = self.sts_tokens.get(ak)
        if expected is None and token is not None and self.sts_tokens.get(token) == ak:
            expected = token
        if expected is not None and token != expected:
            raise KmsApiError(400, "InvalidSecurityToken.MismatchWithAccessKey",
                              "Specified SecurityToken mismatch with the AccessKey.")
        if expected is None and token:
            raise KmsApiError(400, "InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed.")

    def _check_nonce(self, nonce: str, now: float) -> None:
        with self._lock:
            # insertion order == time order, so expired nonces are at the front
            while self._nonces:
                oldest, t = next(iter(self._nonces.items()))
                if now - t <= _NONCE_TTL:
                    break
                del self._nonces[oldest]
            if nonce in self._nonces:
                raise KmsApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
            self._nonces[nonce] = now
