"""What real OSS refuses, the emulator refuses too (SPEC D.13), and what it accepts keeps working.

Each test would fail if the check it probes were removed from the emulator.
"""
from __future__ import annotations

import os
import time

import oss2
import pytest
import requests
from oss2.models import PartInfo, RestoreConfiguration, RestoreJobParameters

from ossencfs.cli import build_parser
from ossencfs.emulator.faults import FAIL_CODES

from .conftest import AK, SK, BUCKET, expect_error, raw
from .test_multipart import crypto_bucket

KB = 1024
CSE = "x-oss-meta-client-side-encryption-"
CSE_BASE = {CSE + "key": "a2V5", CSE + "start": "c3RhcnQ=", CSE + "cek-alg": "AES/CTR/NoPadding",
            CSE + "wrap-alg": "RSA/NONE/PKCS1Padding"}


def _err(status: int, code: str, ec: str | None = None):
    """expect_error that also checks the EC element (oss2 exposes it as e.ec)."""
    class _Cm(expect_error):
        def __exit__(self, *exc):
            handled = super().__exit__(*exc)
            if ec is not None:
                assert self.info.value.ec == ec, self.info.value.details
            return handled
    return _Cm(status, code)


# ---- 1. PutObject takes no condition headers --------------------------------------------------------
@pytest.mark.parametrize("name,value", [("If-Match", '"{etag}"'), ("If-None-Match", "*"),
                                        ("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT"),
                                        ("If-Unmodified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")])
def test_put_object_condition_headers_not_implemented(bucket, name, value):
    etag = bucket.put_object("p", b"old").etag
    with _err(400, "NotImplemented", "0017-00000245") as ei:
        bucket.put_object("p", b"new", headers={name: value.format(etag=etag)})
    assert ei.value.details["Header"] == name
    assert ei.value.details["Message"] == "A header you provided implies functionality that is not implemented."
    assert bucket.get_object("p").read() == b"old"


def test_append_condition_headers_not_implemented_but_get_and_copy_conditions_work(bucket):
    with _err(400, "NotImplemented", "0017-00000245"):
        bucket.append_object("ap", 0, b"x", headers={"If-None-Match": "*"})
    assert not bucket.object_exists("ap")
    etag = bucket.put_object("s", b"data").etag
    assert bucket.get_object("s", headers={"If-Match": f'"{etag}"'}).read() == b"data"
    bucket.copy_object(BUCKET, "s", "d", headers={"x-oss-copy-source-if-match": f'"{etag}"'})
    assert bucket.get_object("d").read() == b"data"


# ---- 2. CopyObject of client-side-encrypted objects -----------------------------------------------------
def test_cse_copy_to_other_key_keeps_every_header(emu, bucket):
    cb = crypto_bucket(emu)
    data = os.urandom(3000)
    cb.put_object("enc/a", data, headers={"x-oss-meta-mode": "33188"})
    bucket.copy_object(BUCKET, "enc/a", "enc/b")
    assert cb.get_object("enc/b").read() == data
    ha, hb = bucket.head_object("enc/a").headers, bucket.head_object("enc/b").headers
    assert {k: v for k, v in ha.items() if k.startswith("x-oss-meta-")} == \
        {k: v for k, v in hb.items() if k.startswith("x-oss-meta-")}


@pytest.mark.parametrize("dst,directive", [("enc/a", "REPLACE"), ("enc/other", "REPLACE"), ("enc/a", "COPY")])
def test_cse_copy_that_could_change_metadata_is_refused(emu, bucket, dst, directive):
    cb = crypto_bucket(emu)
    cb.put_object("enc/a", b"secret", headers={"x-oss-meta-mode": "33188"})
    before = bucket.head_object("enc/a").headers
    # a REPLACE that re-sends every CSE header unchanged is refused too (help.../0005-00000421)
    h = {k: v for k, v in before.items() if k.startswith("x-oss-meta-")}
    h.update({"x-oss-metadata-directive": directive, "x-oss-meta-mode": "33261"})
    with _err(400, "InvalidEncryptionRequest", "0005-00000421"):
        bucket.copy_object(BUCKET, "enc/a", dst, headers=h)
    assert bucket.head_object("enc/a").headers["x-oss-meta-mode"] == "33188"
    if dst != "enc/a":
        assert not bucket.object_exists(dst)


