"""Object operations through oss2 over real HTTP (plain Bucket, V1 and V4)."""
from __future__ import annotations

import base64
import hashlib
import io
import time

import oss2
import pytest
import requests
from oss2.utils import Crc64

from .conftest import AK, SK, BUCKET, expect_error

HOSTILE_KEYS = ["plain.txt", "with space.bin", "a+b=c&d", "100%/%41", "non-ascii/é中文🙂", "dir/", "dir//x",
                "trailing space ", "?q#frag", "tab\tkey"]


def crc64(data: bytes) -> int:
    c = Crc64(0)
    c.update(data)
    return c.crc


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_put_get_roundtrip_hostile_keys(anyauth, key):
    data = key.encode() * 3 + b"\x00\xff"
    r = anyauth.put_object(key, data, headers={"x-oss-meta-Color": "blue", "Content-Type": "text/x-test"})
    assert r.etag == hashlib.md5(data).hexdigest().upper()
    assert r.crc == crc64(data)
    g = anyauth.get_object(key)
    assert g.read() == data
    assert g.headers["x-oss-meta-color"] == "blue"
    assert g.headers["Content-Type"] == "text/x-test"
    assert g.server_crc == crc64(data)
    assert g.object_type == "Normal"
    h = anyauth.head_object(key)
    assert h.content_length == len(data) and h.etag == r.etag
    assert anyauth.object_exists(key)
    keys = [o.key for o in oss2.ObjectIteratorV2(anyauth)]
    assert keys == [key]
    anyauth.delete_object(key)
    assert not anyauth.object_exists(key)


def test_crc_and_md5_values(bucket):
    r = bucket.put_object("k", b"123456789")
    assert r.crc == 11051210869376104954
    assert bucket.head_object("k").headers["x-oss-hash-crc64ecma"] == "11051210869376104954"
    assert bucket.put_object("empty", b"").crc == 0
    assert bucket.get_object("empty").read() == b""


def test_content_md5_checked(bucket):
    data = b"payload"
    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    bucket.put_object("m", data, headers={"Content-MD5": good})
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(oss2.exceptions.InvalidDigest):
        bucket.put_object("m2", data, headers={"Content-MD5": bad})
    assert not bucket.object_exists("m2")
    with pytest.raises(oss2.exceptions.InvalidDigest):
        bucket.put_object("m3", data, headers={"Content-MD5": "not-base64!"})


def test_chunked_body_and_large_stream(bucket):
    blob = bytes(range(256)) * 12000          # ~3 MB, several server chunks

    def gen():
        for i in range(0, len(blob), 65536):
            yield blob[i:i + 65536]
    r = bucket.put_object("chunked", gen())   # generator -> Transfer-Encoding: chunked
    assert r.crc == crc64(blob)
    assert bucket.get_object("chunked").read() == blob
    bucket.put_object("fileobj", io.BytesIO(blob))
    assert bucket.get_object("fileobj").read() == blob


def test_expect_100_continue(emu, bucket):
    url = bucket.sign_url("PUT", "exp", 60)
    r = requests.put(url, data=b"abc", headers={"Expect": "100-continue"})
    assert r.status_code == 200
    assert bucket.get_object("exp").read() == b"abc"


def test_metadata_limit(bucket):
    bucket.put_object("meta-ok", b"x", headers={"x-oss-meta-a": "v" * 7000})
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bucket.put_object("meta-big", b"x", headers={"x-oss-meta-a": "v" * 9000})
    assert ei.value.status == 400
    assert not bucket.object_exists("meta-big")


def test_forbid_overwrite(bucket):
    bucket.put_object("f", b"1")
    with expect_error(409, "FileAlreadyExists"):
        bucket.put_object("f", b"2", headers={"x-oss-forbid-overwrite": "true"})
    assert bucket.get_object("f").read() == b"1"
    bucket.put_object("f", b"3", headers={"x-oss-forbid-overwrite": "false"})
    assert bucket.get_object("f").read() == b"3"


def test_conditional_put_if_match_is_not_implemented(bucket):
    """Real OSS refuses condition headers on PutObject (EC 0017-00000245), matching ETag or not."""
    etag = bucket.put_object("c", b"1").etag
    for value in ('"00000000000000000000000000000000"', f'"{etag}"'):
        with expect_error(400, "NotImplemented") as ei:
            bucket.put_object("c", b"2", headers={"If-Match": value})
        assert ei.value.details["Header"] == "If-Match" and ei.value.ec == "0017-00000245"
    assert bucket.get_object("c").read() == b"1"


RANGE_DATA = bytes(range(100))


