"""``ObjectStore``: one bucket, its requests gathered from the rooms of this package
(``reads``, ``listing``, ``writes``, ``multipart`` on ``calls.StoreBase``), and ``connect``,
which builds it from an endpoint and credentials (``session.make_bucket``).
"""
from __future__ import annotations

from ..credentials import CredentialSource
from .calls import META_CONCURRENCY
from .listing import Listings
from .multipart import Multipart
from .session import make_bucket
from .writes import ObjectWrites


class ObjectStore(ObjectWrites, Listings, Multipart):
    """One bucket, used concurrently from a trio loop."""

    @classmethod
    def connect(cls, endpoint: str, bucket: str, access_key_id: str | None = None,
                access_key_secret: str | None = None, security_token: str | None = None, *,
                credentials: CredentialSource | None = None, region: str | None = None,
                auth_version: str = "v1", connect_timeout: float | None = None,
                concurrency: int = 16, retries: int = 5, backoff_base: float = 0.1,
                backoff_max: float = 5.0,
                meta_concurrency: int = META_CONCURRENCY) -> "ObjectStore":
        """An ObjectStore for ``bucket`` at ``endpoint`` (a URL), signing with ``credentials``
        or a fixed key pair (and token); see ``session.make_bucket``. OssEncError for a bad
        endpoint or bucket name or a V4 signature without a region; CredentialsError when
        neither credentials nor a key pair is given."""
        b, source = make_bucket(endpoint, bucket, credentials, access_key_id, access_key_secret,
                                security_token, region=region, auth_version=auth_version,
                                connect_timeout=connect_timeout,
                                pool_size=concurrency + meta_concurrency)
        return cls(b, concurrency=concurrency, credentials=source, retries=retries,
                   backoff_base=backoff_base, backoff_max=backoff_max,
                   meta_concurrency=meta_concurrency)
