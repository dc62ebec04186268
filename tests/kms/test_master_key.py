"""KmsMasterKey against the local KMS over HTTP, with oss2's AliKMSProvider as the oracle."""
from __future__ import annotations

import base64
import errno
import json
import os
import threading
import time

import oss2
import pytest
from aliyunsdkcore.client import AcsClient
from aliyunsdkkms.request.v20160120 import EncryptRequest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from oss2.models import ContentCryptoMaterial

from ossencfs.emulator.kms import KmsServer
from ossencfs.envelope.format import WRAP_KMS, emit_headers, parse_headers
from ossencfs.envelope.keys import KeyRing, RsaMasterKey
from ossencfs.errors import KeyServiceUnavailableError, KeyUnavailableError, OssEncError, WrongKeyError
from ossencfs.kms import KmsMasterKey, looks_oss2_flavour, proxies_for

from .conftest import AK, REGION, SK, STS_AK, STS_SK, STS_TOKEN, oss2_provider

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "sdk")
DATA = os.urandom(1000) + b"tail"


def oss2_encrypt(provider: oss2.AliKMSProvider) -> tuple[dict[str, str], bytes]:
    """What oss2 CryptoBucket.put_object does: material from the provider, headers, CTR data."""
    material = provider.create_content_material()
    headers = dict(material.to_object_meta({}))
    return {k.lower(): v for k, v in headers.items()}, material.cipher.encrypt(DATA)


def oss2_decrypt(provider: oss2.AliKMSProvider, headers: dict[str, str], cipher: bytes) -> bytes:
    """What oss2 CryptoBucket.get_object does with the headers of an object."""
    meta = ContentCryptoMaterial(oss2.utils.AESCTRCipher(), provider.wrap_alg)
    meta.from_object_meta(headers)
    key = provider.decrypt_encrypted_key(meta.encrypted_key)
    iv = provider.decrypt_encrypted_iv(meta.encrypted_iv, meta.deprecated)
    c = oss2.utils.AESCTRCipher()
    if meta.deprecated:
        c.initial_by_counter(key, int(iv))
    else:
        c.initialize(key, iv)
    return c.decrypt(cipher)


@pytest.mark.parametrize("passphrase", [None, "s3cret pass"])
def test_oss2_provider_and_ours_interoperate(kms: KmsServer, cmk: str, make_master, passphrase) -> None:
    provider = oss2_provider(kms, cmk, passphrase)
    context = {"x-passphrase": passphrase} if passphrase else None
    ours = make_master(context=context)
    # oss2 writes, oss2 reads (the local KMS works for the oracle)
    headers, cipher = oss2_encrypt(provider)
    assert oss2_decrypt(provider, headers, cipher) == DATA
    # oss2 writes, we read
    material = ours.unwrap(parse_headers(headers))
    assert material.crypt_at(0, cipher) == DATA
    assert material.crypt_at(512, cipher[512:]) == DATA[512:]
    # we write (oss2 flavour by default), oss2 reads
    material, h = ours.wrap_new()
    assert h.wrap_alg == WRAP_KMS and looks_oss2_flavour(h.wrapped_key)
    assert base64.b64decode(base64.b64decode(h.wrapped_key)).decode().startswith(cmk)
    assert oss2_decrypt(provider, emit_headers(h), material.crypt_at(0, DATA)) == DATA
    # the encryption context is really bound: the other context cannot open it
    other = make_master(context=None if passphrase else {"x-passphrase": "nope"})
    with pytest.raises(WrongKeyError, match=f"CMK {cmk}"):
        other.unwrap(h)
    assert ours.calls["GenerateDataKey"] == 1 and ours.calls["Encrypt"] == 1
    assert ours.calls["Decrypt"] == 2


