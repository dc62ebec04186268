"""KMS master keys: wrap and unwrap object data keys with an Alibaba Cloud KMS CMK.

``KmsMasterKey`` is a ``MasterKey`` (``ossencfs.envelope.material``): GenerateDataKey and
Encrypt wrap, Decrypt unwraps, ReEncrypt moves blobs to another CMK without the data key
leaving KMS. Both header flavours are written and read (``blobs.py``), with an encryption
context (oss2's ``{"x-passphrase": p}`` convention or any string map); the calls themselves,
their retries and typed errors are ``calls.py``'s. ``kms_client`` is the one place a KMS client
is built.
"""
from __future__ import annotations

import base64
import concurrent.futures
import functools
from typing import Mapping, TypedDict, Unpack, cast

from aliyunsdkcore.request import RpcRequest
from aliyunsdkkms.request.v20160120 import (DecryptRequest, DescribeKeyRequest, EncryptRequest,
                                            GenerateDataKeyRequest, ReEncryptRequest)

from ..credentials import CredentialSource
from ..envelope.ctr import iv_to_counter, new_iv
from ..envelope.format import (CEK_AES_CTR, WRAP_KMS, WRAP_LEGACY_KMS, CryptoHeaders,
                               matdesc_option)
from ..envelope.material import ContentMaterial, material_from_plaintext
from ..errors import FormatError, KeyUnavailableError, WrongKeyError
from .blobs import (FLAVOURS, b64decode_plaintext, blob_from_header, blob_key_id, context_string,
                    looks_oss2_flavour)
from .calls import JsonObject, KmsCalls


@functools.cache
def _side_calls() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for the IV's call of a wrap or an unwrap (``KmsMasterKey.wrap_new``,
    ``unwrap``), sent beside the key's; how many run at once is bounded by each key's own
    ``max_concurrency`` (``KmsCalls``)."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="kms-iv")


def _abandon(call: concurrent.futures.Future[str] | None) -> None:
    """The other half of a wrap or unwrap failed: its side call is not sent if it has not
    started, else waited for (no call of ours outlives the operation that made it)."""
    if call is not None and not call.cancel():
        concurrent.futures.wait([call])


