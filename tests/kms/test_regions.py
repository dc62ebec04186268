"""KMS per region (kms_regions.py): endpoint options, one client per region, the Encryption
SDK data-key cache, against real local KMS servers."""
from __future__ import annotations

import pytest

from ossencfs.credentials import CredentialSource
from ossencfs.emulator.kms import KmsServer
from ossencfs.envelope import esdk
from ossencfs.errors import KeyUnavailableError, OssEncError
from ossencfs.kms import kms_client
from ossencfs.kms_regions import EsdkKeyring, KmsRegions, parse_kms_endpoints, region_endpoint
from tests import esdk_build as eb

AK, SK = "AK", "SK"


def test_parse_kms_endpoints() -> None:
    assert parse_kms_endpoints([]) == (None, {})
    assert parse_kms_endpoints(["http://127.0.0.1:9"]) == ("http://127.0.0.1:9", {})
    default, regions = parse_kms_endpoints(["a=http://h:1", "http://d:2", "b=https://kms.b"])
    assert default == "http://d:2" and regions == {"a": "http://h:1", "b": "https://kms.b"}
    for bad in (["a=x", "a=y"], ["u", "v"], ["=http://x"], ["a="]):
        with pytest.raises(OssEncError):
            parse_kms_endpoints(bad)
    assert region_endpoint("a", "a", "http://d", {}) == "http://d"
    assert region_endpoint("b", "a", "http://d", {}) is None          # public endpoint
    assert region_endpoint("a", "a", "http://d", {"a": "http://e"}) == "http://e"


def _regions(servers: dict[str, KmsServer]) -> KmsRegions:
    made: list[str] = []

    def connect(region: str, endpoint: str | None, cmk: str):
        made.append(region)
        assert endpoint is not None           # never the public endpoint in tests
        return kms_client(cmk, region, CredentialSource.static(AK, SK), endpoint=endpoint, retry_base=0.01)

    regions = KmsRegions(connect, endpoints={r: s.endpoint for r, s in servers.items()})
    regions.made = made                        # type: ignore[attr-defined]
    return regions


def test_esdk_keys_by_region_cached(tmp_path) -> None:
    eb.install_key(tmp_path / "one")
    with KmsServer(str(tmp_path / "one"), credentials={AK: SK}) as one, \
            KmsServer(str(tmp_path / "two"), credentials={AK: SK}, region="local-2") as two:
        regions = _regions({eb.REGION: one, "local-2": two})
        ring = EsdkKeyring(regions)
        body, _, _ = eb.vector("python-gcm256-100k-ctx")
        layout = esdk.parse_python(body[:esdk.PROBE_SIZE], len(body))
        key = ring.open(layout.header)
        assert key == eb.offline_data_key(layout.header.data_keys[0].blob,
                                          dict(layout.header.context))
        msg, _ = eb.make_region_object(two, "local-2", b"x" * 100, {})
        other = esdk.parse_python(msg[:esdk.PROBE_SIZE], len(msg))
        ring.open(other.header)
        assert one.calls["Decrypt"] == 1 and two.calls["Decrypt"] == 1
        assert sorted(regions.made) == [eb.REGION, "local-2"]      # type: ignore[attr-defined]
        ring.open(layout.header)
        ring.open(other.header)
        assert one.calls["Decrypt"] == 1 and two.calls["Decrypt"] == 1   # cached
        two.disable_key(other.header.data_keys[0].key_arn.rsplit("/", 1)[1])
        with pytest.raises(KeyUnavailableError, match="disabled"):
            EsdkKeyring(regions).open(other.header)


def test_bare_kms_endpoint_needs_its_region() -> None:
    """A bare ``--kms-endpoint URL`` without ``--kms-region`` used to be ignored silently (the
    public endpoint was called instead; found by a new user)."""
    import argparse

    from ossencfs.cli.options import kms_endpoints
    with pytest.raises(OssEncError, match="--kms-region"):
        kms_endpoints(argparse.Namespace(kms_endpoint=["http://127.0.0.1:9"], kms_region=None))
    assert kms_endpoints(argparse.Namespace(kms_endpoint=["http://127.0.0.1:9"],
                                            kms_region="cn-x")) == ("http://127.0.0.1:9", {})
    assert kms_endpoints(argparse.Namespace(kms_endpoint=["cn-y=http://h"], kms_region=None)) \
        == (None, {"cn-y": "http://h"})