@pytest.mark.parametrize("spec,content_range", [
    ("bytes=0-9", "bytes 0-9/100"),
    ("bytes=90-", "bytes 90-99/100"),
    ("bytes=-5", "bytes 95-99/100"),
    ("bytes=95-200", None),        # default: out-of-range end -> whole object, 200
    ("bytes=100-", None),
    ("bytes=-200", None),
    ("bytes=5-1", None),
    ("items=1-2", None),
    ("bytes=0-1,5-6", None),
])
def test_range_default_behaviour(bucket, spec, content_range):
    bucket.put_object("r", RANGE_DATA)
    r = bucket.get_object("r", headers={"Range": spec})
    if content_range is None:
        assert r.status == 200 and "Content-Range" not in r.headers
        assert r.read() == RANGE_DATA
    else:
        assert r.status == 206 and r.headers["Content-Range"] == content_range
        s, e = map(int, content_range.split()[1].split("/")[0].split("-"))
        assert r.read() == RANGE_DATA[s:e + 1]


@pytest.mark.parametrize("spec,status,content_range", [
    ("bytes=95-200", 206, "bytes 95-99/100"),
    ("bytes=-200", 206, "bytes 0-99/100"),
    ("bytes=10-20", 206, "bytes 10-20/100"),
])
def test_range_standard_behaviour(bucket, spec, status, content_range):
    bucket.put_object("r", RANGE_DATA)
    r = bucket.get_object("r", headers={"Range": spec, "x-oss-range-behavior": "standard"})
    assert r.status == status
    assert r.headers["Content-Range"] == content_range
    s, e = map(int, content_range.split()[1].split("/")[0].split("-"))
    assert r.read() == RANGE_DATA[s:e + 1]


def test_range_standard_invalid_start(bucket):
    bucket.put_object("r", RANGE_DATA)
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bucket.get_object("r", headers={"Range": "bytes=100-200", "x-oss-range-behavior": "standard"})
    assert ei.value.status == 416 and ei.value.code == "InvalidRange"


def test_byte_range_api_and_content_range(bucket):
    bucket.put_object("r", RANGE_DATA)
    r = bucket.get_object("r", byte_range=(10, None))
    assert r.read() == RANGE_DATA[10:]
    assert r.headers["Content-Range"] == "bytes 10-99/100"
    assert r.server_crc == crc64(RANGE_DATA)   # whole-object CRC even on a ranged GET


def test_conditional_get(bucket):
    etag = bucket.put_object("c", b"data").etag
    future = oss2.utils.http_date(int(time.time()) + 3600)
    past = oss2.utils.http_date(int(time.time()) - 3600)
    assert bucket.get_object("c", headers={"If-Match": f'"{etag}"'}).read() == b"data"
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.get_object("c", headers={"If-Match": '"ABC"'})
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.get_object("c", headers={"If-None-Match": f'"{etag}"'})
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.get_object("c", headers={"If-Modified-Since": future})
    assert bucket.get_object("c", headers={"If-Modified-Since": past}).read() == b"data"
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.get_object("c", headers={"If-Unmodified-Since": past})
    assert bucket.get_object("c", headers={"If-Unmodified-Since": future,
                                           "If-Modified-Since": past}).read() == b"data"
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.head_object("c", headers={"If-Match": '"ABC"'})
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.head_object("c", headers={"If-None-Match": f'"{etag}"'})


def test_response_overrides(bucket):
    bucket.put_object("o", b"x", headers={"Content-Type": "text/plain"})
    r = bucket.get_object("o", params={"response-content-type": "image/png",
                                       "response-content-disposition": "attachment; filename=\"a b.png\"",
                                       "response-cache-control": "no-cache"})
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["Content-Disposition"] == 'attachment; filename="a b.png"'
    assert r.headers["Cache-Control"] == "no-cache"


def test_head_errors_carry_x_oss_err(bucket):
    with pytest.raises(oss2.exceptions.NoSuchKey) as ei:
        bucket.head_object("missing")
    assert ei.value.code == "NoSuchKey" and ei.value.request_id
    url = bucket.sign_url("HEAD", "missing", 60)
    r = requests.head(url)
    assert r.status_code == 404
    xml = base64.b64decode(r.headers["x-oss-err"]).decode()
    assert "<Code>NoSuchKey</Code>" in xml
    with pytest.raises(oss2.exceptions.NoSuchKey):
        bucket.get_object_meta("missing")
    assert not bucket.object_exists("missing")


def test_get_object_meta(bucket):
    r = bucket.put_object("gm", b"12345")
    m = bucket.get_object_meta("gm")
    assert m.content_length == 5 and m.etag == r.etag and m.last_modified > 0