class KmsMasterKey(KmsCalls):
    """A KMS CMK as a ``MasterKey`` (see ``ossencfs.envelope.material``). Thread-safe; calls block."""

    wrap_alg = WRAP_KMS

    def __init__(self, cmk_id: str, region: str, access_key_id: str | None = None,
                 access_key_secret: str | None = None, *, security_token: str | None = None,
                 credentials: CredentialSource | None = None, endpoint: str | None = None,
                 flavour: str = "oss2", context: dict[str, str] | None = None,
                 max_concurrency: int = 8, matdesc: Mapping[str, str] | str | None = None,
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
        self.flavour = flavour
        self.context = dict(context) if context else None
        self._context_param = context_string(context)
        self.matdesc, self.matdesc_text = matdesc_option(matdesc)
        self.name = f"kms:{cmk_id}"
        endpoint = endpoint.rstrip("/") if endpoint else None   # the SDK appends "/?..." itself
        if credentials is None:
            if not access_key_id or not access_key_secret:
                raise ValueError("KmsMasterKey needs credentials or an AccessKey pair")
            credentials = CredentialSource.static(access_key_id, access_key_secret, security_token)
        super().__init__(self.name, region, endpoint, credentials,
                         max_concurrency=max_concurrency, retries=retries, retry_base=retry_base,
                         retry_cap=retry_cap, retry_deadline=retry_deadline,
                         connect_timeout=connect_timeout, read_timeout=read_timeout,
                         outage_ttl=outage_ttl)

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
        """A fresh data key from GenerateDataKey and a fresh IV wrapped by Encrypt(b64(iv)),
        the two calls side by side (one round trip of waiting, not two)."""
        iv = new_iv()
        iv_call = _side_calls().submit(self._encrypt, base64.b64encode(iv).decode())
        try:
            key_b64, key_blob = self._generate_data_key()
        except BaseException:
            _abandon(iv_call)
            raise
        iv_blob = iv_call.result()
        key = b64decode_plaintext(key_b64, "data key", self.cmk_id)
        if len(key) != 32:
            raise KeyUnavailableError(f"CMK {self.cmk_id}: GenerateDataKey returned {len(key)} bytes, not 32")
        return ContentMaterial(key=key, counter0=iv_to_counter(iv)), self._headers(key_blob, iv_blob)

    def wrap(self, material: ContentMaterial) -> CryptoHeaders:
        """The header set for an *existing* data key (re-wrap); never for new content."""
        key_blob = self._encrypt(base64.b64encode(material.key).decode())
        iv_blob = self._encrypt(base64.b64encode(material.iv).decode())
        return self._headers(key_blob, iv_blob)

    def reencrypt(self, h: CryptoHeaders, source_context: Mapping[str, str] | None) -> CryptoHeaders | None:
        """``h``'s key and IV blobs re-encrypted under this CMK by KMS ReEncrypt, without the
        data key ever leaving KMS; None when ReEncrypt does not fit (not a current-format KMS
        header set: legacy objects keep a decimal counter where V2 needs b64(IV), so they go
        through Decrypt + Encrypt like the SDK). ``source_context`` is the encryption context
        the blobs were made with. Layout fields (data-size, ...) are the caller's to keep.

        ReEncrypt: https://www.alibabacloud.com/help/en/kms/key-management-service/developer-
        reference/api-kms-2016-01-20-reencrypt (CiphertextBlob, DestinationKeyId,
        SourceEncryptionContext, DestinationEncryptionContext -> CiphertextBlob, KeyId).
        """
        if h.legacy or h.wrap_alg != WRAP_KMS:
            return None
        style = looks_oss2_flavour(h.wrapped_key)
        key_blob = blob_from_header(h.wrapped_key, style)
        iv_blob = blob_from_header(h.wrapped_start, style)
        if key_blob is None or iv_blob is None:
            return None
        source = context_string(source_context)
        return self._headers(self._reencrypt(key_blob, source), self._reencrypt(iv_blob, source))

    def claims(self, h: CryptoHeaders) -> bool:
        """Whether the object's key blob names this CMK, so the KeyRing tries it first."""
        for style in (True, False):
            blob = blob_from_header(h.wrapped_key, style)
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
                             cek_alg=CEK_AES_CTR, legacy=False, matdesc=self.matdesc,
                             matdesc_text=self.matdesc_text)

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
            key_blob = blob_from_header(h.wrapped_key, style)
            if key_blob is None:
                continue
            start_blob = blob_from_header(h.wrapped_start, style)
            # the IV's Decrypt goes out beside the key's: a first open waits for one KMS
            # round trip, not two in turn (the SDKs send them one after the other)
            iv_call = _side_calls().submit(self._decrypt, start_blob) if start_blob else None
            try:
                key_b64 = self._decrypt(key_blob)
            except BaseException as exc:
                _abandon(iv_call)
                if not isinstance(exc, WrongKeyError):
                    raise
                last = exc
                continue
            key = b64decode_plaintext(key_b64, "data key", self.cmk_id)
            if iv_call is None:
                raise FormatError("the start header is not in the same form as the key header")
            iv = b64decode_plaintext(iv_call.result(), "IV", self.cmk_id)
            return material_from_plaintext(h, key, iv)
        raise last or WrongKeyError("the key header is not a KMS ciphertext blob")

    # ---- extras -----------------------------------------------------------------------------
    def describe(self) -> JsonObject:
        """DescribeKey's KeyMetadata; lets a CLI check the CMK before the first write."""
        req_factory = DescribeKeyRequest.DescribeKeyRequest

        def build() -> RpcRequest:
            req = req_factory()
            req.set_KeyId(self.cmk_id)
            return req

        return cast(JsonObject, self._call("DescribeKey", build, self.cmk_id)["KeyMetadata"])

    # ---- internals --------------------------------------------------------------------------
    def _unwrap_legacy(self, h: CryptoHeaders) -> ContentMaterial:
        """oss2 <= 2.10: key header = blob (single base64); start decrypts to a decimal counter."""
        key = b64decode_plaintext(self._decrypt(h.wrapped_key), "data key", self.cmk_id)
        start = self._decrypt(h.wrapped_start)
        return material_from_plaintext(h, key, start.encode("utf-8", "replace"))

    def _generate_data_key(self) -> tuple[str, str]:
        def build() -> RpcRequest:
            req = GenerateDataKeyRequest.GenerateDataKeyRequest()
            req.set_KeyId(self.cmk_id)
            req.set_KeySpec("AES_256")
            req.set_NumberOfBytes(32)
            req.set_EncryptionContext(self._context_param)
            return req

        resp = self._call("GenerateDataKey", build, self.cmk_id)
        return self._field(resp, "Plaintext"), self._field(resp, "CiphertextBlob")

    def _encrypt(self, plaintext: str) -> str:
        def build() -> RpcRequest:
            req = EncryptRequest.EncryptRequest()
            req.set_KeyId(self.cmk_id)
            req.set_Plaintext(plaintext)
            req.set_EncryptionContext(self._context_param)
            return req

        return self._field(self._call("Encrypt", build, self.cmk_id), "CiphertextBlob")

    def _decrypt(self, blob: str) -> str:
        return self.decrypt_blob(blob, self._context_param)

    def decrypt_blob(self, blob: str, context: str, target: str | None = None) -> str:
        """KMS Decrypt of ``blob`` under the EncryptionContext string ``context`` ("" for
        none); returns Plaintext (base64 text). ``target`` names the CMK in errors. BLOCKING."""
        def build() -> RpcRequest:
            req = DecryptRequest.DecryptRequest()
            req.set_CiphertextBlob(blob)
            req.set_EncryptionContext(context)
            return req

        return self._field(self._call("Decrypt", build, target or blob_key_id(blob) or self.cmk_id),
                           "Plaintext")

    def _reencrypt(self, blob: str, source_context: str) -> str:
        def build() -> RpcRequest:
            req = ReEncryptRequest.ReEncryptRequest()
            req.set_CiphertextBlob(blob)
            req.set_DestinationKeyId(self.cmk_id)
            if source_context:
                req.set_SourceEncryptionContext(source_context)
            if self._context_param:
                req.set_DestinationEncryptionContext(self._context_param)
            return req

        return self._field(self._call("ReEncrypt", build, blob_key_id(blob) or self.cmk_id),
                           "CiphertextBlob")

    def _field(self, resp: Mapping[str, object], name: str) -> str:
        value = resp.get(name)
        if not isinstance(value, str) or not value:
            raise KeyUnavailableError(f"CMK {self.cmk_id}: KMS answer lacks {name}")
        return value


class KmsOptions(TypedDict, total=False):
    """What ``kms_client`` passes on to ``KmsMasterKey`` (see its parameters)."""

    flavour: str
    context: dict[str, str] | None
    max_concurrency: int
    matdesc: Mapping[str, str] | str | None
    retries: int
    retry_base: float
    retry_cap: float
    retry_deadline: float
    connect_timeout: int
    read_timeout: int
    outage_ttl: float


def kms_client(cmk_id: str, region: str, credentials: CredentialSource, *,
               endpoint: str | None = None, **kw: Unpack[KmsOptions]) -> KmsMasterKey:
    """The one place a KMS client is built: a ``KmsMasterKey`` for ``cmk_id`` in ``region``
    (``endpoint``: a URL, default the public ``kms.REGION.aliyuncs.com``), signing with
    ``credentials``. ``kw`` goes to ``KmsMasterKey`` (flavour, context, retries...)."""
    return KmsMasterKey(cmk_id, region, credentials=credentials, endpoint=endpoint, **kw)
