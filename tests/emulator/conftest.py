"""Fixtures for the emulator tests: a running Emulator and oss2 clients pointed at it."""
from __future__ import annotations

import oss2
import pytest

from ossencfs.emulator.server import Emulator

AK, SK = "test-ak", "test-sk"
BUCKET = "bkt"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Loopback requests must never be sent through a proxy configured in the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emu(tmp_path):
    with Emulator(str(tmp_path / "emu"), credentials={AK: SK, "sts-ak": "sts-sk"},
                  sts_tokens={"sts-ak": "the-token"}, buckets=[BUCKET], fsync=False) as e:
        yield e


@pytest.fixture
def bucket(emu) -> oss2.Bucket:
    return oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, BUCKET)


@pytest.fixture
def bucket_v4(emu) -> oss2.Bucket:
    return oss2.Bucket(oss2.AuthV4(AK, SK), emu.endpoint, BUCKET, region="cn-hangzhou")


@pytest.fixture(params=["v1", "v4"])
def anyauth(request, emu) -> oss2.Bucket:
    """The same tests through signature V1 and V4."""
    if request.param == "v1":
        return oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, BUCKET)
    return oss2.Bucket(oss2.AuthV4(AK, SK), emu.endpoint, BUCKET, region="cn-hangzhou")


class expect_error:
    """pytest.raises for an oss2 server error identified by (status, code)."""

    def __init__(self, status: int, code: str) -> None:
        self.status, self.code = status, code
        self._cm = pytest.raises(oss2.exceptions.ServerError)

    def __enter__(self):
        self.info = self._cm.__enter__()
        return self.info

    def __exit__(self, *exc):
        handled = self._cm.__exit__(*exc)
        err = self.info.value
        assert (err.status, err.code) == (self.status, self.code), f"got {err.status} {err.code}: {err.details}"
        return handled


def raw(emu, method: str, bucket: str | None, key: str = "", *, params: dict | None = None,
        headers: dict | None = None, data: bytes | None = None, auth=None, host: str | None = None):
    """Send one request signed by oss2's own signer (V1 by default) and return the raw response."""
    import requests
    from urllib.parse import quote
    path = "/" if bucket is None else f"/{bucket}/{quote(key, safe='')}"
    url = emu.endpoint + path
    req = oss2.http.Request(method, url, data=data, params=dict(params or {}), headers=dict(headers or {}),
                            region="cn-hangzhou", product="oss")
    (auth or oss2.Auth(AK, SK))._sign_request(req, bucket or "", key)
    hdrs = dict(req.headers)
    if host:
        hdrs["Host"] = host
    return requests.request(method, url, params=req.params, headers=hdrs, data=data)
