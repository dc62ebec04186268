"""Temporary credentials against the emulator's STS stand-ins: the real refusal codes, the
credentials URI, the ECS metadata paths (local, via OSSENCFS_ECS_METADATA_ENDPOINT), an
external credential process, renewal for OSS and KMS, and one retry after a raced expiry."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Iterator

import oss2
import pytest
import trio

from ossencfs.credential_chain import (ENV_ECS_METADATA_ENDPOINT, ENV_STS_ENDPOINT, CredentialOptions,
                                      build_source)
from ossencfs.credentials import CredentialSource
from ossencfs.errors import KeyUnavailableError
from ossencfs.kms import KmsMasterKey
from ossencfs.store import ObjectStore

from ..conftest import BUCKET, KMS_REGION, sts_emulator_at

LIFETIME = 3


@pytest.fixture
def sts_emulator(tmp_path: Path, no_proxy_env: None) -> Iterator[object]:
    yield from sts_emulator_at(tmp_path / "oss", LIFETIME)


def _wait_past_expiry() -> None:
    time.sleep(LIFETIME + 1.2)


def test_expired_credentials_get_the_real_codes(sts_emulator) -> None:
    issued = sts_emulator.sts.issue()
    bucket = oss2.Bucket(oss2.StsAuth(issued["AccessKeyId"], issued["AccessKeySecret"],
                                      issued["SecurityToken"]), sts_emulator.endpoint, BUCKET)
    bucket.put_object("k", b"v")
    cmk = sts_emulator.kms_service.create_key()
    master = KmsMasterKey(cmk, KMS_REGION, issued["AccessKeyId"], issued["AccessKeySecret"],
                          security_token=issued["SecurityToken"],
                          endpoint=sts_emulator.kms_endpoint, retries=0)
    master.describe()
    _wait_past_expiry()
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        bucket.get_object("k")
    assert (exc.value.status, exc.value.code, exc.value.ec) == (403, "SecurityTokenExpired",
                                                                  "0002-00000007")
    with pytest.raises(KeyUnavailableError, match=r"InvalidSecurityToken\.Expired, HTTP 400"):
        master.describe()


def test_credentials_uri_renewed_for_oss_and_kms(sts_emulator) -> None:
    source = build_source(CredentialOptions(credentials_uri=sts_emulator.credential_endpoints.uri),
                          {})
    store = ObjectStore.connect(sts_emulator.endpoint, BUCKET, credentials=source, retries=0)
    cmk = sts_emulator.kms_service.create_key()
    master = KmsMasterKey(cmk, KMS_REGION, credentials=source, endpoint=sts_emulator.kms_endpoint,
                          retries=0)
    before = sts_emulator.sts.issued

    async def run() -> None:
        for i in range(6):
            material, headers = master.wrap_new()
            await store.put(f"obj{i}", b"x" * 10, {})
            assert await store.get_range(f"obj{i}", 0, 9) == b"x" * 10
            assert master.unwrap(headers).key == material.key
            await trio.sleep(LIFETIME * 0.6)
    trio.run(run)
    assert sts_emulator.sts.issued - before >= 3 and source.renewals >= 3
    assert sum(store.retried.values()) == 0         # renewed ahead: nothing was refused


def test_raced_expiry_is_retried_once_with_fresh_credentials(sts_emulator) -> None:
    """Credentials whose expiry is unknown (profile providers drop it) are used until a server
    refuses them; the refused request (OSS and KMS alike) is repeated once with new ones."""
    uri = build_source(CredentialOptions(credentials_uri=sts_emulator.credential_endpoints.uri), {})
    source = CredentialSource(lambda: dataclasses.replace(uri.get(), expiration=None), "no-expiry")
    store = ObjectStore.connect(sts_emulator.endpoint, BUCKET, credentials=source, retries=0)
    cmk = sts_emulator.kms_service.create_key()
    master = KmsMasterKey(cmk, KMS_REGION, credentials=source, endpoint=sts_emulator.kms_endpoint,
                          retries=0)
    material, headers = master.wrap_new()
    trio.run(store.put, "k", b"data", {})
    _wait_past_expiry()
    assert trio.run(store.get_range, "k", 0, 3) == b"data"
    assert store.retried["get"] == 1
    _wait_past_expiry()
    assert master.unwrap(headers).key == material.key


def test_ecs_ram_role_from_the_local_metadata_stand_in(sts_emulator,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the library read ALIBABA_CLOUD_ECS_METADATA_DISABLED (set by the test-wide guard) at
    # import; this test talks to the local stand-in only
    from alibabacloud_credentials.utils import auth_util
    monkeypatch.setattr(auth_util, "environment_ecs_metadata_disabled", "false")
    ends = sts_emulator.credential_endpoints
    env = {ENV_ECS_METADATA_ENDPOINT: ends.metadata_host}
    named = build_source(CredentialOptions(ram_role=sts_emulator.sts.role), env)
    detected = build_source(CredentialOptions(), env)          # role name read from the service
    assert named.name.startswith("ECS RAM role") and detected.name == "ECS RAM role"
    assert ends.requests["ecs"] == 2 and ends.requests["role"] == 1 and ends.requests["token"] >= 2
    store = ObjectStore.connect(sts_emulator.endpoint, BUCKET, credentials=detected, retries=0)
    trio.run(store.put, "ecs", b"1", {})
    _wait_past_expiry()
    assert trio.run(store.get_range, "ecs", 0, 0) == b"1"
    assert detected.renewals >= 1


def test_credential_process(sts_emulator, tmp_path: Path) -> None:
    script = tmp_path / "creds.py"
    script.write_text(
        "import json, sys, urllib.request\n"
        "d = json.load(urllib.request.urlopen(sys.argv[1]))\n"
        "print(json.dumps({'mode': 'StsToken', 'access_key_id': d['AccessKeyId'],\n"
        "                  'access_key_secret': d['AccessKeySecret'],\n"
        "                  'sts_token': d['SecurityToken'], 'expiration': d['Expiration']}))\n")
    cmd = f"{sys.executable} {script} {sts_emulator.credential_endpoints.uri}"
    source = build_source(CredentialOptions(credential_process=cmd), {})
    store = ObjectStore.connect(sts_emulator.endpoint, BUCKET, credentials=source, retries=0)
    trio.run(store.put, "p", b"1", {})
    _wait_past_expiry()
    assert trio.run(store.get_range, "p", 0, 0) == b"1" and source.renewals >= 1
    assert json.loads(json.dumps(source.name)) == "--credential-process"


def test_source_down_past_expiry_is_a_network_outage(sts_emulator) -> None:
    """What the fs layer treats as offline (serving its caches), and back once it answers."""
    from ossencfs.errors import NetworkError
    ends = sts_emulator.credential_endpoints
    source = build_source(CredentialOptions(credentials_uri=ends.uri), {})
    store = ObjectStore.connect(sts_emulator.endpoint, BUCKET, credentials=source, retries=1,
                                backoff_base=0.01)
    trio.run(store.put, "n", b"1", {})
    ends.stop()
    _wait_past_expiry()
    with pytest.raises(NetworkError, match="expired and could not be renewed"):
        trio.run(store.head, "n")
    ends.start()
    assert trio.run(store.head, "n") is not None


def test_oidc_rrsa_from_the_environment(sts_emulator, tmp_path: Path) -> None:
    """ACK's RRSA variables: AssumeRoleWithOIDC at the local STS stand-in, renewed."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.payload.signature")
    ends = sts_emulator.credential_endpoints
    env = {"ALIBABA_CLOUD_ROLE_ARN": "acs:ram::123:role/pod-role",
           "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "acs:ram::123:oidc-provider/ack-rrsa-c1",
           "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token), "ALIBABA_CLOUD_ROLE_SESSION_NAME": "pod",
           "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true", ENV_STS_ENDPOINT: ends.sts_endpoint}
    source = build_source(CredentialOptions(), env)
    assert source.name == "OIDC (RRSA)"
    store = ObjectStore.connect(sts_emulator.endpoint, BUCKET, credentials=source, retries=0)
    trio.run(store.put, "o", b"1", {})
    _wait_past_expiry()
    assert trio.run(store.get_range, "o", 0, 0) == b"1"
    assert ends.requests["oidc"] >= 2 and source.renewals >= 1
