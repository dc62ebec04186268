"""ListObjects V1/V2 and ListBuckets through oss2 and raw HTTP: order, delimiters, paging, url encoding."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import oss2
import pytest
import requests

from ossencfs.emulator.storage import Entry
from .conftest import BUCKET, raw

ODD_KEYS = ["a", "a/", "a//b", "a/b/c", "a b/x", "a+b/y", "a%2Fb", "a-", "a0", "é/1", "é/2", "中/文", "🙂/x",
            "\uffff", "z/", "ctl\x01char", "sp ace/ /x", "trailing/"]


def seed(emu, keys, data=b"x"):
    """Fill the bucket through the storage layer (fast); listing still goes over HTTP."""
    st = emu.storage
    b = st.get_bucket(BUCKET)
    for k in keys:
        t = st.temp()
        t.write(data)
        st.commit(b, t, Entry(k, t.size, t.md5_hex, t.crc64, time.time()))


def expected(keys, prefix="", delimiter=""):
    objs, prefixes = [], []
    for k in sorted(keys, key=lambda s: s.encode()):
        if not k.startswith(prefix):
            continue
        if delimiter:
            i = k.find(delimiter, len(prefix))
            if i >= 0:
                cp = k[:i + len(delimiter)]
                if cp not in prefixes:
                    prefixes.append(cp)
                continue
        objs.append(k)
    return objs, prefixes


def collect(iterator):
    objs, prefixes = [], []
    for o in iterator:
        (prefixes if o.is_prefix() else objs).append(o.key)
    return objs, prefixes


def test_byte_order_and_odd_keys(anyauth):
    for k in ODD_KEYS:
        anyauth.put_object(k, k.encode())
    want = sorted(ODD_KEYS, key=lambda s: s.encode())
    assert collect(oss2.ObjectIterator(anyauth))[0] == want
    assert collect(oss2.ObjectIteratorV2(anyauth, max_keys=3))[0] == want
    for prefix, delim in [("", "/"), ("a", "/"), ("a/", "/"), ("é", "/"), ("", "b"), ("a", "")]:
        exp = expected(ODD_KEYS, prefix, delim)
        assert collect(oss2.ObjectIterator(anyauth, prefix=prefix, delimiter=delim, max_keys=2)) == (
            exp[0], exp[1]), (prefix, delim)
        exp_v2 = collect(oss2.ObjectIteratorV2(anyauth, prefix=prefix, delimiter=delim, max_keys=1))
        assert (sorted(exp_v2[0]), sorted(exp_v2[1])) == (sorted(exp[0]), sorted(exp[1]))


def test_pagination_thousands_of_keys(emu, bucket):
    keys = [f"d{i % 7}/f{i:05d}" for i in range(3000)] + [f"top{i}" for i in range(50)]
    seed(emu, keys)
    # a few through HTTP too, in parallel
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: bucket.put_object(f"http/{i:03d}", b"y"), range(100)))
    keys += [f"http/{i:03d}" for i in range(100)]
    want = sorted(keys)
    r = bucket.list_objects(max_keys=1000)
    assert r.is_truncated and r.next_marker == want[999] and len(r.object_list) == 1000
    assert collect(oss2.ObjectIterator(bucket, max_keys=1000))[0] == want
    assert collect(oss2.ObjectIteratorV2(bucket, max_keys=1000))[0] == want
    assert collect(oss2.ObjectIteratorV2(bucket, max_keys=250, prefix="d3/"))[0] == [k for k in want if k.startswith("d3/")]
    objs, prefixes = collect(oss2.ObjectIteratorV2(bucket, delimiter="/", max_keys=2))
    assert prefixes == ["d0/", "d1/", "d2/", "d3/", "d4/", "d5/", "d6/", "http/"]
    assert objs == [f"top{i}" for i in sorted(range(50), key=str)]
    r = bucket.list_objects_v2(start_after="d6/f02999", max_keys=5)
    assert [o.key for o in r.object_list] == [k for k in want if k > "d6/f02999"][:5]
    empty = bucket.list_objects_v2(prefix="nothing/")
    assert not empty.object_list and not empty.is_truncated


def test_listing_fields_raw_xml(emu, bucket):
    bucket.put_object("sp ace+plus%/é", b"12345")
    bucket.put_object("dir/x", b"1")
    root = ET.fromstring(raw(emu, "GET", BUCKET, params={"encoding-type": "url", "delimiter": "/",
                                                         "max-keys": "1", "prefix": ""}).content)
    assert root.tag == "ListBucketResult" and not root.tag.startswith("{")
    assert root.findtext("MaxKeys") == "1" and root.findtext("IsTruncated") == "true"
    assert root.findtext("EncodingType") == "url" and root.findtext("Delimiter") == "/"
    assert root.findtext("CommonPrefixes/Prefix") == "dir/"
    assert root.findtext("NextMarker") == "dir/"
    root = ET.fromstring(raw(emu, "GET", BUCKET, params={"encoding-type": "url", "marker": "dir/x"}).content)
    c = root.find("Contents")
    assert c.findtext("Key") == "sp%20ace%2Bplus%25/%C3%A9"
    assert unquote(c.findtext("Key")) == "sp ace+plus%/é"
    assert c.findtext("LastModified").endswith(".000Z")
    assert c.findtext("ETag").startswith('"') and c.findtext("Type") == "Normal"
    assert c.findtext("Size") == "5" and c.findtext("StorageClass") == "Standard"
    assert c.findtext("Owner/ID")
    root = ET.fromstring(raw(emu, "GET", BUCKET, params={"list-type": "2", "max-keys": "1",
                                                         "continuation-token": ""}).content)
    assert root.findtext("KeyCount") == "1" and root.findtext("NextContinuationToken")
    assert root.find("Contents/Owner") is None


def test_bad_max_keys_and_token(bucket):
    with pytest.raises(oss2.exceptions.InvalidArgument):
        bucket.list_objects(max_keys=1001)
    with pytest.raises(oss2.exceptions.InvalidArgument):
        bucket.list_objects_v2(continuation_token="zz-not-hex")


def test_list_buckets_and_bucket_calls(emu):
    svc = oss2.Service(oss2.Auth("test-ak", "test-sk"), emu.endpoint)
    assert [b.name for b in oss2.BucketIterator(svc)] == [BUCKET]
    nb = oss2.Bucket(oss2.Auth("test-ak", "test-sk"), emu.endpoint, "new-bucket-1")
    nb.create_bucket()
    assert [b.name for b in oss2.BucketIterator(svc)] == [BUCKET, "new-bucket-1"]
    info = nb.get_bucket_info()
    assert info.name == "new-bucket-1" and info.storage_class == "Standard"
    assert nb.get_bucket_location().location == "oss-cn-hangzhou"
    nb.put_object("k", b"v")
    with pytest.raises(oss2.exceptions.BucketNotEmpty):
        nb.delete_bucket()
    nb.delete_object("k")
    nb.delete_bucket()
    assert [b.name for b in oss2.BucketIterator(svc)] == [BUCKET]
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        nb.delete_bucket()
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        nb.get_bucket_info()
    bad = raw(emu, "PUT", "Bad_Name")
    assert bad.status_code == 400 and b"InvalidBucketName" in bad.content
    assert requests.put(f"{emu.endpoint}/unsigned-bucket/").status_code == 403
    r = svc.list_buckets(prefix="bk", max_keys=10)
    assert [b.name for b in r.buckets] == [BUCKET]


def test_bucket_recreated_after_delete(emu):
    nb = oss2.Bucket(oss2.Auth("test-ak", "test-sk"), emu.endpoint, "again")
    nb.create_bucket()
    nb.put_object("a/b", b"1")
    nb.delete_object("a/b")
    nb.delete_bucket()
    nb.create_bucket()
    nb.put_object("a/b", b"2")
    assert nb.get_object("a/b").read() == b"2"