def test_missing_bucket_and_invalid_names(emu):
    other = oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, "nobucket")
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        other.put_object("k", b"x")
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        other.get_object("k")
    b = oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, BUCKET)
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        b.put_object("x" * 1024, b"x")
    assert ei.value.code == "InvalidObjectName"
    url = b.sign_url("PUT", "\\bad", 60)
    assert requests.put(url, data=b"x").status_code == 400


def test_copy_object_copy_and_replace(anyauth):
    key = "src dir/ü+%.bin"
    anyauth.put_object(key, b"copy me", headers={"x-oss-meta-a": "1", "Content-Type": "text/a"})
    r = anyauth.copy_object(BUCKET, key, "dst/1")
    assert r.etag == hashlib.md5(b"copy me").hexdigest().upper()
    g = anyauth.get_object("dst/1")
    assert g.read() == b"copy me"
    assert g.headers["x-oss-meta-a"] == "1" and g.headers["Content-Type"] == "text/a"
    anyauth.copy_object(BUCKET, key, "dst/2", headers={"x-oss-metadata-directive": "REPLACE",
                                                       "x-oss-meta-b": "2", "Content-Type": "text/b"})
    h = anyauth.head_object("dst/2")
    assert "x-oss-meta-a" not in h.headers and h.headers["x-oss-meta-b"] == "2"
    assert h.headers["Content-Type"] == "text/b"
    anyauth.update_object_meta(key, {"x-oss-meta-c": "3"})
    h = anyauth.head_object(key)
    assert h.headers["x-oss-meta-c"] == "3" and "x-oss-meta-a" not in h.headers
    assert anyauth.get_object(key).read() == b"copy me"


def test_copy_object_errors_and_conditions(bucket):
    etag = bucket.put_object("s", b"v").etag
    with pytest.raises(oss2.exceptions.NoSuchKey):
        bucket.copy_object(BUCKET, "nope", "d")
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        bucket.copy_object("nobucket", "s", "d")
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.copy_object(BUCKET, "s", "d", headers={"x-oss-copy-source-if-match": '"ABC"'})
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.copy_object(BUCKET, "s", "d", headers={"x-oss-copy-source-if-none-match": f'"{etag}"'})
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.copy_object(BUCKET, "s", "d", headers={
            "x-oss-copy-source-if-unmodified-since": oss2.utils.http_date(int(time.time()) - 3600)})
    with pytest.raises(oss2.exceptions.InvalidArgument):
        bucket.copy_object(BUCKET, "s", "d", headers={"x-oss-metadata-directive": "BOGUS"})
    assert not bucket.object_exists("d")
    bucket.put_object("d", b"old")
    with expect_error(409, "FileAlreadyExists"):
        bucket.copy_object(BUCKET, "s", "d", headers={"x-oss-forbid-overwrite": "true"})
    bucket.copy_object(BUCKET, "s", "d", headers={"x-oss-copy-source-if-match": f'"{etag}"'})
    assert bucket.get_object("d").read() == b"v"


def test_delete_and_batch_delete(anyauth):
    keys = ["a", "b c", "d+e", "f/", "ü"]
    for k in keys:
        anyauth.put_object(k, b"x")
    anyauth.delete_object("missing")      # 204 for a missing key
    r = anyauth.batch_delete_objects(keys[:3] + ["never-existed"])
    assert sorted(r.deleted_keys) == sorted(keys[:3] + ["never-existed"])
    assert [o.key for o in oss2.ObjectIterator(anyauth)] == ["f/", "ü"]
    anyauth.batch_delete_objects(["f/", "ü"])
    assert not list(oss2.ObjectIterator(anyauth))


def test_batch_delete_requires_md5(emu, bucket):
    body = b"<Delete><Quiet>false</Quiet><Object><Key>a</Key></Object></Delete>"
    req_url = f"{emu.endpoint}/{BUCKET}/?delete"
    headers = {"Date": oss2.utils.http_date(), "Content-Type": "application/xml"}
    headers["Authorization"] = sign_v1("POST", f"/{BUCKET}/?delete", headers)
    r = requests.post(req_url, data=body, headers=headers)
    assert r.status_code == 400 and b"InvalidDigest" in r.content
    bucket.put_object("a", b"x")
    quiet = b"<Delete><Quiet>true</Quiet><Object><Key>a</Key></Object></Delete>"
    headers = {"Date": oss2.utils.http_date(), "Content-Type": "application/xml",
               "Content-MD5": base64.b64encode(hashlib.md5(quiet).digest()).decode()}
    headers["Authorization"] = sign_v1("POST", f"/{BUCKET}/?delete", headers)
    r = requests.post(req_url, data=quiet, headers=headers)
    assert r.status_code == 200 and b"<Deleted>" not in r.content
    assert not bucket.object_exists("a")


