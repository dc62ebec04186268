"""Multipart upload (plain and oss2 CryptoBucket with its upload context) against the emulator."""
from __future__ import annotations

import hashlib
import os

import oss2
import pytest
from oss2 import crypto
from oss2.models import PartInfo
from oss2.utils import Crc64

from .conftest import AK, SK, BUCKET, expect_error, raw

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "sdk")
KB = 1024


def crc64(data: bytes) -> int:
    c = Crc64(0)
    c.update(data)
    return c.crc


def crypto_bucket(emu, auth=None, region=None) -> oss2.CryptoBucket:
    with open(os.path.join(FIXTURES, "rsa_test_private.pem")) as f:
        priv = f.read()
    with open(os.path.join(FIXTURES, "rsa_test_public.pem")) as f:
        pub = f.read()
    provider = crypto.RsaProvider(key_pair={"private_key": priv, "public_key": pub})
    return oss2.CryptoBucket(auth or oss2.Auth(AK, SK), emu.endpoint, BUCKET, crypto_provider=provider,
                             region=region)


def test_multipart_roundtrip(anyauth):
    key = "mp dir/obj+1%é"
    parts_data = [os.urandom(100 * KB), os.urandom(100 * KB), os.urandom(1234)]
    uid = anyauth.init_multipart_upload(key, headers={"x-oss-meta-m": "init", "Content-Type": "text/mp"}).upload_id
    infos = []
    for i, d in enumerate(parts_data, 1):
        r = anyauth.upload_part(key, uid, i, d)
        assert r.etag == hashlib.md5(d).hexdigest().upper() and r.crc == crc64(d)
        infos.append(PartInfo(i, r.etag, size=len(d), part_crc=r.crc))
    lp = anyauth.list_parts(key, uid)
    assert [p.part_number for p in lp.parts] == [1, 2, 3] and [p.size for p in lp.parts] == [len(d) for d in parts_data]
    lp1 = anyauth.list_parts(key, uid, max_parts=2)
    assert lp1.is_truncated and str(lp1.next_marker) == "2"
    assert not anyauth.object_exists(key)        # nothing visible before Complete
    r = anyauth.complete_multipart_upload(key, uid, infos)   # oss2 checks the combined CRC
    whole = b"".join(parts_data)
    assert r.crc == crc64(whole)
    digest = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest().upper()
    assert r.etag == f"{digest}-3"
    g = anyauth.get_object(key)
    assert g.read() == whole and g.object_type == "Multipart"
    assert g.headers["x-oss-meta-m"] == "init" and g.headers["Content-Type"] == "text/mp"
    assert g.server_crc == crc64(whole)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        anyauth.list_parts(key, uid)


def test_multipart_errors(bucket):
    key = "mperr"
    uid = bucket.init_multipart_upload(key).upload_id
    small = b"s" * 10
    e1 = bucket.upload_part(key, uid, 1, small).etag
    e2 = bucket.upload_part(key, uid, 2, small).etag
    with pytest.raises(oss2.exceptions.InvalidArgument):
        bucket.upload_part(key, uid, 10001, small)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.upload_part(key, "BOGUS", 1, small)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.upload_part("other-key", uid, 1, small)
    with expect_error(400, "EntityTooSmall"):
        bucket.complete_multipart_upload(key, uid, [PartInfo(1, e1), PartInfo(2, e2)])
    with expect_error(400, "InvalidPart"):
        bucket.complete_multipart_upload(key, uid, [PartInfo(1, "0" * 32)])
    with expect_error(400, "InvalidPart"):
        bucket.complete_multipart_upload(key, uid, [PartInfo(3, e1)])
    body = (f"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>\"{e2}\"</ETag></Part>"
            f"<Part><PartNumber>1</PartNumber><ETag>\"{e1}\"</ETag></Part></CompleteMultipartUpload>").encode()
    r = raw(bucket_emu(bucket), "POST", BUCKET, key, params={"uploadId": uid}, data=body)
    assert r.status_code == 400 and b"InvalidPartOrder" in r.content
    r = raw(bucket_emu(bucket), "POST", BUCKET, key, params={"uploadId": uid}, data=b"<not xml")
    assert r.status_code == 400 and b"MalformedXML" in r.content
    # re-uploading a part number replaces it; a single (last) part may be small
    e1b = bucket.upload_part(key, uid, 1, b"replaced").etag
    bucket.complete_multipart_upload(key, uid, [PartInfo(1, e1b)])
    assert bucket.get_object(key).read() == b"replaced"
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.abort_multipart_upload(key, uid)


def bucket_emu(bucket):
    return _EMU[0]


_EMU: list = []


@pytest.fixture(autouse=True)
def _remember(emu):
    _EMU[:] = [emu]
    yield