def test_replace_copy_adding_cse_headers_or_of_legacy_cse_object_is_refused(bucket):
    bucket.put_object("plain", b"p")
    with _err(400, "InvalidEncryptionRequest", "0005-00000421"):
        bucket.copy_object(BUCKET, "plain", "plain",
                           headers=dict(CSE_BASE, **{"x-oss-metadata-directive": "REPLACE"}))
    bucket.put_object("legacy", b"l", headers={"x-oss-meta-oss-crypto-key": "aaaa",
                                               "x-oss-meta-oss-crypto-start": "bbbb"})
    with _err(400, "InvalidEncryptionRequest", "0005-00000421"):
        bucket.copy_object(BUCKET, "legacy", "legacy",
                           headers={"x-oss-metadata-directive": "REPLACE", "x-oss-meta-x": "1"})
    # plain objects: REPLACE onto itself (update_object_meta) keeps working
    bucket.update_object_meta("plain", {"x-oss-meta-x": "2"})
    assert bucket.head_object("plain").headers["x-oss-meta-x"] == "2"


# ---- 3. UploadPartCopy from a CSE source -------------------------------------------------------------
def test_upload_part_copy_from_cse_source_is_refused(emu, bucket):
    crypto_bucket(emu).put_object("enc/src", os.urandom(200 * KB))
    bucket.put_object("plain/src", b"q" * (200 * KB))
    uid = bucket.init_multipart_upload("dst").upload_id
    with _err(400, "InvalidEncryptionRequest", "0042-00000309"):
        bucket.upload_part_copy(BUCKET, "enc/src", (0, 100 * KB - 1), "dst", uid, 1)
    r = bucket.upload_part_copy(BUCKET, "plain/src", (0, 100 * KB - 1), "dst", uid, 1)
    bucket.complete_multipart_upload("dst", uid, [PartInfo(1, r.etag)])
    assert bucket.get_object("dst").read() == b"q" * (100 * KB)


# ---- 4. CopyObject size limit ------------------------------------------------------------------------
def test_copy_limit_default_option_and_admin_endpoint(emu, bucket):
    assert emu.faults["copy_limit"] == 10 ** 9
    bucket.put_object("big", b"b" * 101)
    bucket.put_object("small", b"s" * 100)
    r = requests.post(f"{emu.endpoint}/-/admin/faults", params={"copy_limit": "100"}, headers=emu.admin_headers)
    assert r.status_code == 200 and r.json()["copy_limit"] == 100
    with _err(400, "EntityTooLarge") as ei:
        bucket.copy_object(BUCKET, "big", "big2")
    assert ei.value.details["Message"] == "Source object Length exceeds the maximum allowed size."
    assert not bucket.object_exists("big2")
    bucket.copy_object(BUCKET, "small", "small2")
    # UploadPartCopy of a plain object is the way above the limit
    uid = bucket.init_multipart_upload("big3").upload_id
    r = bucket.upload_part_copy(BUCKET, "big", (0, 100), "big3", uid, 1)
    bucket.complete_multipart_upload("big3", uid, [PartInfo(1, r.etag)])
    assert bucket.get_object("big3").read() == b"b" * 101
    emu.set_faults(copy_limit=1000)
    bucket.copy_object(BUCKET, "big", "big2")


