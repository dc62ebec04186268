"""The bucket side: oss2 CryptoBucket as the oracle, SDK vectors, plaintext-at-rest checks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import oss2
import pytest

from tests.conftest import SDK_FIXTURES
from tests.mount.conftest import MULTIPART_THRESHOLD, PART_SIZE, eventually

pytestmark = pytest.mark.mount


def test_sdk_reads_what_the_mount_wrote(mount, oss2_bucket, crypto_bucket):
    small = os.urandom(50_000)
    large = os.urandom(MULTIPART_THRESHOLD + 5 * PART_SIZE + 77)        # multipart upload
    (mount.path / "small.bin").write_bytes(small)
    os.mkdir(mount.path / "sub")
    (mount.path / "sub" / "large.bin").write_bytes(large)
    assert crypto_bucket.get_object("small.bin").read() == small
    assert crypto_bucket.get_object("sub/large.bin").read() == large
    head = oss2_bucket.head_object("sub/large.bin")
    assert head.object_type == "Multipart"
    h = head.headers
    assert h["x-oss-meta-client-side-encryption-wrap-alg"] == "RSA/NONE/PKCS1Padding"
    assert h["x-oss-meta-client-side-encryption-cek-alg"] == "AES/CTR/NoPadding"
    assert int(h["x-oss-meta-client-side-encryption-data-size"]) == len(large)
    assert int(h["x-oss-meta-client-side-encryption-part-size"]) % 16 == 0
    # ranged read by the SDK in the middle of the multipart object
    assert crypto_bucket.get_object("sub/large.bin", byte_range=(300_001, 400_000)).read() == \
        large[300_001:400_001]
    # the stored bytes are not the plaintext
    assert oss2_bucket.get_object("small.bin").read() != small
    # a modified file is a new SDK-format object too (untouched ranges re-encrypted)
    with open(mount.path / "sub" / "large.bin", "r+b") as f:
        f.seek(123_457)
        f.write(b"patched!")
    patched = large[:123_457] + b"patched!" + large[123_465:]
    assert crypto_bucket.get_object("sub/large.bin").read() == patched


def test_mount_reads_what_the_sdk_wrote(mount, oss2_bucket, crypto_bucket):
    blob = os.urandom(900_000)
    crypto_bucket.put_object("from-sdk.bin", blob)
    # multipart by the SDK itself
    size = 3 * 102400 + 5
    data = os.urandom(size)
    ctx = oss2.models.MultipartUploadCryptoContext(size, 102400)
    upload_id = crypto_bucket.init_multipart_upload("from-sdk-mp.bin", upload_context=ctx).upload_id
    parts = []
    for i, off in enumerate(range(0, size, 102400), start=1):
        r = crypto_bucket.upload_part("from-sdk-mp.bin", upload_id, i, data[off:off + 102400],
                                      upload_context=ctx)
        parts.append(oss2.models.PartInfo(i, r.etag, size=len(data[off:off + 102400]),
                                          part_crc=r.crc))
    crypto_bucket.complete_multipart_upload("from-sdk-mp.bin", upload_id, parts)
    # the Go SDK vector, placed with a plain PUT and its recorded headers
    meta = json.loads((SDK_FIXTURES / "encrypted_go_example_meta.json").read_text())
    oss2_bucket.put_object("go.jpg", (SDK_FIXTURES / "encrypted_go_example.jpg").read_bytes(),
                           headers=meta)
    # the legacy oss2 (<= 2.10) vector: x-oss-meta-oss-crypto-*, OAEP, decimal counter
    legacy = json.loads((SDK_FIXTURES / "deprecated_encrypted_1MB_a_meta_rsa.json").read_text())
    oss2_bucket.put_object("legacy.bin",
                           (SDK_FIXTURES / "deprecated_encrypted_1MB_a_rsa").read_bytes(),
                           headers=legacy)
    oss2_bucket.put_object("plain.txt", b"stored as is")
    eventually(lambda: (mount.path / "go.jpg").exists())
    assert (mount.path / "from-sdk.bin").read_bytes() == blob
    assert (mount.path / "from-sdk-mp.bin").read_bytes() == data
    assert (mount.path / "go.jpg").read_bytes() == (SDK_FIXTURES / "example.jpg").read_bytes()
    assert (mount.path / "plain.txt").read_bytes() == b"stored as is"
    assert (mount.path / "legacy.bin").read_bytes() == b"a" * (1 << 20)
    with open(mount.path / "legacy.bin", "rb") as f:
        f.seek(777_777)
        assert f.read(33) == b"a" * 33
    assert os.path.getsize(mount.path / "go.jpg") == os.path.getsize(SDK_FIXTURES / "example.jpg")
    # overwriting a plain object through the mount encrypts it
    (mount.path / "plain.txt").write_bytes(b"now encrypted")
    assert "x-oss-meta-client-side-encryption-key" in oss2_bucket.head_object("plain.txt").headers
    assert crypto_bucket.get_object("plain.txt").read() == b"now encrypted"


def _files_containing(root: str | Path, marker: bytes) -> list[str]:
    hits = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                with open(p, "rb") as f:
                    if marker in f.read():
                        hits.append(p)
            except OSError:
                pass
    return hits


def test_no_plaintext_at_rest(mount, tmp_path):
    marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    body = (marker + b" ") * 40_000                        # ~1 MiB, several blocks, multipart
    (mount.path / "secret.txt").write_bytes(body)
    with open(mount.path / "edited.txt", "wb") as f:       # staged across several writes
        for _ in range(10):
            f.write(marker * 1000)
            f.flush()
    with open(mount.path / "edited.txt", "r+b") as f:      # partial rewrite of an object
        f.seek(5000)
        f.write(marker)
    os.symlink(marker.decode(), mount.path / "link-to-marker")
    mount.remount()                                        # cold cache: reads go through it
    assert (mount.path / "secret.txt").read_bytes() == body
    assert (mount.path / "edited.txt").read_bytes().count(marker) >= 1000
    assert os.readlink(mount.path / "link-to-marker") == marker.decode()
    assert os.listdir(mount.cache_dir)                       # the cache was really used
    assert _files_containing(mount.data_dir, marker) == []
    assert _files_containing(mount.cache_dir, marker) == []


def test_prefix_mount(make_mount, oss2_bucket, crypto_bucket):
    oss2_bucket.put_object("outside.txt", b"not visible")
    m = make_mount("pfx", prefix="team/a")
    (m.path / "inside.txt").write_bytes(b"in prefix")
    assert os.listdir(m.path) == ["inside.txt"]
    assert crypto_bucket.get_object("team/a/inside.txt").read() == b"in prefix"


def test_kms_master_key(make_mount, kms_server, emulator, crypto_bucket):
    """A mount whose writing key is a KMS CMK (oss2 flavour): oss2's AliKMSProvider reads it;
    objects wrapped by the RSA key stay readable through the same mount (second key)."""
    from tests.conftest import AK, BUCKET, KMS_REGION, SK
    cmk = kms_server.create_key(description="mount")
    crypto_bucket.put_object("rsa-written.bin", b"rsa wrapped")
    m = make_mount("kmsmnt", keys=["--kms-key", cmk, "--kms-region", KMS_REGION,
                                "--kms-endpoint", kms_server.endpoint,
                                "--rsa-key", str(SDK_FIXTURES / "rsa_test_private.pem")])
    data = os.urandom(MULTIPART_THRESHOLD + PART_SIZE + 3)
    (m.path / "kms.bin").write_bytes(data)
    (m.path / "kms-small.txt").write_bytes(b"small kms object")
    provider = oss2.AliKMSProvider(AK, SK, KMS_REGION, cmk)
    provider.kms_client.add_endpoint(KMS_REGION, "kms", kms_server.endpoint)
    provider.kms_client.proxy = {"http": None, "https": None}
    kb = oss2.CryptoBucket(oss2.Auth(AK, SK), emulator.endpoint, BUCKET, crypto_provider=provider)
    assert kb.get_object("kms.bin").read() == data
    assert kb.get_object("kms-small.txt").read() == b"small kms object"
    assert (m.path / "rsa-written.bin").read_bytes() == b"rsa wrapped"


def test_a_burst_of_new_files_on_a_kms_mount_takes_data_keys_made_ahead(make_mount, kms_server, emulator):
    """Creating files one after another on a KMS mount: the data keys of the next ones are
    made while the current one is written and uploaded (``fs.keypool``), several KMS calls at
    once, where each create used to wait for its own two in turn (one in flight at a time).
    Every object still has its own key, and oss2's AliKMSProvider reads each one."""
    from tests.conftest import AK, BUCKET, KMS_REGION, SK
    cmk = kms_server.create_key(description="burst")
    m = make_mount("kmsburst", keys=["--kms-key", cmk, "--kms-region", KMS_REGION,
                                  "--kms-endpoint", kms_server.endpoint])
    (m.path / "first").write_bytes(b"a lone create")
    assert kms_server.max_inflight == 1             # asked for nothing ahead
    kms_server.set_faults(latency_ms=100)          # a KMS round trip takes a while
    try:
        for i in range(8):
            (m.path / f"f{i}").write_bytes(b"burst %d" % i)
    finally:
        kms_server.set_faults(latency_ms=0)
    assert kms_server.max_inflight >= 3
    assert kms_server.calls["GenerateDataKey"] <= 1 + 8 + 8      # at most as many ahead as came
    provider = oss2.AliKMSProvider(AK, SK, KMS_REGION, cmk)
    provider.kms_client.add_endpoint(KMS_REGION, "kms", kms_server.endpoint)
    provider.kms_client.proxy = {"http": None, "https": None}
    kb = oss2.CryptoBucket(oss2.Auth(AK, SK), emulator.endpoint, BUCKET, crypto_provider=provider)
    plain = oss2.Bucket(oss2.Auth(AK, SK), emulator.endpoint, BUCKET)
    assert len({plain.head_object(f"f{i}").headers["x-oss-meta-client-side-encryption-key"]
                for i in range(8)}) == 8
    for i in range(8):
        assert kb.get_object(f"f{i}").read() == b"burst %d" % i