def test_java_flavour_written_and_read(kms: KmsServer, cmk: str, make_master) -> None:
    java = make_master(flavour="java")
    material, h = java.wrap_new()
    # Java/Go form: the header is the CiphertextBlob itself (single base64, SPEC A.3)
    assert not looks_oss2_flavour(h.wrapped_key)
    assert base64.b64decode(h.wrapped_key).decode().startswith(cmk)
    cipher = material.crypt_at(0, DATA)
    # an oss2-flavour master reads it (flavour detected per object) ...
    reader = make_master()
    assert reader.unwrap(parse_headers(emit_headers(h))).crypt_at(0, cipher) == DATA
    # ... while oss2 itself cannot: the flavours are mutually unreadable in the SDKs
    with pytest.raises(oss2.exceptions.OpenApiServerError):
        oss2_decrypt(oss2_provider(kms, cmk), emit_headers(h), cipher)


def test_java_object_built_per_spec(kms: KmsServer, cmk: str, make_master) -> None:
    """Build a Java-SDK object by hand: Encrypt(b64(CEK)), Encrypt(b64(IV)), header = blob."""
    client = AcsClient(AK, SK, REGION, auto_retry=False, proxy={"http": None, "https": None})
    client.add_endpoint(REGION, "kms", kms.endpoint)

    def encrypt(raw: bytes) -> str:
        req = EncryptRequest.EncryptRequest()
        req.set_KeyId(cmk)
        req.set_Plaintext(base64.b64encode(raw).decode())
        return json.loads(client.do_action_with_exception(req))["CiphertextBlob"]

    key, iv = os.urandom(32), os.urandom(8) + bytes(4) + os.urandom(4)
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    cipher = enc.update(DATA) + enc.finalize()
    headers = {
        "x-oss-meta-client-side-encryption-key": encrypt(key),
        "x-oss-meta-client-side-encryption-start": encrypt(iv),
        "x-oss-meta-client-side-encryption-cek-alg": "AES/CTR/NoPadding",
        "x-oss-meta-client-side-encryption-wrap-alg": "KMS/ALICLOUD",
    }
    ring = KeyRing([make_master()])
    assert ring.open(headers, object_name="java.bin").crypt_at(0, cipher) == DATA
    before = kms.calls["Decrypt"]
    ring.open(headers, object_name="java.bin")           # cached: no KMS call
    assert kms.calls["Decrypt"] == before


def test_legacy_kms_vector_through_keyring(kms: KmsServer, make_master) -> None:
    with open(os.path.join(FIXTURES, "deprecated_encrypted_1MB_a_meta_kms.json")) as f:
        meta = json.load(f)
    with open(os.path.join(FIXTURES, "deprecated_encrypted_1MB_a_kms"), "rb") as f:
        cipher = f.read()
    key_blob = meta["x-oss-meta-oss-crypto-key"]
    cmk_id = base64.b64decode(key_blob)[:36].decode()
    kms.create_key(cmk_id)                      # the CMK id of the recorded vector
    kms.add_recorded_blob(key_blob, meta["base64-plain-key"])
    kms.add_recorded_blob(meta["x-oss-meta-oss-crypto-start"], meta["plain-start"])
    headers = {k: v for k, v in meta.items() if k.startswith("x-oss-meta-")}
    ring = KeyRing([make_master(cmk_id)])
    material = ring.open(headers, object_name="deprecated_encrypted_1MB_a_kms")
    assert material.counter0 == 8
    assert material.crypt_at(0, cipher) == b"a" * (1 << 20)
    assert material.crypt_at(777, cipher[777:1000]) == b"a" * 223
    # oss2 (the oracle) reads the same object through the same local KMS
    assert oss2_decrypt(oss2_provider(kms, cmk_id), headers, cipher[:4096]) == b"a" * 4096


def test_sts_token(kms: KmsServer, cmk: str, make_master) -> None:
    sts = make_master(ak=STS_AK, sk=STS_SK, security_token=STS_TOKEN)
    material, h = sts.wrap_new()
    assert sts.unwrap(h) == material
    bad = make_master(ak=STS_AK, sk=STS_SK, security_token="stale-token")
    with pytest.raises(KeyUnavailableError, match=f"CMK {cmk}.*credentials"):
        bad.unwrap(h)
    missing = make_master(ak=STS_AK, sk=STS_SK)
    with pytest.raises(KeyUnavailableError):
        missing.wrap_new()