def test_copy_limit_constructor_argument(tmp_path):
    from ossencfs.emulator.server import Emulator
    with Emulator(str(tmp_path / "e"), credentials={AK: SK}, buckets=[BUCKET], fsync=False, copy_limit=10,
                  restore_seconds=5, fail_code="TotalQpsLimitExceeded") as e:
        assert e.faults["copy_limit"] == 10 and e.faults["restore_seconds"] == 5.0
        assert e.faults["fail_code"] == "TotalQpsLimitExceeded"
        b = oss2.Bucket(oss2.Auth(AK, SK), e.endpoint, BUCKET)
        b.put_object("k", b"x" * 11)
        with _err(400, "EntityTooLarge"):
            b.copy_object(BUCKET, "k", "k2")


def test_cli_flags():
    args = build_parser().parse_args(["emulator", "--data", "/tmp/x", "--access-key-id", "a",
                                      "--access-key-secret", "b", "--copy-limit", "5", "--restore-seconds",
                                      "0.5", "--fail-code", "QpsLimitExceeded"])
    assert (args.copy_limit, args.restore_seconds, args.fail_code) == (5, 0.5, "QpsLimitExceeded")
    d = build_parser().parse_args(["emulator", "--data", "/tmp/x", "--access-key-id", "a",
                                   "--access-key-secret", "b"])
    assert (d.copy_limit, d.restore_seconds, d.fail_code) == (10 ** 9, 1.0, "ServiceUnavailable")


# ---- 5. Appendable objects cannot be copied ----------------------------------------------------------------
def test_appendable_objects_cannot_be_copied(bucket):
    bucket.append_object("ap", 0, b"a" * (100 * KB))
    with _err(400, "OperationNotSupported"):
        bucket.copy_object(BUCKET, "ap", "ap2")
    assert not bucket.object_exists("ap2")
    uid = bucket.init_multipart_upload("ap3").upload_id
    with _err(400, "OperationNotSupported"):
        bucket.upload_part_copy(BUCKET, "ap", (0, 99), "ap3", uid, 1)


# ---- 6. Archive / Cold Archive and RestoreObject ----------------------------------------------------------
def test_archive_read_refused_until_restored(emu, bucket):
    emu.set_faults(restore_seconds=0.4)
    bucket.put_object("arc", b"frozen", headers={"x-oss-storage-class": "Archive", "x-oss-meta-m": "1"})
    h = bucket.head_object("arc")
    assert h.headers["x-oss-storage-class"] == "Archive" and h.content_length == 6
    assert "x-oss-restore" not in h.headers
    with _err(403, "InvalidObjectState", "0016-00000404") as ei:
        bucket.get_object("arc")
    assert ei.value.details["Message"] == "The operation is not valid for the object's state"
    with _err(403, "InvalidObjectState"):
        bucket.copy_object(BUCKET, "arc", "arc-copy")
    assert bucket.restore_object("arc").status == 202
    assert bucket.head_object("arc").headers["x-oss-restore"] == 'ongoing-request="true"'
    with _err(409, "RestoreAlreadyInProgress", "0016-00000701"):
        bucket.restore_object("arc")
    with _err(403, "InvalidObjectState"):
        bucket.get_object("arc")
    time.sleep(0.6)
    restore = bucket.head_object("arc").headers["x-oss-restore"]
    assert restore.startswith('ongoing-request="false", expiry-date="') and restore.endswith(' GMT"')
    assert bucket.get_object("arc").read() == b"frozen"
    assert bucket.restore_object("arc").status == 200                  # restored: extends
    bucket.copy_object(BUCKET, "arc", "arc-copy", headers={"x-oss-storage-class": "Standard"})
    assert bucket.get_object("arc-copy").read() == b"frozen"
    bucket.put_object("arc", b"new", headers={"x-oss-storage-class": "Archive"})    # a new object: frozen again
    with _err(403, "InvalidObjectState"):
        bucket.get_object("arc")


