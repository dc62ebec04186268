"""KMS in every region an object names, and the data keys of Encryption SDK objects.

An Encryption SDK (ESDK) object names its CMK by ARN ``acs:kms:REGION:UID:key/ID``; its data
key must be decrypted by the KMS of that region (ESDK-PY ``kms/kms.py`` builds a client for
the ARN's region per call). ``KmsRegions`` keeps one client per region, made on first use
with the endpoint configured for that region (``--kms-endpoint REGION=URL``; default the
public ``https://kms.REGION.aliyuncs.com``). ``EsdkKeyring`` decrypts ESDK data keys through
it, checks the header auth tag, and caches the keys in memory (LRU + TTL, never on disk) so a
reopen costs no KMS call. docs/esdk.md.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from collections import OrderedDict
from typing import Callable, Sequence

from .envelope import esdk
from .errors import FormatError, KeyUnavailableError, OssEncError
from .kms import KmsMasterKey

#: connect(region, endpoint or None, cmk id) -> a KMS client for that region
Connect = Callable[[str, "str | None", str], KmsMasterKey]


def parse_kms_endpoints(values: Sequence[str] | str | None) -> tuple[str | None, dict[str, str]]:
    """``--kms-endpoint`` values -> (endpoint of the ``--kms-region``, {region: URL}).

    ``URL`` alone (the old form) is the endpoint of ``--kms-region``; ``REGION=URL`` sets the
    endpoint of one region. OssEncError for an empty region or URL, or a region given twice."""
    if values is None:
        return None, {}
    if isinstance(values, str):
        values = [values]
    default: str | None = None
    per_region: dict[str, str] = {}
    for value in values:
        region, sep, url = value.partition("=")
        if not sep or "://" in region or "/" in region:
            if default is not None:
                raise OssEncError("--kms-endpoint URL given twice; use REGION=URL for more")
            default = value
            continue
        if not region or not url:
            raise OssEncError(f"--kms-endpoint {value!r}: expected REGION=URL")
        if region in per_region:
            raise OssEncError(f"--kms-endpoint: region {region} given twice")
        per_region[region] = url
    return default, per_region


def region_endpoint(region: str, default_region: str | None, default_endpoint: str | None,
                    endpoints: dict[str, str]) -> str | None:
    """The endpoint configured for ``region`` (``REGION=URL``, or the bare URL when it is
    ``default_region``); None: the public one."""
    if region in endpoints:
        return endpoints[region]
    return default_endpoint if region == default_region else None


class KmsRegions:
    """One KMS client per region, built by ``connect`` on first use. Thread-safe."""

    def __init__(self, connect: Connect, *, default_region: str | None = None,
                 default_endpoint: str | None = None,
                 endpoints: dict[str, str] | None = None) -> None:
        self._connect = connect
        self.default_region = default_region
        self._default_endpoint = default_endpoint
        self._endpoints = dict(endpoints or {})
        self._clients: dict[str, KmsMasterKey] = {}
        self._lock = threading.Lock()

    def endpoint_for(self, region: str) -> str | None:
        return region_endpoint(region, self.default_region, self._default_endpoint,
                               self._endpoints)

    def client(self, region: str, cmk_id: str = "esdk") -> KmsMasterKey:
        with self._lock:
            got = self._clients.get(region)
            if got is None:
                got = self._clients[region] = self._connect(region, self.endpoint_for(region),
                                                            cmk_id)
            return got

    def region_of(self, key: esdk.DataKey) -> str:
        region = key.region or self.default_region
        if not region:
            raise KeyUnavailableError(f"CMK {key.key_arn} is not an ARN and no --kms-region "
                                      f"is configured")
        return region


class EsdkKeyring:
    """Data keys of ESDK objects: KMS Decrypt in the CMK's region, header tag checked,
    cached in memory by (encrypted data keys, context). ``open`` BLOCKS (may call KMS)."""

    def __init__(self, regions: KmsRegions, *, cache_entries: int = 4096,
                 cache_ttl: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.regions = regions
        self._entries = max(0, cache_entries)
        self._ttl = cache_ttl
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[bytes, esdk.DataKey, float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def cache_key(header: esdk.Header) -> bytes:
        return hashlib.sha256(header.auth_fields() + header.header_iv + header.header_tag).digest()

    def _get(self, ck: bytes) -> tuple[bytes, esdk.DataKey] | None:
        with self._lock:
            hit = self._cache.get(ck)
            if hit is None or hit[2] < self._clock():
                self._cache.pop(ck, None)
                return None
            self._cache.move_to_end(ck)
            return hit[0], hit[1]

    def _put(self, ck: bytes, key: bytes, opened_by: esdk.DataKey) -> None:
        if self._entries <= 0 or self._ttl <= 0:
            return
        with self._lock:
            self._cache[ck] = (key, opened_by, self._clock() + self._ttl)
            self._cache.move_to_end(ck)
            while len(self._cache) > self._entries:
                self._cache.popitem(last=False)

    def open(self, header: esdk.Header) -> bytes:
        """The verified data key of ``header``: each encrypted data key is tried in turn
        (KMS of its ARN's region) until one decrypts; the last error is raised if none does
        (KeyUnavailableError / WrongKeyError); IntegrityError for a wrong header tag."""
        return self.open_with(header)[0]

    def open_with(self, header: esdk.Header) -> tuple[bytes, esdk.DataKey]:
        """Like ``open``, also naming the encrypted data key (its CMK ARN) that KMS opened."""
        ck = self.cache_key(header)
        hit = self._get(ck)
        if hit is not None:
            return hit
        last: OssEncError | None = None
        for dk in header.data_keys:
            try:
                region = self.regions.region_of(dk)
                client = self.regions.client(region)
                plain = client.decrypt_blob(dk.ciphertext_blob, header.kms_context(), dk.key_arn)
            except OssEncError as exc:
                last = exc
                continue
            try:
                key = base64.b64decode(plain, validate=True)
            except (binascii.Error, ValueError):
                raise FormatError(f"CMK {dk.key_arn}: the data key KMS returned is not "
                                  f"base64") from None
            header.verify(key)
            self._put(ck, key, dk)
            return key, dk
        assert last is not None
        raise last
