"""Fixtures for the KMS tests: a local KmsServer over real HTTP, our KmsMasterKey and oss2's
AliKMSProvider (the oracle) pointed at it (SPEC C.5 recipe)."""
from __future__ import annotations

from typing import Callable, Iterator

import oss2
import pytest

from ossencfs.emulator.kms import KmsServer
from ossencfs.kms import KmsMasterKey

REGION = "local-1"
AK, SK = "AK", "SK"
STS_AK, STS_SK, STS_TOKEN = "STS.tmp", "tmpsecret", "token-123"


@pytest.fixture
def kms(tmp_path) -> Iterator[KmsServer]:
    with KmsServer(str(tmp_path / "kms"), credentials={AK: SK, STS_AK: STS_SK},
                   sts_tokens={STS_AK: STS_TOKEN}) as server:
        yield server


@pytest.fixture
def cmk(kms: KmsServer) -> str:
    return kms.create_key(description="test cmk")


@pytest.fixture
def make_master(kms: KmsServer, cmk: str) -> Callable[..., KmsMasterKey]:
    def make(key_id: str | None = None, *, server: KmsServer | None = None, ak: str = AK, sk: str = SK,
             **kw) -> KmsMasterKey:
        kw.setdefault("retry_base", 0.01)
        srv = server or kms
        return KmsMasterKey(key_id or cmk, REGION, ak, sk, endpoint=srv.endpoint, **kw)
    return make


def oss2_provider(server: KmsServer, cmk_id: str, passphrase: str | None = None) -> oss2.AliKMSProvider:
    provider = oss2.AliKMSProvider(AK, SK, REGION, cmk_id, passphrase=passphrase)
    provider.kms_client.add_endpoint(REGION, "kms", server.endpoint)
    # aliyunsdkcore would otherwise route loopback through any HTTP(S)_PROXY (SPEC C.5(a)).
    provider.kms_client.proxy = {"http": None, "https": None}
    return provider