def test_wrong_signature_is_key_unavailable(kms: KmsServer, cmk: str, make_master) -> None:
    with pytest.raises(KeyUnavailableError, match=f"CMK {cmk}.*credentials") as ei:
        make_master(sk="not-the-secret").wrap_new()
    assert "InvalidAccessKeySecret" in str(ei.value)
    assert kms.calls["GenerateDataKey"] == 1                 # not retried


def test_disabled_cmk_names_object_and_cmk(kms: KmsServer, cmk: str, make_master) -> None:
    master = make_master()
    material, h = master.wrap_new()
    headers = emit_headers(h)
    kms.disable_key(cmk)
    with pytest.raises(KeyUnavailableError, match=f"CMK {cmk} is disabled"):
        master.wrap_new()
    ring = KeyRing([master])
    with pytest.raises(KeyUnavailableError) as ei:
        ring.open(headers, object_name="docs/report.pdf")
    assert "docs/report.pdf" in str(ei.value) and cmk in str(ei.value) and "disabled" in str(ei.value)
    kms.enable_key(cmk)
    assert ring.open(headers, object_name="docs/report.pdf") == material
    kms.schedule_key_deletion(cmk)
    with pytest.raises(KeyUnavailableError, match="pending deletion"):
        master.unwrap(h)


def test_throttling_and_5xx_retried(kms: KmsServer, make_master) -> None:
    master = make_master()
    kms.set_faults(throttle_next=3)
    material, h = master.wrap_new()         # its two calls go out at once: 3 answers throttled
    sent = kms.calls["GenerateDataKey"] + kms.calls["Encrypt"]
    assert sent == 5 and master.calls["GenerateDataKey"] + master.calls["Encrypt"] == 5
    kms.set_faults(fail_next=2)
    assert master.unwrap(h) == material
    kms.set_faults(throttle_next=100)
    with pytest.raises(KeyUnavailableError, match="kept failing"):
        make_master(retries=2).unwrap(h)
    kms.set_faults(throttle_next=0)


def test_unreachable_kms_is_key_unavailable(make_master, kms: KmsServer, cmk: str) -> None:
    _, h = make_master().wrap_new()
    master = KmsMasterKey(cmk, REGION, AK, SK, endpoint="http://127.0.0.1:9", retries=1,
                          retry_base=0.01, connect_timeout=1)
    with pytest.raises(KeyUnavailableError, match="unreachable") as ei:
        master.unwrap(h)
    # the SDK's message quotes the request URL; its params (blobs, Encrypt plaintext) are cut
    blob = base64.b64decode(h.wrapped_key).decode()
    assert cmk in str(ei.value)
    assert "CiphertextBlob" not in str(ei.value) and blob[40:80] not in str(ei.value)
    with pytest.raises(KeyUnavailableError, match="unreachable"):
        master.wrap_new()


