"""The aliyunsdkcore client for one key pair and region, and the proxies it may use.

aliyunsdkcore reads HTTP(S)_PROXY itself and ignores NO_PROXY (SPEC C.5(a)), and
``ALIYUN_ACCESS_KEY_*`` environment variables could replace the credentials; both are
given explicitly here. Its logger is silenced (it logs request parameters and data keys).
"""
from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit
from urllib.request import getproxies_environment
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # (not in typeshed)

from aliyunsdkcore.client import AcsClient

from ..credentials import Credentials

# aliyunsdkcore logs request params (Encrypt's Plaintext) and response bodies (Decrypt's
# Plaintext = a data key) at DEBUG, and every server error at ERROR. We report failures
# ourselves, so keep its client logger quiet whatever level the application configures.
logging.getLogger("aliyunsdkcore.client").setLevel(logging.CRITICAL)


def make_client(credentials: Credentials, region: str, endpoint: str | None, *,
                connect_timeout: int = 5, read_timeout: int = 10, pool_size: int = 8) -> AcsClient:
    """The KMS client for one key pair and region (``endpoint``: a full URL or host, or None
    for ``kms.REGION.aliyuncs.com``). The STS token is not part of the client: ``_call`` signs
    it into each request."""
    url = endpoint if endpoint and "://" in endpoint else f"https://{endpoint or f'kms.{region}.aliyuncs.com'}"
    # ak/secret given explicitly, so ALIYUN_ACCESS_KEY_* env vars never replace them.
    client = AcsClient(credentials.access_key_id, credentials.access_key_secret, region,
                       auto_retry=False, connect_timeout=connect_timeout, timeout=read_timeout,
                       pool_size=pool_size, proxy=proxies_for(url))
    if endpoint:
        # A scheme in the endpoint overrides the requests' https default (SPEC C.5).
        client.add_endpoint(region, "kms", endpoint)
    return client


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
