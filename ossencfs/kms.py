"""KMS master keys: wrap and unwrap object data keys with an Alibaba Cloud KMS CMK.

Why this is not oss2's ``AliKMSProvider``: that one crashes when given an STS token
(SPEC C.5(b)), writes only the oss2 flavour, cannot read Java/Go-flavour objects, has no retry
and lets HTTP(S)_PROXY break a loopback KMS. This module uses the same client (aliyunsdkcore
``AcsClient`` + aliyunsdkkms request classes) so the wire format is exactly the SDK's, and adds:

* both header flavours (SPEC A.3, A.10): ``oss2`` writes ``b64(CiphertextBlob)`` ("double
  base64"), ``java`` writes the CiphertextBlob itself (Java/Go SDKs); reading detects the
  flavour per object and also reads the legacy oss2 ``kms`` form (SPEC A.8);
* STS tokens (``SecurityToken`` is added to the signed query, as aliyunsdkcore's STS signer does,
  without letting ``ALIYUN_ACCESS_KEY_*`` environment variables take over the credentials);
* an encryption context (oss2's ``{"x-passphrase": p}`` convention or any string map);
* bounded concurrency, and retries with exponential backoff + full jitter for Throttling, 5xx
  and network errors (aliyunsdkcore retries none of them for KMS, SPEC C.4), all within one
  bounded wait: ``retry_deadline`` seconds, counting the connect/read timeouts of the attempt
  that would follow, so a KMS that accepts connections but never answers costs one read timeout;
* an outage (``KeyServiceUnavailableError``, EIO) is remembered for ``outage_ttl`` seconds:
  every call in that time fails at once instead of waiting again, so a burst of reads during an
  outage costs one wait, not one per read;
* typed errors that name the CMK: ``KeyUnavailableError`` (EACCES: disabled / deleted / denied
  CMK, rejected credentials), ``KeyServiceUnavailableError`` (EIO: unreachable, timed out, still
  throttled or 5xx), ``WrongKeyError`` (KMS cannot decrypt this blob), ``FormatError``.

The data-key cache is the KeyRing's job (``ossencfs.envelope.keys``), not this module's.
"""
from __future__ import annotations

import base64
import binascii
import collections
import ipaddress
import json
import logging
import random
import re
import threading
import time
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit
from urllib.request import getproxies_environment
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # (not in typeshed)

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkkms.request.v20160120 import (DecryptRequest, DescribeKeyRequest, EncryptRequest,
                                            GenerateDataKeyRequest)

from .envelope.ctr import iv_to_counter, new_iv
from .envelope.format import CEK_AES_CTR, WRAP_KMS, WRAP_LEGACY_KMS, CryptoHeaders
from .envelope.keys import ContentMaterial, material_from_plaintext
from .errors import FormatError, KeyServiceUnavailableError, KeyUnavailableError, OssEncError, WrongKeyError

log = logging.getLogger(__name__)

# aliyunsdkcore logs request params (Encrypt's Plaintext) and response bodies (Decrypt's
# Plaintext = a data key) at DEBUG, and every server error at ERROR. We report failures
# ourselves, so keep its client logger quiet whatever level the application configures.
logging.getLogger("aliyunsdkcore.client").setLevel(logging.CRITICAL)

FLAVOURS = ("oss2", "java")
_B64_TEXT = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_UUID_PREFIX = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_RETRYABLE_CODES = {"Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable",
                    "SerivceUnavailableTemporary", "ServiceUnavailableTemporary", "InternalFailure",
                    "InternalError"}
_CREDENTIAL_CODES_PREFIX = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidAccessKeySecret",
                            "IncompleteSignature", "InvalidSecurityToken", "IllegalTimestamp",
                            "SignatureNonceUsed", "Forbidden.AccessKey")
_DISABLED_CODES = {"Rejected.Disabled"}
_PENDING_DELETION_CODES = {"Rejetced.PendingDeletion", "Rejected.PendingDeletion"}
_QUERY_RE = re.compile(r"\?[^\s)'\"]*")
_NOT_FOUND_CODES = {"Forbidden.KeyNotFound", "Forbidden.AliasNotFound", "Forbidden.ResourceNotFound"}