def test_cold_archive_restore_with_days_and_tier(emu, bucket):
    emu.set_faults(restore_seconds=0)
    bucket.put_object("cold", b"ice", headers={"x-oss-storage-class": "ColdArchive"})
    cfg = RestoreConfiguration(days=2, job_parameters=RestoreJobParameters(oss2.models.RESTORE_TIER_EXPEDITED))
    assert bucket.restore_object("cold", input=cfg).status == 202
    assert bucket.get_object("cold").read() == b"ice"
    with _err(400, "InvalidArgument"):
        bucket.restore_object("cold", input=RestoreConfiguration(days=400))
    bucket.put_object("std", b"s")
    with _err(400, "OperationNotSupported"):
        bucket.restore_object("std")
    with _err(404, "NoSuchKey"):
        bucket.restore_object("missing")


def test_storage_class_on_copy_and_multipart_and_invalid(emu, bucket):
    bucket.put_object("s", b"x")
    bucket.copy_object(BUCKET, "s", "s-arc", headers={"x-oss-storage-class": "Archive"})
    assert bucket.head_object("s-arc").headers["x-oss-storage-class"] == "Archive"
    with _err(403, "InvalidObjectState"):
        bucket.get_object("s-arc")
    uid = bucket.init_multipart_upload("mp-arc", headers={"x-oss-storage-class": "ColdArchive"}).upload_id
    r = bucket.upload_part("mp-arc", uid, 1, b"m")
    bucket.complete_multipart_upload("mp-arc", uid, [PartInfo(1, r.etag)])
    assert bucket.head_object("mp-arc").headers["x-oss-storage-class"] == "ColdArchive"
    objs = {o.key: o for o in oss2.ObjectIteratorV2(bucket)}
    assert objs["mp-arc"].storage_class == "ColdArchive"
    with _err(400, "InvalidArgument"):
        bucket.put_object("bad", b"x", headers={"x-oss-storage-class": "Glacier"})


# ---- 7. HEAD of a native symlink -----------------------------------------------------------------------
def test_symlink_head_reports_target_but_link_metadata_and_meta_reports_link(emu, bucket):
    r = bucket.put_object("t", b"target!", headers={"x-oss-meta-t": "1", "Content-Type": "text/x-t"})
    bucket.put_symlink("t", "l", headers={"x-oss-meta-l": "2"})
    h = bucket.head_object("l")
    assert h.content_length == 7 and h.etag == r.etag and h.headers["Content-Type"] == "text/x-t"
    assert h.headers["x-oss-hash-crc64ecma"] == str(r.crc)
    assert h.headers["x-oss-meta-l"] == "2" and "x-oss-meta-t" not in h.headers
    assert h.object_type == "Normal"                       # HEAD alone does not reveal the link
    m = raw(emu, "HEAD", BUCKET, "l", params={"objectMeta": ""})
    assert m.headers["x-oss-object-type"] == "Symlink" and m.headers["Content-Length"] == "1"
    assert bucket.get_object_meta("t").headers["x-oss-object-type"] == "Normal"


# ---- 8. CSE header checks on Put / Initiate / UploadPart / Complete ---------------------------------------
@pytest.mark.parametrize("missing,ec", [("key", "0005-00000401"), ("start", "0005-00000402"),
                                        ("cek-alg", "0005-00000403"), ("wrap-alg", "0005-00000404")])
def test_put_and_initiate_need_the_whole_cse_header_set(bucket, missing, ec):
    h = {k: v for k, v in CSE_BASE.items() if k != CSE + missing}
    with _err(400, "InvalidEncryptionRequest", ec):
        bucket.put_object("p", b"x" * 16, headers=h)
    assert not bucket.object_exists("p")
    with _err(400, "InvalidEncryptionRequest", ec):
        bucket.init_multipart_upload("m", headers=dict(h, **{CSE + "data-size": "16", CSE + "part-size": "16"}))


