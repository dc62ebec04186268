"""Signature V1/V4, STS tokens, presigned URLs and virtual-host addressing."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
from email.utils import formatdate
from urllib.parse import quote

import oss2
import pytest
import requests

from .conftest import AK, SK, BUCKET, expect_error, raw


@pytest.mark.parametrize("auth_cls", [oss2.Auth, oss2.AuthV4])
def test_wrong_secret_and_unknown_key(emu, auth_cls):
    bad = oss2.Bucket(auth_cls(AK, "wrong"), emu.endpoint, BUCKET, region="cn-hangzhou")
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        bad.put_object("k", b"x")
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        bad.get_object("k")
    unknown = oss2.Bucket(auth_cls("nobody", SK), emu.endpoint, BUCKET, region="cn-hangzhou")
    with expect_error(403, "InvalidAccessKeyId"):
        unknown.list_objects()
    good = oss2.Bucket(auth_cls(AK, SK), emu.endpoint, BUCKET, region="cn-hangzhou")
    assert not good.object_exists("k")     # the rejected PUT had no effect


def test_v1_string_to_sign_in_error_body(emu):
    r = raw(emu, "GET", BUCKET, "k", auth=oss2.Auth(AK, "wrong"))
    assert r.status_code == 403
    assert b"<StringToSign>GET\n" in r.content and b"/bkt/k</StringToSign>" in r.content


def _v1_headers(date: str) -> dict[str, str]:
    sts = f"GET\n\n\n{date}\n/{BUCKET}/k".encode()
    sig = base64.b64encode(hmac.new(SK.encode(), sts, hashlib.sha1).digest()).decode()
    return {"Date": date, "Authorization": f"OSS {AK}:{sig}"}


def test_clock_skew(emu):
    hdrs = _v1_headers(formatdate(time.time() - 20 * 60, usegmt=True))
    r = requests.get(f"{emu.endpoint}/{BUCKET}/k", headers=hdrs)
    assert r.status_code == 403 and b"RequestTimeTooSkewed" in r.content
    hdrs = _v1_headers(formatdate(time.time(), usegmt=True))
    assert requests.get(f"{emu.endpoint}/{BUCKET}/k", headers=hdrs).status_code == 404   # signed fine now
    v4 = {"x-oss-date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 3600)),
          "x-oss-content-sha256": "UNSIGNED-PAYLOAD",
          "Authorization": f"OSS4-HMAC-SHA256 Credential={AK}/20200101/cn-hangzhou/oss/aliyun_v4_request, Signature=00"}
    r = requests.get(f"{emu.endpoint}/{BUCKET}/k", headers=v4)
    assert r.status_code == 403 and b"RequestTimeTooSkewed" in r.content


def test_anonymous_denied(emu):
    r = requests.get(f"{emu.endpoint}/{BUCKET}/k")
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content


@pytest.mark.parametrize("version", ["v1", "v4"])
def test_sts_tokens(emu, version):
    sts = oss2.Bucket(oss2.StsAuth("sts-ak", "sts-sk", "the-token", auth_version=version), emu.endpoint, BUCKET,
                      region="cn-hangzhou")
    sts.put_object("sts", b"ok")
    assert sts.get_object("sts").read() == b"ok"
    wrong = oss2.Bucket(oss2.StsAuth("sts-ak", "sts-sk", "other-token", auth_version=version), emu.endpoint,
                        BUCKET, region="cn-hangzhou")
    with expect_error(403, "InvalidSecurityToken"):
        wrong.get_object("sts")
    auth = oss2.Auth("sts-ak", "sts-sk") if version == "v1" else oss2.AuthV4("sts-ak", "sts-sk")
    missing = oss2.Bucket(auth, emu.endpoint, BUCKET, region="cn-hangzhou")
    with expect_error(403, "InvalidSecurityToken"):
        missing.get_object("sts")


def test_presigned_urls(emu, bucket):
    key = "pre signed/ü+%"
    put = bucket.sign_url("PUT", key, 60)
    assert requests.put(put, data=b"via url").status_code == 200
    get = bucket.sign_url("GET", key, 60)
    assert requests.get(get).content == b"via url"
    assert requests.get(get.replace("Signature=", "Signature=x")).status_code == 403
    expired = bucket.sign_url("GET", key, -10)
    r = requests.get(expired)
    assert r.status_code == 403 and b"AccessDenied" in r.content
    sts = oss2.Bucket(oss2.StsAuth("sts-ak", "sts-sk", "the-token"), emu.endpoint, BUCKET)
    assert requests.get(sts.sign_url("GET", key, 60)).content == b"via url"


def test_virtual_host_addressing(emu, bucket):
    bucket.put_object("vh/key +%", b"virtual")
    key = "vh/key +%"
    for auth in (oss2.Auth(AK, SK), oss2.AuthV4(AK, SK)):
        url = f"{emu.endpoint}/{quote(key, safe='')}"
        req = oss2.http.Request("GET", url, headers={}, params={}, region="cn-hangzhou", product="oss")
        auth._sign_request(req, BUCKET, key)
        hdrs = dict(req.headers)
        hdrs["Host"] = f"{BUCKET}.localhost:{emu.port}"
        r = requests.get(url, headers=hdrs)
        assert r.status_code == 200 and r.content == b"virtual"
    # path-style with a raw "/" in the key (Java style) works too
    r = raw(emu, "GET", BUCKET, key)
    assert r.content == b"virtual"


def test_v4_additional_headers(emu, bucket):
    bucket.put_object("ah", b"additional")
    url = f"{emu.endpoint}/{BUCKET}/ah"
    req = oss2.http.Request("GET", url, headers={"x-custom-h": "v1", "Range": "bytes=0-2"}, params={},
                            region="cn-hangzhou", product="oss")
    oss2.AuthV4(AK, SK)._sign_request(req, BUCKET, "ah", in_additional_headers=["x-custom-h", "range"])
    assert "AdditionalHeaders=" in req.headers["authorization"]
    hdrs = dict(req.headers)
    r = requests.get(url, headers=hdrs)
    assert r.status_code == 206 and r.content == b"add"
    hdrs["x-custom-h"] = "tampered"
    assert requests.get(url, headers=hdrs).status_code == 403


def test_v4_rejects_signed_payload_value(emu):
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    hdrs = {"x-oss-date": now, "x-oss-content-sha256": "abc",
            "Authorization": f"OSS4-HMAC-SHA256 Credential={AK}/{now[:8]}/cn-hangzhou/oss/aliyun_v4_request, Signature=00"}
    assert requests.get(f"{emu.endpoint}/{BUCKET}/k", headers=hdrs).status_code == 400


def test_presigned_urls_v4(emu, bucket_v4):
    key = "v4 pre/ü+%"
    assert requests.put(bucket_v4.sign_url("PUT", key, 60), data=b"v4 url").status_code == 200
    url = bucket_v4.sign_url("GET", key, 60)
    assert "x-oss-signature=" in url
    assert requests.get(url).content == b"v4 url"
    assert requests.get(url.replace("x-oss-signature=", "x-oss-signature=0")).status_code == 403
    r = requests.get(bucket_v4.sign_url("GET", key, -100))    # out of 1..604800 (page 0002-00000232)
    assert r.status_code == 400 and b"x-oss-expires is invalid" in r.content
    short = bucket_v4.sign_url("GET", key, 1)
    time.sleep(2.1)
    r = requests.get(short)
    assert r.status_code == 403 and b"expired" in r.content


# ---- V4 scope (issue 13 item 12) -------------------------------------------------------------
def _v4_request_for_day(emu, key: str, day: str) -> dict:
    """Headers of a GET validly signed (oss2's canonical request, the SPEC D.3 key derivation)
    with x-oss-date now but the scope day ``day``: what a client signing for another day sends."""
    url = f"{emu.endpoint}/{BUCKET}/{key}"
    req = oss2.http.Request("GET", url, headers={}, params={}, region="cn-hangzhou", product="oss")
    date_time = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    req.headers["x-oss-date"] = date_time
    req.headers["x-oss-content-sha256"] = "UNSIGNED-PAYLOAD"
    auth = oss2.AuthV4(AK, SK)
    creq = auth._ProviderAuthV4__get_canonical_request_bytes(req, BUCKET, key, None)
    scope = f"{day}/cn-hangzhou/oss/aliyun_v4_request"
    sts = f"OSS4-HMAC-SHA256\n{date_time}\n{scope}\n{hashlib.sha256(creq).hexdigest()}"
    k = hmac.new(("aliyun_v4" + SK).encode(), day.encode(), hashlib.sha256).digest()
    for part in ("cn-hangzhou", "oss", "aliyun_v4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return dict(req.headers, authorization=f"OSS4-HMAC-SHA256 Credential={AK}/{scope}, Signature={sig}")


def _expect_invalid_argument(r, message: str, ec: str) -> None:
    assert r.status_code == 400, r.text
    assert b"<Code>InvalidArgument</Code>" in r.content and message.encode() in r.content, r.text
    assert r.headers["x-oss-ec"] == ec


def test_v4_scope_region_product_and_day_are_checked(emu, bucket):
    """Requests signed for another region, product or day are refused as OSS refuses them."""
    bucket.put_object("scoped", b"x")
    beijing = oss2.Bucket(oss2.AuthV4(AK, SK), emu.endpoint, BUCKET, region="cn-beijing")
    with expect_error(400, "InvalidArgument"):
        beijing.get_object("scoped")
    oss_prefixed = oss2.Bucket(oss2.AuthV4(AK, SK), emu.endpoint, BUCKET, region="oss-cn-hangzhou")
    with expect_error(400, "InvalidArgument"):
        oss_prefixed.get_object("scoped")
    r = raw(emu, "GET", BUCKET, "scoped", auth=oss2.AuthV4(AK, SK))
    assert r.status_code == 200 and r.content == b"x"
    url = f"{emu.endpoint}/{BUCKET}/scoped"
    req = oss2.http.Request("GET", url, headers={}, params={}, region="cn-hangzhou", product="s3")
    oss2.AuthV4(AK, SK)._sign_request(req, BUCKET, "scoped")
    _expect_invalid_argument(requests.get(url, headers=dict(req.headers)),
                             "Invalid signing product", "0002-00000227")
    yesterday = time.strftime("%Y%m%d", time.gmtime(time.time() - 86400))
    _expect_invalid_argument(requests.get(url, headers=_v4_request_for_day(emu, "scoped", yesterday)),
                             "Invalid signing date", "0002-00000212")
    today = time.strftime("%Y%m%d", time.gmtime())
    assert requests.get(url, headers=_v4_request_for_day(emu, "scoped", today)).content == b"x"


def test_v4_presigned_url_validity_is_capped_at_seven_days(emu, bucket_v4):
    bucket_v4.put_object("long", b"y")
    assert requests.get(bucket_v4.sign_url("GET", "long", 7 * 86400)).content == b"y"
    for seconds in (7 * 86400 + 1, 10 * 365 * 86400):
        _expect_invalid_argument(requests.get(bucket_v4.sign_url("GET", "long", seconds)),
                                 "x-oss-expires is invalid", "0002-00000232")
    beijing = oss2.Bucket(oss2.AuthV4(AK, SK), emu.endpoint, BUCKET, region="cn-beijing")
    _expect_invalid_argument(requests.get(beijing.sign_url("GET", "long", 60)),
                             "Invalid signing region", "0002-00000226")
