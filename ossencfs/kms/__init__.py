"""KMS master keys: wrap and unwrap object data keys with an Alibaba Cloud KMS CMK.

Why this is not oss2's ``AliKMSProvider``: that one crashes when given an STS token
(SPEC C.5(b)), writes only the oss2 flavour, cannot read Java/Go-flavour objects, has no retry
and lets HTTP(S)_PROXY break a loopback KMS. This package uses the same client (aliyunsdkcore
``AcsClient`` + aliyunsdkkms request classes) so the wire format is exactly the SDK's, and adds:

* both header flavours (SPEC A.3, A.10): ``oss2`` writes ``b64(CiphertextBlob)`` ("double
  base64"), ``java`` writes the CiphertextBlob itself (Java/Go SDKs); reading detects the
  flavour per object and also reads the legacy oss2 ``kms`` form (SPEC A.8);
* STS tokens (``SecurityToken`` is added to the signed query, as aliyunsdkcore's STS signer does,
  without letting ``ALIYUN_ACCESS_KEY_*`` environment variables take over the credentials),
  taken per call from a ``CredentialSource`` (``ossencfs.credentials``) shared with the OSS
  client, so renewed credentials are used at once; the client is rebuilt by ``make_client``
  when the key pair changes; a call refused with an expired or unknown temporary key is
  retried once with fresh credentials;
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

The data-key cache is the KeyRing's job (``ossencfs.envelope.keys``), not this package's.

Modules, by job (``docs/layers.md``): ``master`` (``KmsMasterKey``, ``kms_client``), ``calls``
(one action, retried; the outage memory), ``failures`` (transient or not; typed errors),
``client`` (the aliyunsdkcore client, proxies), ``blobs`` (header flavours, the CMK a blob
names). Importers use this package (``from ossencfs.kms import KmsMasterKey``).
"""
from .blobs import FLAVOURS, blob_key_id, context_string, looks_oss2_flavour
from .client import make_client, proxies_for
from .master import KmsMasterKey, KmsOptions, kms_client

__all__ = ["FLAVOURS", "KmsMasterKey", "KmsOptions", "blob_key_id", "context_string", "kms_client",
           "looks_oss2_flavour", "make_client", "proxies_for"]