@pytest.mark.parametrize("extra,ec", [({CSE + "part-size": "16"}, "0005-00000406"),
                                      ({CSE + "data-size": "16"}, "0005-00000407"),
                                      ({CSE + "data-size": "x", CSE + "part-size": "16"}, "0005-00000408"),
                                      ({CSE + "data-size": "16", CSE + "part-size": "1.5"}, "0005-00000409")])
def test_initiate_needs_integer_data_size_and_part_size(bucket, extra, ec):
    with _err(400, "InvalidEncryptionRequest", ec):
        bucket.init_multipart_upload("m", headers=dict(CSE_BASE, **extra))


def test_upload_part_cse_checks(bucket):
    P = 100 * KB
    h = dict(CSE_BASE, **{CSE + "data-size": str(2 * P + 10), CSE + "part-size": str(P)})
    uid = bucket.init_multipart_upload("cse", headers=h).upload_id
    no_data_size = {k: v for k, v in h.items() if k != CSE + "data-size"}
    with _err(400, "InvalidEncryptionRequest", "0005-00000406"):
        bucket.upload_part("cse", uid, 1, b"p" * P, headers=no_data_size)
    with _err(400, "InvalidEncryptionRequest", "0005-00000401"):
        bucket.upload_part("cse", uid, 1, b"p" * P, headers={k: v for k, v in h.items() if k != CSE + "key"})
    with _err(400, "InvalidEncryptionRequest", "0005-00000418"):
        bucket.upload_part("cse", uid, 1, b"p" * P, headers=dict(h, **{CSE + "part-size": str(2 * P)}))
    with _err(400, "InvalidEncryptionRequest", "0005-00000413"):
        bucket.upload_part("cse", uid, 1, b"p" * P, headers=dict(h, **{CSE + "start": "b3RoZXI="}))
    with _err(400, "InvalidEncryptionRequest", "0005-00000419"):       # not the last part: exactly P
        bucket.upload_part("cse", uid, 1, b"p" * (P + 16), headers=h)
    with _err(400, "InvalidEncryptionRequest", "0005-00000419"):       # the last part: the remainder
        bucket.upload_part("cse", uid, 3, b"p" * 16, headers=h)
    assert bucket.list_parts("cse", uid).parts == []
    parts = [PartInfo(1, bucket.upload_part("cse", uid, 1, b"p" * P, headers=h).etag),
             PartInfo(2, bucket.upload_part("cse", uid, 2, b"p" * P, headers=h).etag),
             PartInfo(3, bucket.upload_part("cse", uid, 3, b"p" * 10, headers=h).etag),
             PartInfo(4, bucket.upload_part("cse", uid, 4, b"p" * 10, headers=h).etag)]
    with _err(400, "InvalidEncryptionRequest", "0005-00000411"):        # more parts than data-size allows
        bucket.complete_multipart_upload("cse", uid, parts)
    bucket.complete_multipart_upload("cse", uid, parts[:3])
    assert bucket.head_object("cse").content_length == 2 * P + 10


def test_parts_without_cse_headers_are_checked_at_complete(bucket):
    """Java's encryption client sends no CSE headers on UploadPart: accepted there, sizes checked at Complete."""
    P = 100 * KB
    h = dict(CSE_BASE, **{CSE + "data-size": str(2 * P), CSE + "part-size": str(P)})
    uid = bucket.init_multipart_upload("j", headers=h).upload_id
    parts = [PartInfo(1, bucket.upload_part("j", uid, 1, b"a" * (P + 16)).etag),
             PartInfo(2, bucket.upload_part("j", uid, 2, b"b" * (P - 16)).etag)]
    with _err(400, "InvalidEncryptionRequest", "0005-00000419"):
        bucket.complete_multipart_upload("j", uid, parts)
    parts = [PartInfo(1, bucket.upload_part("j", uid, 1, b"a" * P).etag),
             PartInfo(2, bucket.upload_part("j", uid, 2, b"b" * P).etag)]
    bucket.complete_multipart_upload("j", uid, parts)