def test_forbid_overwrite_at_complete_and_abort(bucket):
    bucket.put_object("exists", b"old")
    uid = bucket.init_multipart_upload("exists").upload_id
    e = bucket.upload_part("exists", uid, 1, b"new").etag
    with expect_error(409, "FileAlreadyExists"):
        bucket.complete_multipart_upload("exists", uid, [PartInfo(1, e)],
                                         headers={"x-oss-forbid-overwrite": "true"})
    assert bucket.get_object("exists").read() == b"old"
    bucket.abort_multipart_upload("exists", uid)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.upload_part("exists", uid, 1, b"x")
    with expect_error(409, "FileAlreadyExists"):
        bucket.init_multipart_upload("exists", headers={"x-oss-forbid-overwrite": "true"})
    uid = bucket.init_multipart_upload("fresh").upload_id
    e = bucket.upload_part("fresh", uid, 1, b"a").etag
    bucket.complete_multipart_upload("fresh", uid, [PartInfo(1, e)], headers={"x-oss-forbid-overwrite": "true"})
    uid = bucket.init_multipart_upload("all").upload_id
    bucket.upload_part("all", uid, 1, b"x" * (100 * KB))
    bucket.upload_part("all", uid, 2, b"y")
    bucket.complete_multipart_upload("all", uid, None, headers={"x-oss-complete-all": "yes"})
    assert bucket.get_object("all").read() == b"x" * (100 * KB) + b"y"


def test_upload_part_copy(bucket):
    src = os.urandom(300 * KB)
    bucket.put_object("src/obj", src)
    uid = bucket.init_multipart_upload("dst").upload_id
    r1 = bucket.upload_part_copy(BUCKET, "src/obj", (0, 150 * KB - 1), "dst", uid, 1)
    r2 = bucket.upload_part_copy(BUCKET, "src/obj", (150 * KB, None), "dst", uid, 2)
    assert r1.etag == hashlib.md5(src[:150 * KB]).hexdigest().upper()
    bucket.complete_multipart_upload("dst", uid, [PartInfo(1, r1.etag), PartInfo(2, r2.etag)])
    assert bucket.get_object("dst").read() == src
    uid = bucket.init_multipart_upload("dst2").upload_id
    with pytest.raises(oss2.exceptions.NoSuchKey):
        bucket.upload_part_copy(BUCKET, "missing", (0, 10), "dst2", uid, 1)
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.upload_part_copy(BUCKET, "src/obj", (0, 10), "dst2", uid, 1,
                                headers={"x-oss-copy-source-if-match": '"ABC"'})


def test_list_multipart_uploads(bucket):
    ids = {}
    for k in ["u/a", "u/b", "u/b", "v/c", "w"]:
        ids.setdefault(k, []).append(bucket.init_multipart_upload(k).upload_id)
    got = [(u.key, u.upload_id) for u in oss2.MultipartUploadIterator(bucket, max_uploads=2)]
    assert sorted(got) == sorted((k, i) for k, lst in ids.items() for i in lst)
    assert [u.key for u in oss2.MultipartUploadIterator(bucket, max_uploads=2)] == ["u/a", "u/b", "u/b", "v/c", "w"]
    r = bucket.list_multipart_uploads(delimiter="/")
    assert r.prefix_list == ["u/", "v/"] and [u.key for u in r.upload_list] == ["w"]
    r = bucket.list_multipart_uploads(prefix="u/b")
    assert len(r.upload_list) == 2
    for k in ids:
        for i in ids[k]:
            bucket.abort_multipart_upload(k, i)
    assert not list(oss2.MultipartUploadIterator(bucket))


@pytest.mark.parametrize("v4", [False, True])
def test_crypto_bucket_put_get_ranges(emu, v4):
    auth = oss2.AuthV4(AK, SK) if v4 else oss2.Auth(AK, SK)
    cb = crypto_bucket(emu, auth, region="cn-hangzhou" if v4 else None)
    data = os.urandom(70000)
    cb.put_object("enc/obj", data)
    assert cb.get_object("enc/obj").read() == data
    for s, e in [(0, 15), (1, 100), (17, 69999), (65535, 69999), (12345, None)]:
        assert cb.get_object("enc/obj", byte_range=(s, e)).read() == data[s:(e + 1 if e is not None else None)]
    plain = oss2.Bucket(auth, emu.endpoint, BUCKET, region="cn-hangzhou" if v4 else None)
    h = plain.head_object("enc/obj")
    assert h.headers["x-oss-meta-client-side-encryption-wrap-alg"] == "RSA/NONE/PKCS1Padding"
    assert plain.get_object("enc/obj").read() != data


