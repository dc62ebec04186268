"""The oss2 bucket object: built (signature version, credentials, connection pool, the urllib3
transport of ``transport``); a bucket still on requests (a caller's, or one behind a proxy) made
cheaper per request (environment settings cached, no ~/.netrc lookup, pool as large as our
concurrency). oss2's warning on plain GETs of encrypted objects is silenced here.
"""
from __future__ import annotations

import logging
from typing import Any

import oss2
import oss2.exceptions
import oss2.http
import requests
import requests.adapters

from ..credentials import CredentialSource
from ..errors import CredentialsError, OssEncError
from .transport import direct_session


def _drop_raw_get_warning(record: logging.LogRecord) -> bool:
    # oss2 warns on every plain GET of an encrypted object; fetching ciphertext is our job.
    return "encrypted object will return raw data" not in record.getMessage()


logging.getLogger("oss2.models").addFilter(_drop_raw_get_warning)


def make_bucket(endpoint: str, bucket: str, credentials: CredentialSource | None,
                access_key_id: str | None, access_key_secret: str | None,
                security_token: str | None, *, region: str | None, auth_version: str,
                connect_timeout: float | None,
                pool_size: int) -> tuple[oss2.Bucket, CredentialSource]:
    """The oss2 bucket for ``ObjectStore.connect`` and the credential source it signs with.

    V4 needs a region. Every request is signed with what ``credentials`` holds at that moment
    (oss2.ProviderAuth / ProviderAuthV4 call its ``get_credentials()`` per request), so renewed
    STS credentials are used at once; a fixed key pair (and token) is wrapped in a static
    source. ``pool_size``: connections kept (one per concurrent request)."""
    version = oss2.AUTH_VERSION_4 if auth_version == "v4" else oss2.AUTH_VERSION_1
    if version == oss2.AUTH_VERSION_4 and not region:
        raise OssEncError("signature V4 needs a region (--region)")
    if credentials is None:
        if not access_key_id or not access_key_secret:
            raise CredentialsError("no OSS credentials given")
        credentials = CredentialSource.static(access_key_id, access_key_secret,
                                              security_token)
    auth = (oss2.ProviderAuthV4(credentials) if version == oss2.AUTH_VERSION_4
            else oss2.ProviderAuth(credentials))
    session = direct_session(endpoint, pool_size) or oss2.http.Session(pool_size=pool_size)
    try:
        b = oss2.Bucket(auth, endpoint, bucket, session=session,
                        connect_timeout=connect_timeout, region=region)
    except oss2.exceptions.ClientError as exc:
        raise OssEncError(f"bad endpoint or bucket name: {endpoint} {bucket}") from exc
    return b, credentials


def cache_environment(bucket: oss2.Bucket) -> None:
    """requests reads the proxy variables (and no_proxy) and the CA bundle variables from the
    environment again for every request, ~0.25 ms of GIL time each; a bucket talks to one
    host, so the answer is kept per (scheme, host) and the arguments given."""
    inner = getattr(getattr(bucket, "session", None), "session", None)
    if not isinstance(inner, requests.Session) or "merge_environment_settings" in vars(inner):
        return
    merge = inner.merge_environment_settings
    cache: dict[tuple[object, ...], dict[str, Any]] = {}

    def cached(url: str, proxies: dict[str, str] | None, stream: bool | None,
               verify: bool | str | None,
               cert: str | tuple[str, str] | None) -> dict[str, Any]:
        parts = requests.utils.urlparse(url)
        try:
            key = (parts.scheme, parts.netloc, tuple(sorted((proxies or {}).items())), stream,
                   verify, cert, inner.trust_env)
            hash(key)
        except TypeError:               # unhashable arguments: not worth caching
            return merge(url, proxies, stream, verify, cert)
        settings = cache.get(key)
        if settings is None:
            if len(cache) > 64:
                cache.clear()
            settings = cache[key] = merge(url, dict(proxies) if proxies else proxies, stream,
                                          verify, cert)
        out = dict(settings)
        if isinstance(out.get("proxies"), dict):
            out["proxies"] = dict(out["proxies"])
        return out
    inner.merge_environment_settings = cached  # type: ignore[method-assign]
    if inner.auth is None:
        # requests also looks for ~/.netrc on every request (two stat calls and, if there is
        # one, a parse); its Basic auth would replace the OSS signature anyway: never wanted
        inner.auth = _keep_signature


def _keep_signature(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An auth hook that leaves the request as oss2 signed it."""
    return request


def size_pool(bucket: oss2.Bucket, size: int) -> None:
    """Give a caller-made bucket a pool as large as our concurrency (default oss2 pool is 10)."""
    session = getattr(bucket, "session", None)
    inner = getattr(session, "session", None)
    if not isinstance(inner, requests.Session):
        return
    adapter = inner.get_adapter("http://")
    current = getattr(adapter, "_pool_maxsize", 0)
    if isinstance(adapter, requests.adapters.HTTPAdapter) and current < size:
        for scheme in ("http://", "https://"):
            inner.mount(scheme, requests.adapters.HTTPAdapter(pool_connections=size,
                                                              pool_maxsize=size))