class _Retryable(Exception):
    """A transient failure worth another attempt; carries the error to raise if attempts run out.
    ``network``: no answer at all (refused, reset, timed out), so an attempt may cost the timeouts."""

    def __init__(self, final: KeyServiceUnavailableError, network: bool = False) -> None:
        super().__init__(str(final))
        self.final = final
        self.network = network


def context_string(context: Mapping[str, str] | None) -> str:
    """The EncryptionContext parameter: "" for none (oss2 sends it empty), else compact JSON.

    For ``{"x-passphrase": p}`` this is byte-identical to what oss2's AliKMSProvider sends.
    """
    if not context:
        return ""
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def proxies_for(url: str) -> dict[str, str | None]:
    """The proxy map to hand to AcsClient explicitly.

    aliyunsdkcore reads HTTP(S)_PROXY itself and ignores NO_PROXY (SPEC C.5(a)); passing a
    non-empty map stops that. Loopback never goes through a proxy; NO_PROXY is honoured.
    """
    host = urlsplit(url).hostname or ""
    env = getproxies_environment()
    if _is_loopback(host) or proxy_bypass_environment(host, env):
        return {"http": None, "https": None}
    return {"http": env.get("http"), "https": env.get("https")}


def blob_key_id(blob: str) -> str | None:
    """The CMK UUID a real KMS blob starts with once base64-decoded (SPEC A.8), if visible."""
    try:
        text = base64.b64decode(blob, validate=True)[:36].decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    m = _UUID_PREFIX.match(text)
    return m.group(0) if m else None


def looks_oss2_flavour(header: str) -> bool:
    """SPEC A.10 reading rule 2: one b64decode of an oss2 header is itself pure base64 text;
    a Java/Go header decodes to the raw blob bytes (real blobs contain the key UUID's '-')."""
    try:
        raw = base64.b64decode(header, validate=True)
        text = raw.decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return len(text) % 4 == 0 and bool(_B64_TEXT.match(text))


def _b64decode_plaintext(pt: str, what: str, cmk: str) -> bytes:
    """Decrypt's Plaintext is b64(raw key / raw IV) in every flavour (SPEC A.3)."""
    try:
        return base64.b64decode(pt, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"CMK {cmk}: the {what} KMS returned is not base64") from None