def test_crypto_bucket_multipart_with_context(emu):
    cb = crypto_bucket(emu)
    part_size = 100 * KB
    data = os.urandom(part_size * 2 + 5000)
    ctx = oss2.models.MultipartUploadCryptoContext(len(data), part_size)
    uid = cb.init_multipart_upload("enc/mp", upload_context=ctx).upload_id
    parts = []
    for i, off in enumerate(range(0, len(data), part_size), 1):
        r = cb.upload_part("enc/mp", uid, i, data[off:off + part_size], upload_context=ctx)
        parts.append(PartInfo(i, r.etag, size=len(data[off:off + part_size]), part_crc=r.crc))
    cb.complete_multipart_upload("enc/mp", uid, parts)
    assert cb.get_object("enc/mp").read() == data
    assert cb.get_object("enc/mp", byte_range=(part_size - 7, part_size + 20)).read() == data[part_size - 7:part_size + 21]
    plain = oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, BUCKET)
    h = plain.head_object("enc/mp")
    assert h.object_type == "Multipart"
    assert h.headers["x-oss-meta-client-side-encryption-data-size"] == str(len(data))


def test_multipart_listing_xml_elements(emu, bucket):
    import xml.etree.ElementTree as ET
    uid = bucket.init_multipart_upload("sp ace+/é").upload_id
    bucket.upload_part("sp ace+/é", uid, 1, b"x")
    root = ET.fromstring(raw(emu, "GET", BUCKET, params={"uploads": "", "encoding-type": "url",
                                                         "max-uploads": "10"}).content)
    for name in ("Bucket", "KeyMarker", "UploadIdMarker", "NextKeyMarker", "NextUploadIdMarker", "MaxUploads",
                 "IsTruncated", "Delimiter", "Prefix"):
        assert root.find(name) is not None, name
    assert root.findtext("Upload/Key") == "sp%20ace%2B/%C3%A9"
    root = ET.fromstring(raw(emu, "GET", BUCKET, "sp ace+/é", params={"uploadId": uid}).content)
    for name in ("Bucket", "Key", "UploadId", "PartNumberMarker", "NextPartNumberMarker", "MaxParts", "IsTruncated"):
        assert root.find(name) is not None, name
    assert root.findtext("Part/PartNumber") == "1" and root.findtext("Part/Size") == "1"


def _segment_dirs(emu) -> list[str]:
    root = os.path.join(emu.storage.get_bucket(BUCKET).root, "segments")
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


def _complete(bucket, key, chunks) -> str:
    uid = bucket.init_multipart_upload(key).upload_id
    parts = [PartInfo(i, bucket.upload_part(key, uid, i, c).etag) for i, c in enumerate(chunks, 1)]
    bucket.complete_multipart_upload(key, uid, parts)
    return uid


def test_multipart_object_lifecycle_keeps_no_stale_parts(emu, bucket):
    a, b2, c = os.urandom(100 * KB), os.urandom(100 * KB), os.urandom(777)
    uid = bucket.init_multipart_upload("life").upload_id
    parts = [PartInfo(i, bucket.upload_part("life", uid, i, d).etag) for i, d in enumerate([a, b2, c], 1)]
    bucket.upload_part("life", uid, 4, b"unlisted part")      # not in Complete: discarded
    bucket.complete_multipart_upload("life", uid, parts)
    whole = a + b2 + c
    assert _segment_dirs(emu) == [uid]
    assert bucket.get_object("life", byte_range=(100 * KB - 5, 100 * KB + 5)).read() == whole[100 * KB - 5:100 * KB + 6]
    assert bucket.get_object("life", byte_range=(0, None)).read() == whole
    bucket.copy_object(BUCKET, "life", "life-copy")
    assert bucket.get_object("life-copy").read() == whole
    uid2 = bucket.init_multipart_upload("from-mp").upload_id
    pc = bucket.upload_part_copy(BUCKET, "life", (100 * KB - 10, 100 * KB + 9), "from-mp", uid2, 1)
    bucket.complete_multipart_upload("from-mp", uid2, [PartInfo(1, pc.etag)])
    assert bucket.get_object("from-mp").read() == whole[100 * KB - 10:100 * KB + 10]
    uid3 = _complete(bucket, "life", [b"x" * (100 * KB), b"y"])   # replaced by another multipart version
    assert sorted(_segment_dirs(emu)) == sorted([uid3, uid2])
    assert bucket.get_object("life").read() == b"x" * (100 * KB) + b"y"
    bucket.put_object("life", b"plain now")                      # replaced by a plain object
    assert _segment_dirs(emu) == [uid2]
    bucket.delete_object("from-mp")
    assert _segment_dirs(emu) == []
    assert bucket.get_object("life-copy").read() == whole


def test_get_keeps_streaming_an_old_multipart_version(emu, bucket):
    big = os.urandom(100 * KB) + os.urandom(300 * KB)
    _complete(bucket, "v", [big[:100 * KB], big[100 * KB:]])
    r = bucket.get_object("v")
    first = r.read(1000)
    bucket.put_object("v", b"new")                                # old segments removed meanwhile
    rest = r.read()
    assert first + rest == big
    assert bucket.get_object("v").read() == b"new"