def test_proxy_env_does_not_break_loopback(kms: KmsServer, make_master, monkeypatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")      # nothing listens there
    master = make_master()
    material, h = master.wrap_new()
    assert master.unwrap(h) == material
    assert proxies_for("https://kms.cn-hangzhou.aliyuncs.com")["https"] == "http://127.0.0.1:9"
    monkeypatch.setenv("NO_PROXY", ".aliyuncs.com")
    monkeypatch.setenv("no_proxy", ".aliyuncs.com")
    assert proxies_for("https://kms.cn-hangzhou.aliyuncs.com")["https"] is None


def test_keyring_two_cmks_and_rsa_resolve_per_object(tmp_path, kms: KmsServer, make_master) -> None:
    # two "regions": each KMS only knows its own CMK, as in real life
    with KmsServer(str(tmp_path / "kms-b"), credentials={AK: SK}) as kms_b:
        cmk_a = kms.create_key()
        cmk_b = kms_b.create_key()
        a = make_master(cmk_a)
        b = make_master(cmk_b, server=kms_b, flavour="java")
        rsa = RsaMasterKey.from_pem_file(os.path.join(FIXTURES, "rsa_test_private.pem"))
        objects = {}
        for name, writer in (("a.txt", a), ("b.txt", b), ("r.txt", rsa)):
            material, headers = KeyRing([writer]).new_object()
            objects[name] = (headers, material.crypt_at(0, DATA))
        ring = KeyRing([a, rsa, b])
        for name, (headers, cipher) in objects.items():
            assert ring.open(headers, object_name=name).crypt_at(0, cipher) == DATA
        # the blob names its CMK, so B is tried first for b.txt: one unwrap per object, and
        # CMK A's KMS never sees b.txt
        assert ring.unwrap_calls == 3
        assert kms.calls["Decrypt"] == 2
        assert kms_b.calls["Decrypt"] == 2
        # a ring without CMK B's KMS reports the object and why
        with pytest.raises(KeyUnavailableError, match="b.txt") as ei:
            KeyRing([a, rsa]).open(objects["b.txt"][0], object_name="b.txt")
        assert f"CMK {cmk_b} not found" in str(ei.value)


def test_concurrency_is_bounded(kms: KmsServer, make_master) -> None:
    master = make_master(max_concurrency=2)
    headers = [master.wrap_new()[1] for _ in range(6)]
    kms.set_faults(latency_ms=50)
    kms.max_inflight = 0
    errors: list[BaseException] = []

    def work(h) -> None:
        try:
            master.unwrap(h)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(h,)) for h in headers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kms.set_faults(latency_ms=0)
    assert not errors
    assert 1 <= kms.max_inflight <= 2


def test_can_unwrap(make_master) -> None:
    master = make_master(matdesc={"team": "x"})
    _, h = make_master().wrap_new()
    assert master.can_unwrap(h)                                   # no matdesc on the object
    from dataclasses import replace
    assert master.can_unwrap(replace(h, matdesc={"team": "x"}))
    assert not master.can_unwrap(replace(h, matdesc={"team": "y"}))
    assert master.can_unwrap(replace(h, wrap_alg="kms", legacy=True))
    assert not master.can_unwrap(replace(h, wrap_alg="RSA/NONE/PKCS1Padding"))
    assert master.name == f"kms:{master.cmk_id}"


# ---- outages (issue 13 item 7) ---------------------------------------------------------------
def test_kms_that_never_answers_costs_one_bounded_wait_and_is_eio(kms: KmsServer, make_master) -> None:
    """KMS accepts connections but never answers: one read timeout, then EIO (not EACCES, and
    not several retry cycles of timeouts); the outage is remembered, so a burst of reads does not
    wait again; KMS back and the memory expired, reads work again."""
    material, h = make_master().wrap_new()
    master = make_master(read_timeout=1, connect_timeout=1, retry_deadline=2.5, outage_ttl=1.0)
    kms.set_faults(outage="hang")
    try:
        with pytest.raises(KeyServiceUnavailableError, match="unreachable") as ei:
            master.unwrap(h)
        assert ei.value.errno == errno.EIO
        # one attempt each for the key and the IV, side by side: their timeout used the budget
        assert master.calls["Decrypt"] == 2
        for _ in range(20):                                  # a burst of reads: no new attempt
            with pytest.raises(KeyServiceUnavailableError, match="not attempted"):
                master.unwrap(h)
        assert master.calls["Decrypt"] == 2
    finally:
        kms.set_faults(outage="")
    time.sleep(1.1)                                          # the remembered outage expires
    assert master.unwrap(h) == material


