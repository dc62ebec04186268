"""OSS's S3-compatible access (``emulator/s3compat.py``), with botocore's S3 SigV4 signer as the
oracle for what an S3 client sends, and oss2 for what is stored."""
from __future__ import annotations

from urllib.parse import quote

import oss2
import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ossencfs.emulator.server import Emulator

from .conftest import AK, SK, BUCKET, raw


@pytest.fixture
def s3emu(tmp_path):
    with Emulator(str(tmp_path / "emu"), credentials={AK: SK}, buckets=[BUCKET], fsync=False,
                  s3_compat=True) as e:
        yield e


def s3(emu: Emulator, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
       secret: str = SK, after_signing: dict[str, str] | None = None, region: str = "us-east-1",
       sent_body: bytes | None = None, token: str | None = None) -> requests.Response:
    """One path-style request signed as an S3 client signs it (region us-east-1, as s3fs and
    rclone default to); ``after_signing`` headers are changed once the signature is made, and
    ``sent_body`` is sent instead of the signed ``body``."""
    req = AWSRequest(method, emu.endpoint + path, data=body, headers=dict(headers or {}))
    S3SigV4Auth(Credentials(AK, secret, token), "s3", region).add_auth(req)
    prepared = req.prepare()
    prepared.headers.update(after_signing or {})
    return requests.request(method, prepared.url, data=body if sent_body is None else sent_body,
                            headers=dict(prepared.headers))


def test_objects_written_and_copied_by_an_s3_client_carry_their_metadata_for_oss_clients(s3emu):
    key = "dir/a file ü+=.txt"
    path = f"/{BUCKET}/{quote(key)}"
    r = s3(s3emu, "PUT", path, b"hello", {"x-amz-meta-mode": "33188", "Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    head = s3(s3emu, "HEAD", path)
    assert head.headers["x-amz-meta-mode"] == "33188" and head.headers["Content-Length"] == "5"
    plain = oss2.Bucket(oss2.Auth(AK, SK), s3emu.endpoint, BUCKET)
    assert plain.head_object(key).headers["x-oss-meta-mode"] == "33188"
    assert s3(s3emu, "GET", path).content == b"hello"
    # CopyObject: S3 names the source "bucket/key" (no leading slash) and REPLACEs metadata
    r = s3(s3emu, "PUT", f"/{BUCKET}/copied", headers={
        "x-amz-copy-source": f"{BUCKET}/{quote(key)}", "x-amz-metadata-directive": "REPLACE",
        "x-amz-meta-mode": "33261"})
    assert r.status_code == 200 and b"CopyObjectResult" in r.content, r.text
    assert plain.head_object("copied").headers["x-oss-meta-mode"] == "33261"
    assert plain.get_object("copied").read() == b"hello"
    listing = s3(s3emu, "GET", f"/{BUCKET}/?list-type=2&prefix=dir%2F")
    assert listing.status_code == 200 and f"<Key>{key}</Key>".encode() in listing.content
    assert s3(s3emu, "DELETE", path).status_code == 204
    assert not plain.object_exists(key)


def test_s3_requests_are_refused_unless_the_access_is_enabled(tmp_path):
    with Emulator(str(tmp_path / "emu"), credentials={AK: SK}, buckets=[BUCKET], fsync=False) as emu:
        r = s3(emu, "PUT", f"/{BUCKET}/k", b"x")
        assert r.status_code == 403 and r.headers["x-oss-ec"] == "0002-00000033"
        assert not oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, BUCKET).object_exists("k")


def test_a_wrong_or_altered_s3_signature_is_refused_and_changes_nothing(s3emu):
    plain = oss2.Bucket(oss2.Auth(AK, SK), s3emu.endpoint, BUCKET)
    r = s3(s3emu, "PUT", f"/{BUCKET}/k", b"x", secret="wrong")
    assert r.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in r.content
    r = s3(s3emu, "PUT", f"/{BUCKET}/k", b"x", {"x-amz-meta-mode": "33188"},
           after_signing={"x-amz-meta-mode": "33261"})
    assert r.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in r.content
    assert not plain.object_exists("k")


def test_signature_v2_and_aws_chunked_uploads_are_refused(s3emu):
    r = requests.get(f"{s3emu.endpoint}/{BUCKET}/k", headers={"Authorization": f"AWS {AK}:c2ln"})
    assert r.status_code == 403 and r.headers["x-oss-ec"] == "0002-00000032"
    r = s3(s3emu, "PUT", f"/{BUCKET}/k", b"x",       # (botocore signs its own payload hash)
           after_signing={"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"})
    assert r.status_code == 400 and b"aws-chunked" in r.content


def test_a_multipart_upload_completed_with_the_s3_namespace_is_assembled(s3emu):
    """S3 clients (rclone, s3fs, the AWS SDKs) put their XML in the S3 namespace."""
    import re
    r = s3(s3emu, "POST", f"/{BUCKET}/big?uploads")
    upload_id = re.search(rb"<UploadId>([^<]+)</UploadId>", r.content).group(1).decode()
    parts = [b"a" * (100 << 10), b"b" * 10]
    etags = [s3(s3emu, "PUT", f"/{BUCKET}/big?partNumber={i + 1}&uploadId={upload_id}", p)
             .headers["ETag"] for i, p in enumerate(parts)]
    body = ('<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            + "".join(f"<Part><PartNumber>{i + 1}</PartNumber><ETag>{e}</ETag></Part>"
                      for i, e in enumerate(etags))
            + "</CompleteMultipartUpload>").encode()
    # OSS's own requests keep the plain names (no page says OSS reads a namespace there)
    oss = raw(s3emu, "POST", BUCKET, "big", params={"uploadId": upload_id}, data=body)
    assert oss.status_code == 400 and b"MalformedXML" in oss.content, oss.text
    r = s3(s3emu, "POST", f"/{BUCKET}/big?uploadId={upload_id}", body)
    assert r.status_code == 200, r.text
    assert oss2.Bucket(oss2.Auth(AK, SK), s3emu.endpoint, BUCKET).get_object("big").read() == b"".join(parts)