def test_crypto_bucket_multipart_with_uneven_last_part_still_works(emu):
    cb = crypto_bucket(emu)
    P = 100 * KB
    data = os.urandom(P * 2 + 5000)
    ctx = oss2.models.MultipartUploadCryptoContext(len(data), P)
    uid = cb.init_multipart_upload("enc/mp", upload_context=ctx).upload_id
    parts = [PartInfo(i, cb.upload_part("enc/mp", uid, i, data[off:off + P], upload_context=ctx).etag)
             for i, off in enumerate(range(0, len(data), P), 1)]
    cb.complete_multipart_upload("enc/mp", uid, parts)
    assert cb.get_object("enc/mp").read() == data


# ---- 9. forbid-overwrite values, metadata names, throttling answers ----------------------------------------
@pytest.mark.parametrize("value", ["yes", "True", "1", ""])
def test_forbid_overwrite_only_true_or_false(bucket, value):
    bucket.put_object("src", b"s")
    h = {"x-oss-forbid-overwrite": value}
    with _err(400, "InvalidArgument", "0017-00000279"):
        bucket.put_object("f", b"x", headers=h)
    with _err(400, "InvalidArgument", "0017-00000279"):
        bucket.copy_object(BUCKET, "src", "f", headers=h)
    with _err(400, "InvalidArgument", "0017-00000279"):
        bucket.init_multipart_upload("f", headers=h)
    with _err(400, "InvalidArgument", "0017-00000279"):
        bucket.put_symlink("src", "f", headers=h)
    assert not bucket.object_exists("f")


@pytest.mark.parametrize("name", ["x-oss-meta-my_key", "x-oss-meta-a.b", "x-oss-meta-a@b"])
def test_user_metadata_names_letters_digits_hyphen_only(bucket, name):
    with _err(400, "InvalidArgument", "0011-00000004"):
        bucket.put_object("m", b"x", headers={name: "v"})
    assert not bucket.object_exists("m")
    bucket.put_object("m", b"x", headers={"x-oss-meta-Good-Name-1": "v"})
    assert bucket.head_object("m").headers["x-oss-meta-good-name-1"] == "v"


@pytest.mark.parametrize("code", sorted(FAIL_CODES))
def test_injected_failure_codes(emu, bucket, code):
    emu.set_faults(fail_rate=1.0, fail_code=code)
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        bucket.put_object("t", b"x")
    assert (ei.value.status, ei.value.code) == FAIL_CODES[code][0:1] + (code,)
    assert ei.value.details["Message"] == FAIL_CODES[code][1]
    emu.set_faults(fail_rate=0.0)
    assert not bucket.object_exists("t")


def test_fail_code_via_admin_endpoint(emu, bucket):
    r = requests.post(f"{emu.endpoint}/-/admin/faults", params={"fail_rate": "1", "fail_code": "QpsLimitExceeded"}, headers=emu.admin_headers)
    assert r.status_code == 200 and r.json()["fail_code"] == "QpsLimitExceeded"
    with expect_error(429, "QpsLimitExceeded"):
        bucket.get_bucket_info()
    assert requests.post(f"{emu.endpoint}/-/admin/faults", params={"fail_code": "Nope"}, headers=emu.admin_headers).status_code == 400
    requests.post(f"{emu.endpoint}/-/admin/faults", params={"fail_code": "mixed"}, headers=emu.admin_headers)
    seen = set()
    for _ in range(40):
        with pytest.raises(oss2.exceptions.ServerError) as ei:
            bucket.get_bucket_info()
        seen.add(ei.value.code)
    assert len(seen) > 2 and seen <= set(FAIL_CODES)
    requests.post(f"{emu.endpoint}/-/admin/faults", params={"fail_rate": "0", "restore_seconds": "3"}, headers=emu.admin_headers)
    assert emu.faults["restore_seconds"] == 3.0
    with pytest.raises(ValueError):
        emu.set_faults(fail_code="Nope")
