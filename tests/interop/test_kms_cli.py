"""oss2 CryptoBucket (AliKMSProvider on the local KMS) <-> ``ossencfs cp``/``cat``."""
from __future__ import annotations

import oss2
import pytest
import trio

from tests.conftest import AK, BUCKET, HAVE_KMS, KMS_REGION, SK
from tests.interop.conftest import PART, SMALL_MULTIPART, oss2_multipart, payload

pytestmark = pytest.mark.skipif(not HAVE_KMS, reason="KMS modules not available")

URL = f"oss://{BUCKET}/"


def provider(kms_server, cmk: str, passphrase: str | None = None) -> oss2.AliKMSProvider:
    p = oss2.AliKMSProvider(AK, SK, KMS_REGION, cmk, passphrase=passphrase)
    p.kms_client.add_endpoint(KMS_REGION, "kms", kms_server.endpoint)   # SPEC C.5
    p.kms_client.proxy = {"http": None, "https": None}
    return p


def kms_args(kms_server, *cmks: str, passphrase_file: str | None = None,
             flavour: str | None = None) -> list[str]:
    out = [a for c in cmks for a in ("--kms-key", c)]
    out += ["--kms-region", KMS_REGION, "--kms-endpoint", kms_server.endpoint]
    if passphrase_file:
        out += ["--kms-passphrase-file", passphrase_file]
    if flavour:
        out += ["--kms-flavour", flavour]
    return out


@pytest.fixture
def cmk(kms_server) -> str:
    return kms_server.create_key(description="interop")