def test_what_was_not_signed_is_refused_and_changes_nothing(s3emu):
    """A header added after signing (a copy source), a body other than the signed one, a
    signature that is not even ASCII: refused before any effect, not a server error."""
    plain = oss2.Bucket(oss2.Auth(AK, SK), s3emu.endpoint, BUCKET)
    plain.put_object("secret", b"s3cr3t")
    r = s3(s3emu, "PUT", f"/{BUCKET}/stolen", after_signing={"x-amz-copy-source": f"{BUCKET}/secret"})
    assert r.status_code == 403 and b"x-amz-copy-source" in r.content, r.text
    r = s3(s3emu, "PUT", f"/{BUCKET}/stolen", b"good", sent_body=b"EVIL")
    assert r.status_code == 400 and b"XAmzContentSHA256Mismatch" in r.content, r.text
    signed = s3(s3emu, "GET", f"/{BUCKET}/secret")
    assert signed.status_code == 200
    auth = AWSRequest("GET", s3emu.endpoint + f"/{BUCKET}/secret")
    S3SigV4Auth(Credentials(AK, SK), "s3", "us-east-1").add_auth(auth)
    bad = dict(auth.prepare().headers)
    bad["Authorization"] = bad["Authorization"][:-1] + "\xe9"
    assert requests.get(auth.url, headers=bad).status_code == 403
    assert not plain.object_exists("stolen")


def test_the_signing_region_and_the_sts_token_are_checked(tmp_path):
    with Emulator(str(tmp_path / "emu"), credentials={AK: SK}, sts_tokens={AK: "tok"}, buckets=[BUCKET],
                  fsync=False, s3_compat=True) as emu:
        assert s3(emu, "PUT", f"/{BUCKET}/k", b"x").status_code == 403                  # no token
        assert s3(emu, "PUT", f"/{BUCKET}/k", b"x", token="wrong").status_code == 403
        r = s3(emu, "PUT", f"/{BUCKET}/k", b"x", token="tok", region="eu-west-1")
        assert r.status_code == 400 and r.headers["x-oss-ec"] == "0002-00000226"
        for region in ("cn-hangzhou", "us-east-1"):
            assert s3(emu, "PUT", f"/{BUCKET}/k", b"x", token="tok", region=region).status_code == 200