class KmsMasterKey:
    """A KMS CMK as a ``MasterKey`` (see ``ossencfs.envelope.keys``). Thread-safe; calls block."""

    wrap_alg = WRAP_KMS

    def __init__(self, cmk_id: str, region: str, access_key_id: str, access_key_secret: str, *,
                 security_token: str | None = None, endpoint: str | None = None,
                 flavour: str = "oss2", context: dict[str, str] | None = None,
                 max_concurrency: int = 8, matdesc: dict[str, str] | None = None,
                 retries: int = 6, retry_base: float = 0.2, retry_cap: float = 5.0,
                 retry_deadline: float = 10.0, connect_timeout: int = 3, read_timeout: int = 5,
                 outage_ttl: float = 5.0) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
        if not cmk_id:
            raise ValueError("cmk_id is required")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.cmk_id = cmk_id
        self.region = region
        self.flavour = flavour
        self.context = dict(context) if context else None
        self._context_param = context_string(context)
        self.matdesc = dict(matdesc) if matdesc else None
        self.name = f"kms:{cmk_id}"
        endpoint = endpoint.rstrip("/") if endpoint else None   # the SDK appends "/?..." itself
        self.endpoint = endpoint
        self._token = security_token
        self._retries = retries
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._retry_deadline = retry_deadline
        self._attempt_timeout = connect_timeout + read_timeout
        self._outage_ttl = outage_ttl
        self._outage: tuple[KeyServiceUnavailableError, float] | None = None    # (error, until)
        self._sem = threading.BoundedSemaphore(max_concurrency)
        self._rng = random.Random()
        self._calls_lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        url = endpoint if endpoint and "://" in endpoint else f"https://{endpoint or f'kms.{region}.aliyuncs.com'}"
        # ak/secret given explicitly, so ALIYUN_ACCESS_KEY_* env vars never replace them.
        self._client = AcsClient(access_key_id, access_key_secret, region, auto_retry=False,
                                 connect_timeout=connect_timeout, timeout=read_timeout,
                                 pool_size=max_concurrency, proxy=proxies_for(url))
        if endpoint:
            # A scheme in the endpoint overrides the requests' https default (SPEC C.5).
            self._client.add_endpoint(region, "kms", endpoint)

    def __repr__(self) -> str:
        return f"KmsMasterKey({self.cmk_id!r}, region={self.region!r}, flavour={self.flavour!r})"

    # ---- MasterKey protocol -----------------------------------------------------------------
    def can_unwrap(self, h: CryptoHeaders) -> bool:
        """KMS-wrapped (current or legacy) and, when both sides carry a matdesc, the same one.

        A KMS blob names its own CMK, so any KMS master key with access can open it; matdesc only
        narrows the choice when it was configured.
        """
        if h.wrap_alg not in (WRAP_KMS, WRAP_LEGACY_KMS):
            return False
        return self.matdesc is None or h.matdesc is None or h.matdesc == self.matdesc

    def wrap_new(self) -> tuple[ContentMaterial, CryptoHeaders]:
        """A fresh data key from GenerateDataKey and a fresh IV wrapped by Encrypt(b64(iv))."""
        key_b64, key_blob = self._generate_data_key()
        key = _b64decode_plaintext(key_b64, "data key", self.cmk_id)
        if len(key) != 32:
            raise KeyUnavailableError(f"CMK {self.cmk_id}: GenerateDataKey returned {len(key)} bytes, not 32")
        iv = new_iv()
        iv_blob = self._encrypt(base64.b64encode(iv).decode())
        return ContentMaterial(key=key, counter0=iv_to_counter(iv)), self._headers(key_blob, iv_blob)

    def wrap(self, material: ContentMaterial) -> CryptoHeaders:
        """The header set for an *existing* data key (re-wrap); never for new content."""
        key_blob = self._encrypt(base64.b64encode(material.key).decode())
        iv_blob = self._encrypt(base64.b64encode(material.iv).decode())
        return self._headers(key_blob, iv_blob)

    def claims(self, h: CryptoHeaders) -> bool:
        """Whether the object's key blob names this CMK, so the KeyRing tries it first."""
        for style in (True, False):
            blob = self._blob_from_header(h.wrapped_key, style)
            if blob is not None and blob_key_id(blob) == self.cmk_id:
                return True
        return False

    def _headers(self, key_blob: str, iv_blob: str) -> CryptoHeaders:
        if self.flavour == "oss2":
            wrapped_key = base64.b64encode(key_blob.encode()).decode()
            wrapped_start = base64.b64encode(iv_blob.encode()).decode()
        else:
            wrapped_key, wrapped_start = key_blob, iv_blob
        return CryptoHeaders(wrapped_key=wrapped_key, wrapped_start=wrapped_start, wrap_alg=WRAP_KMS,
                             cek_alg=CEK_AES_CTR, legacy=False, matdesc=self.matdesc)

    def unwrap(self, h: CryptoHeaders) -> ContentMaterial:
        """Decrypt the object's data key and IV (2 KMS calls; the KeyRing caches the result)."""
        if h.wrap_alg == WRAP_LEGACY_KMS:
            return self._unwrap_legacy(h)
        if h.wrap_alg != WRAP_KMS:
            raise WrongKeyError(f"CMK {self.cmk_id} cannot unwrap wrap-alg {h.wrap_alg!r}")
        oss2_style = looks_oss2_flavour(h.wrapped_key)
        styles = (True, False) if oss2_style else (False, True)
        last: WrongKeyError | None = None
        for style in styles:
            try:
                key_blob = self._blob_from_header(h.wrapped_key, style)
                if key_blob is None:
                    continue
                key_b64 = self._decrypt(key_blob)
            except WrongKeyError as e:
                last = e
                continue
            key = _b64decode_plaintext(key_b64, "data key", self.cmk_id)
            start_blob = self._blob_from_header(h.wrapped_start, style)
            if start_blob is None:
                raise FormatError("the start header is not in the same form as the key header")
            iv = _b64decode_plaintext(self._decrypt(start_blob), "IV", self.cmk_id)
            return material_from_plaintext(h, key, iv)
        raise last or WrongKeyError("the key header is not a KMS ciphertext blob")

    # ---- extras -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """DescribeKey's KeyMetadata; lets a CLI check the CMK before the first write."""
        req_factory = DescribeKeyRequest.DescribeKeyRequest

        def build() -> Any:
            req = req_factory()
            req.set_KeyId(self.cmk_id)
            return req

        return self._call("DescribeKey", build, self.cmk_id)["KeyMetadata"]

    # ---- internals --------------------------------------------------------------------------
    def _unwrap_legacy(self, h: CryptoHeaders) -> ContentMaterial:
        """oss2 <= 2.10: key header = blob (single base64); start decrypts to a decimal counter."""
        key = _b64decode_plaintext(self._decrypt(h.wrapped_key), "data key", self.cmk_id)
        start = self._decrypt(h.wrapped_start)
        return material_from_plaintext(h, key, start.encode("utf-8", "replace"))

    @staticmethod
    def _blob_from_header(header: str, oss2_style: bool) -> str | None:
        if not oss2_style:
            return header
        try:
            return base64.b64decode(header, validate=True).decode("ascii")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None

    def _generate_data_key(self) -> tuple[str, str]:
        def build() -> Any:
            req = GenerateDataKeyRequest.GenerateDataKeyRequest()
            req.set_KeyId(self.cmk_id)
            req.set_KeySpec("AES_256")
            req.set_NumberOfBytes(32)
            req.set_EncryptionContext(self._context_param)
            return req

        resp = self._call("GenerateDataKey", build, self.cmk_id)
        return self._field(resp, "Plaintext"), self._field(resp, "CiphertextBlob")

    def _encrypt(self, plaintext: str) -> str:
        def build() -> Any:
            req = EncryptRequest.EncryptRequest()
            req.set_KeyId(self.cmk_id)
            req.set_Plaintext(plaintext)
            req.set_EncryptionContext(self._context_param)
            return req

        return self._field(self._call("Encrypt", build, self.cmk_id), "CiphertextBlob")

    def _decrypt(self, blob: str) -> str:
        def build() -> Any:
            req = DecryptRequest.DecryptRequest()
            req.set_CiphertextBlob(blob)
            req.set_EncryptionContext(self._context_param)
            return req

        return self._field(self._call("Decrypt", build, blob_key_id(blob) or self.cmk_id), "Plaintext")

    def _field(self, resp: Mapping[str, Any], name: str) -> str:
        value = resp.get(name)
        if not isinstance(value, str) or not value:
            raise KeyUnavailableError(f"CMK {self.cmk_id}: KMS answer lacks {name}")
        return value

    def _remembered_outage(self, action: str) -> None:
        """Fail at once while a recent outage is remembered (KeyServiceUnavailableError)."""
        with self._calls_lock:
            outage = self._outage
        if outage is not None and time.monotonic() < outage[1]:
            err = KeyServiceUnavailableError(f"{outage[0]} (outage seen {self._outage_ttl:g} s ago at most; "
                                             f"{action} not attempted)")
            err.repeat = True
            raise err

    def _remember_outage(self, err: KeyServiceUnavailableError) -> KeyServiceUnavailableError:
        if self._outage_ttl > 0:
            with self._calls_lock:
                self._outage = (err, time.monotonic() + self._outage_ttl)
        return err

    def _call(self, action: str, build: Callable[[], Any], target: str) -> dict[str, Any]:
        """One KMS action with bounded concurrency and retries (fresh signature per attempt).

        Gives up when the next attempt could end after ``retry_deadline`` (for an attempt that got
        no answer, its connect + read timeouts count), and then remembers the outage."""
        self._remembered_outage(action)
        deadline = time.monotonic() + self._retry_deadline
        attempt = 0
        while True:
            req = build()
            req.set_accept_format("JSON")
            req.set_method("POST")
            if self._token:
                # What aliyunsdkcore's StsTokenSigner does for RPC: a signed query parameter.
                req.add_query_param("SecurityToken", self._token)
            with self._calls_lock:
                self.calls[action] += 1
            try:
                with self._sem:
                    body = self._client.do_action_with_exception(req)
                with self._calls_lock:
                    self._outage = None
                try:
                    doc = json.loads(body)
                except ValueError:
                    raise _Retryable(KeyServiceUnavailableError(f"CMK {target}: KMS {action} answer is not JSON")) from None
                if not isinstance(doc, dict):
                    raise KeyUnavailableError(f"CMK {target}: KMS {action} answer is not a JSON object")
                return doc
            except ServerException as e:
                err = self._map_server_error(action, e, target)
            except ClientException as e:
                err = self._map_client_error(action, e, target)
            except _Retryable as e:
                err = e
            if not isinstance(err, _Retryable):
                raise err
            attempt += 1
            delay = self._rng.uniform(0, min(self._retry_cap, self._retry_base * (2 ** attempt)))
            cost = delay + (self._attempt_timeout if err.network else 0.0)
            if attempt > self._retries or time.monotonic() + cost > deadline:
                raise self._remember_outage(err.final)
            log.debug("%s: %s failed transiently (%s); retry %d in %.2fs", self.name, action, err, attempt, delay)
            time.sleep(delay)

    def _map_server_error(self, action: str, e: ServerException, target: str) -> OssEncError | _Retryable:
        """Typed error naming the CMK (the KeyRing prefixes the object and this master's name)."""
        code = e.get_error_code() or ""
        status = e.get_http_status() or 0
        rid = e.get_request_id()
        tail = f"({code}, HTTP {status}{', request ' + rid if rid else ''})"
        cmk = f"CMK {target}"
        if code in _RETRYABLE_CODES or code.startswith("Throttling") or status >= 500:
            return _Retryable(KeyServiceUnavailableError(f"{cmk}: KMS {action} kept failing {tail}"))
        if code in _DISABLED_CODES:
            return KeyUnavailableError(f"{cmk} is disabled {tail}")
        if code in _PENDING_DELETION_CODES:
            return KeyUnavailableError(f"{cmk} is pending deletion {tail}")
        if code in _NOT_FOUND_CODES:
            return KeyUnavailableError(f"{cmk} not found (deleted, or in another region/account) {tail}")
        if code.startswith(_CREDENTIAL_CODES_PREFIX):
            # Never echo the server message here: it carries the string-to-sign, i.e. the params.
            return KeyUnavailableError(f"{cmk}: KMS rejected the credentials {tail}")
        if code.startswith("Forbidden"):
            return KeyUnavailableError(f"{cmk}: KMS denied {action} {tail}")
        if action == "Decrypt" and code.startswith("InvalidParameter"):
            return WrongKeyError(f"{cmk}: KMS cannot decrypt this wrapped key (wrong encryption "
                                 f"context, tampered header, or not a KMS blob) {tail}")
        msg = (e.get_error_msg() or "")[:200]
        return KeyUnavailableError(f"{cmk}: KMS {action} failed {tail}: {msg}")

    def _map_client_error(self, action: str, e: ClientException, target: str) -> OssEncError | _Retryable:
        code = e.get_error_code() or ""
        where = self.endpoint or f"region {self.region}"
        msg = _scrub(e.get_error_msg() or "")
        if code == "SDK.HttpError":        # refused, reset, or no answer within the timeouts
            return _Retryable(KeyServiceUnavailableError(f"CMK {target}: KMS at {where} unreachable for "
                                                         f"{action} ({_network_cause(msg)})"), network=True)
        return KeyUnavailableError(f"CMK {target}: KMS client error for {action} ({code}: {msg})")


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] [^'\")(]*")


def _network_cause(msg: str) -> str:
    """The cause in an SDK network error, without urllib3's object reprs: "[Errno 111]
    Connection refused", "read timed out", "connection closed without an answer"."""
    found = _ERRNO_TEXT.findall(msg)
    if found:
        return found[-1].strip().rstrip(".")
    low = msg.lower()
    if "timed out" in low or "timeout" in low:
        return "no answer within the timeout"
    if "aborted" in low or "remotedisconnected" in low or "reset" in low:
        return "connection closed without an answer"
    return msg


def _scrub(msg: str) -> str:
    """Drop request URLs' query strings from SDK messages: they carry Encrypt's Plaintext
    (a data key in the java flavour) and Decrypt's blob."""
    msg = _QUERY_RE.sub("?<params>", msg)
    return msg if len(msg) <= 400 else msg[:400] + "..."