def test_kms_down_is_eio_and_a_refused_key_stays_eacces(kms: KmsServer, make_master, cmk: str) -> None:
    material, h = make_master().wrap_new()
    master = make_master(outage_ttl=0.5)
    kms.stop()                                               # connections refused
    try:
        with pytest.raises(KeyServiceUnavailableError) as ei:
            master.unwrap(h)
        assert ei.value.errno == errno.EIO
        ring = KeyRing([master])
        with pytest.raises(OssEncError) as ei:
            ring.open(h, object_name="dir/f")
        assert ei.value.errno == errno.EIO and "dir/f" in str(ei.value)
    finally:
        kms.start()
    kms.set_faults(outage="reset")                           # closed without an answer
    time.sleep(0.6)
    with pytest.raises(KeyServiceUnavailableError):
        master.unwrap(h)
    kms.set_faults(outage="")
    time.sleep(0.6)
    assert master.unwrap(h) == material
    kms.disable_key(cmk)                                     # really refused: a permission problem
    with pytest.raises(KeyUnavailableError, match="disabled") as ei:
        master.unwrap(h)
    assert ei.value.errno == errno.EACCES and not isinstance(ei.value, KeyServiceUnavailableError)
    with pytest.raises(OssEncError) as ei:
        KeyRing([master]).open(h, object_name="g")
    assert ei.value.errno == errno.EACCES


def test_kms_still_throttling_after_retries_is_eio(kms: KmsServer, make_master) -> None:
    _, h = make_master().wrap_new()
    kms.set_faults(throttle_next=100)
    with pytest.raises(KeyServiceUnavailableError, match="kept failing") as ei:
        make_master(retries=2).unwrap(h)
    assert ei.value.errno == errno.EIO
    kms.set_faults(throttle_next=0)


def test_an_unwrap_sends_the_key_and_iv_decrypts_side_by_side(kms: KmsServer, make_master) -> None:
    """A first open waits for one KMS round trip, not two in turn: the IV's Decrypt goes out
    while the key's is in flight (``max_inflight`` counts requests served at once)."""
    material, h = make_master().wrap_new()
    master = make_master()
    kms.set_faults(latency_ms=300)
    kms.max_inflight = 0
    try:
        assert master.unwrap(h) == material
    finally:
        kms.set_faults(latency_ms=0)
    assert kms.max_inflight == 2 and master.calls["Decrypt"] == 2


def test_a_new_data_key_and_its_iv_are_wrapped_side_by_side(kms: KmsServer, make_master, cmk: str) -> None:
    """GenerateDataKey and the IV's Encrypt go out at once; oss2's AliKMSProvider opens the
    result (the headers are the same either way)."""
    master = make_master()
    kms.set_faults(latency_ms=300)
    kms.max_inflight = 0
    try:
        material, h = master.wrap_new()
    finally:
        kms.set_faults(latency_ms=0)
    assert kms.max_inflight == 2
    assert master.calls["GenerateDataKey"] == 1 and master.calls["Encrypt"] == 1
    assert oss2_decrypt(oss2_provider(kms, cmk), emit_headers(h), material.crypt_at(0, DATA)) == DATA


def test_many_unwraps_at_once_all_succeed(kms: KmsServer, make_master) -> None:
    """More unwraps at once than there are threads for the IVs' Decrypts: each waits for its
    own (one queued and not yet started was once cancelled: EACCES on a first open under
    ``xargs -P16 cat``)."""
    writer = make_master()
    made = [writer.wrap_new() for _ in range(24)]
    master = make_master(max_concurrency=24)
    kms.set_faults(latency_ms=100)
    got: list[object] = [None] * len(made)

    def unwrap(i: int) -> None:
        try:
            got[i] = master.unwrap(made[i][1])
        except Exception as exc:  # noqa: BLE001 - reported below
            got[i] = exc
    try:
        threads = [threading.Thread(target=unwrap, args=(i,)) for i in range(len(made))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        kms.set_faults(latency_ms=0)
    assert got == [m for m, _ in made]