@pytest.mark.parametrize("passphrase", [None, "s3cret phrase"])
def test_oss2_kms_single_and_multipart_read_by_cat(run_cli, crypto_bucket, kms_server, cmk,
                                                   passphrase, tmp_path):
    cb = crypto_bucket(provider(kms_server, cmk, passphrase))
    single, multi = payload(20_000, seed=30), payload(2 * PART + 77, seed=31)
    cb.put_object("kms/single", single)
    oss2_multipart(cb, "kms/multi", multi, PART)
    pfile = None
    if passphrase:
        pfile = tmp_path / "pass"
        pfile.write_text(passphrase + "\n")
        pfile = str(pfile)
    args = kms_args(kms_server, cmk, passphrase_file=pfile)
    for key, data in (("kms/single", single), ("kms/multi", multi)):
        proc = run_cli("cat", URL + key, *args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == data
    proc = run_cli("cat", URL + "kms/multi", "--offset", str(PART - 5), "--length", "40", *args)
    assert proc.stdout == multi[PART - 5:PART + 35]
    if passphrase:   # the passphrase is part of the KMS encryption context: without it, no key
        proc = run_cli("cat", URL + "kms/single", *kms_args(kms_server, cmk))
        assert proc.returncode != 0 and proc.stdout == b""


@pytest.mark.parametrize("passphrase", [None, "another one"])
def test_cp_kms_single_and_multipart_read_by_oss2(run_cli, crypto_bucket, kms_server, cmk,
                                                  oss2_bucket, passphrase, tmp_path):
    pfile = None
    if passphrase:
        pfile = tmp_path / "pass"
        pfile.write_text(passphrase)
        pfile = str(pfile)
    single, multi = payload(3333, seed=32), payload(3 * PART + 1, seed=33)
    for name, data in (("s", single), ("m", multi)):
        (tmp_path / name).write_bytes(data)
        proc = run_cli("cp", str(tmp_path / name), URL + "up/" + name,
                       *kms_args(kms_server, cmk, passphrase_file=pfile), *SMALL_MULTIPART)
        assert proc.returncode == 0, proc.stderr
    assert oss2_bucket.head_object("up/m").object_type == "Multipart"
    assert oss2_bucket.head_object("up/s").headers[
        "x-oss-meta-client-side-encryption-wrap-alg"] == "KMS/ALICLOUD"
    cb = crypto_bucket(provider(kms_server, cmk, passphrase))
    assert cb.get_object("up/s").read() == single
    assert cb.get_object("up/m").read() == multi
    assert cb.get_object("up/m", byte_range=(PART + 3, PART + 300)).read() == \
        multi[PART + 3:PART + 301]


def test_two_cmks_java_flavour_and_disabled_key(run_cli, crypto_bucket, kms_server, tmp_path,
                                                oss2_bucket):
    c1 = kms_server.create_key(description="one")
    c2 = kms_server.create_key(description="two")
    a, b = payload(1000, seed=34), payload(2000, seed=35)
    crypto_bucket(provider(kms_server, c1)).put_object("two/a", a)
    (tmp_path / "b").write_bytes(b)
    proc = run_cli("cp", str(tmp_path / "b"), URL + "two/b",
                   *kms_args(kms_server, c2, flavour="java"))
    assert proc.returncode == 0, proc.stderr
    both = kms_args(kms_server, c1, c2)
    assert run_cli("cat", URL + "two/a", *both).stdout == a
    assert run_cli("cat", URL + "two/b", *both).stdout == b
    # java flavour: the header is the CiphertextBlob itself, which oss2 cannot read (SPEC A.3)
    with pytest.raises(Exception):
        crypto_bucket(provider(kms_server, c2)).get_object("two/b").read()
    assert crypto_bucket(provider(kms_server, c1)).get_object("two/a").read() == a
    kms_server.disable_key(c2)
    proc = run_cli("cat", URL + "two/b", *both)
    assert proc.returncode != 0 and proc.stdout == b""
    err = proc.stderr.decode().strip()
    assert err.startswith("ossencfs: error: ") and len(err.splitlines()) == 1
    assert "two/b" in err


def test_rewrap_rsa_object_to_kms_read_by_oss2(store, crypto_bucket, rsa_provider, rsa_key_path,
                                               kms_server, cmk):
    from ossencfs.envelope.keys import KeyRing, RsaMasterKey
    from ossencfs.kms import KmsMasterKey
    from ossencfs.objects import EncryptedObjects
    data = payload(2 * PART + 9, seed=36)
    oss2_multipart(crypto_bucket(rsa_provider), "rw/k", data, PART)
    kms = KmsMasterKey(cmk, KMS_REGION, AK, SK, endpoint=kms_server.endpoint)
    objs = EncryptedObjects(store, KeyRing([RsaMasterKey.from_pem_file(rsa_key_path), kms]))

    async def main():
        await objs.rewrap("rw/k", kms)
    trio.run(main)
    assert crypto_bucket(provider(kms_server, cmk)).get_object("rw/k").read() == data


def test_legacy_oss2_kms_vector_served_by_local_kms(run_cli, oss2_bucket, kms_server):
    import base64
    import json
    from tests.conftest import SDK_FIXTURES
    meta = json.loads((SDK_FIXTURES / "deprecated_encrypted_1MB_a_meta_kms.json").read_text())
    body = (SDK_FIXTURES / "deprecated_encrypted_1MB_a_kms").read_bytes()
    key_blob = meta.pop("x-oss-meta-oss-crypto-key")
    start_blob = meta.pop("x-oss-meta-oss-crypto-start")
    kms_server.add_recorded_blob(key_blob, meta.pop("base64-plain-key"))
    kms_server.add_recorded_blob(start_blob, meta.pop("plain-start"))
    cmk = base64.b64decode(key_blob).decode("ascii")[:36]
    oss2_bucket.put_object("legacy/kms", body, headers={
        **meta, "x-oss-meta-oss-crypto-key": key_blob, "x-oss-meta-oss-crypto-start": start_blob})
    proc = run_cli("cat", URL + "legacy/kms", *kms_args(kms_server, cmk))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"a" * (1 << 20)
    proc = run_cli("cat", URL + "legacy/kms", "--offset", "100001", "--length", "5",
                   *kms_args(kms_server, cmk))
    assert proc.stdout == b"aaaaa"