def sign_v1(method: str, resource: str, headers: dict[str, str]) -> str:
    import hmac
    oss = "".join(f"{k.lower()}:{v}\n" for k, v in sorted(headers.items(), key=lambda kv: kv[0].lower())
                  if k.lower().startswith("x-oss-"))
    sts = "\n".join([method, headers.get("Content-MD5", ""), headers.get("Content-Type", ""),
                     headers.get("Date", ""), oss + resource])
    sig = base64.b64encode(hmac.new(SK.encode(), sts.encode(), hashlib.sha1).digest()).decode()
    return f"OSS {AK}:{sig}"


def test_append_object(bucket):
    r1 = bucket.append_object("ap", 0, b"hello ")
    assert r1.next_position == 6 and r1.crc == crc64(b"hello ")
    r2 = bucket.append_object("ap", 6, b"world", init_crc=r1.crc)
    assert r2.next_position == 11 and r2.crc == crc64(b"hello world")
    g = bucket.get_object("ap")
    assert g.read() == b"hello world" and g.object_type == "Appendable"
    assert g.headers["x-oss-next-append-position"] == "11"
    with pytest.raises(oss2.exceptions.PositionNotEqualToLength) as ei:
        bucket.append_object("ap", 3, b"x")
    assert ei.value.next_position == 11
    bucket.put_object("normal", b"n")
    with pytest.raises(oss2.exceptions.ObjectNotAppendable):
        bucket.append_object("normal", 1, b"x")


def test_symlinks(anyauth):
    target = "dir/target file+%é"
    anyauth.put_object(target, b"target data", headers={"x-oss-meta-t": "1"})
    anyauth.put_symlink(target, "links/l1", headers={"x-oss-meta-l": "2"})
    assert anyauth.get_symlink("links/l1").target_key == target
    g = anyauth.get_object("links/l1")
    assert g.read() == b"target data"
    # through the link: the target's type and data, the link's own user metadata (SPEC D.6 corrected)
    assert g.headers["x-oss-object-type"] == "Normal"
    assert g.headers["x-oss-meta-l"] == "2" and "x-oss-meta-t" not in g.headers
    assert anyauth.get_object("links/l1", byte_range=(7, 10)).read() == b"data"
    meta = anyauth.get_object_meta("links/l1")
    assert meta.content_length == len(target.encode())
    objs = {o.key: o for o in oss2.ObjectIteratorV2(anyauth)}
    assert objs["links/l1"].type == "Symlink" and objs["links/l1"].size == len(target.encode())
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        anyauth.get_symlink(target)
    assert ei.value.code == "NotSymlink"
    with expect_error(409, "FileAlreadyExists"):
        anyauth.put_symlink(target, "links/l1", headers={"x-oss-forbid-overwrite": "true"})
    anyauth.put_symlink("nowhere", "links/dangling")
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        anyauth.get_object("links/dangling")
    assert ei.value.status == 404 and ei.value.code == "SymlinkTargetNotExist"
    anyauth.put_symlink("links/l1", "links/l2")                  # a link to a link is not followed
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        anyauth.get_object("links/l2")
    assert ei.value.code == "SymlinkTargetNotExist"
    anyauth.delete_object("links/l1")
    assert anyauth.object_exists(target)
    with pytest.raises(oss2.exceptions.NoSuchKey):
        anyauth.get_symlink("links/l1")


def test_acl_calls(bucket):
    bucket.put_object("acl", b"x")
    assert bucket.get_object_acl("acl").acl == "default"
    bucket.put_object_acl("acl", oss2.OBJECT_ACL_PRIVATE)
    assert bucket.get_bucket_acl().acl == "private"


def test_get_to_file_checks_crc(bucket, tmp_path):
    data = b"z" * 300000
    bucket.put_object("f", data)
    out = tmp_path / "out"
    bucket.get_object_to_file("f", str(out))
    assert out.read_bytes() == data


def test_entity_too_large(bucket, monkeypatch):
    import ossencfs.emulator.ops_base as ops
    monkeypatch.setattr(ops, "MAX_OBJECT", 2 << 20)
    blob = b"L" * (3 << 20)
    with expect_error(400, "EntityTooLarge"):
        bucket.put_object("too-big", blob)                        # Content-Length says so

    def gen():
        for i in range(0, len(blob), 1 << 18):
            yield blob[i:i + (1 << 18)]
    with pytest.raises((oss2.exceptions.ServerError, oss2.exceptions.RequestError)):
        bucket.put_object("too-big", gen())                      # chunked: found while streaming
    monkeypatch.setattr(ops, "MAX_OBJECT", 5 << 30)
    assert not bucket.object_exists("too-big")
    bucket.put_object("fine", b"ok")
