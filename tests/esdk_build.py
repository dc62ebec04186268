"""Test-only tools for Encryption SDK (ESDK) objects: the vectors in tests/fixtures/esdk/
(made by the ESDK's own Python code, see its README.md), the emulator-KMS key they need,
an offline decryption of their data keys, and a DER *writer* of new ESDK messages.

The writer follows ESDK-PY ``handle/format.py`` (asn1crypto ``dump()``: DER, SET OF elements
sorted by their encodings) and ``model.py``; ``test_esdk.py`` checks that it re-creates the
vectors' headers byte for byte, which is what makes it a fair stand-in for the SDK when a test
needs an object the vectors do not have (another region, CBC, a second data key). The SDK
itself (``bestv-aliyun-encryption-sdk``) pins cryptography 3.2.1, so it cannot be a test
dependency next to ours.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ossencfs.credentials import CredentialSource
from ossencfs.envelope import esdk
from ossencfs.kms import kms_client

AK, SK = "AK", "SK"            # the emulator credentials of tests/conftest.py
VECTORS = Path(__file__).resolve().parent / "fixtures" / "esdk"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
KEY_ID = MANIFEST["key_id"]
ARN = MANIFEST["arn"]
REGION = MANIFEST["region"]


def vector(name: str) -> tuple[bytes, dict[str, str], dict]:
    """(body, upload headers, manifest entry) of one vector object."""
    entry = next(o for o in MANIFEST["objects"] if o["name"] == name)
    body = (VECTORS / f"{name}.body").read_bytes()
    meta = json.loads((VECTORS / f"{name}.meta.json").read_text())
    return body, meta, entry


def vector_names(layout: str | None = None) -> list[str]:
    return [o["name"] for o in MANIFEST["objects"] if layout in (None, o["layout"])]


def install_key(kms_data_dir: Path, key_file: Path | None = None) -> None:
    """Put the vectors' CMK into a KMS emulator data dir before it starts (README.md)."""
    d = kms_data_dir / "kms-keys"
    d.mkdir(parents=True, exist_ok=True)
    src = key_file or VECTORS / "kms-keys" / f"{KEY_ID}.json"
    shutil.copyfile(src, d / src.name)
    (d / src.name).chmod(0o600)


def _canonical(ctx: dict[str, str]) -> str:
    return json.dumps(ctx, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if ctx else ""


def offline_data_key(blob: bytes, ctx: dict[str, str], key_file: Path | None = None) -> bytes:
    """The data key in an emulator KMS blob, without KMS (vectors README, "Fully offline")."""
    rec = json.loads((key_file or VECTORS / "kms-keys" / f"{KEY_ID}.json").read_text())
    kid = rec["KeyId"]
    text = blob.decode("ascii")
    assert text.startswith(kid)
    raw = base64.b64decode(text[len(kid):])
    aad = b"ossencfs-local-kms-v1\0" + kid.encode() + b"\0" + _canonical(ctx).encode()
    plain = AESGCM(base64.b64decode(rec["Material"])).decrypt(raw[:12], raw[12:], aad)
    return base64.b64decode(plain)


# ------------------------------------------------------------------------------- DER writer

def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def _int(v: int) -> bytes:
    return _tlv(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big"))


def _set_of(items: list[bytes]) -> bytes:
    return _tlv(0x31, b"".join(sorted(items)))


def der_header(h: esdk.Header) -> bytes:
    keys = [_tlv(0x30, _tlv(0x04, k.key_arn.encode()) + _tlv(0x04, k.blob)) for k in h.data_keys]
    ctx = [_tlv(0x30, _tlv(0x04, k.encode()) + _tlv(0x04, v.encode())) for k, v in h.context]
    return _tlv(0x30, _int(h.version) + _int(h.algorithm.id) + _set_of(keys) + _set_of(ctx)
                + _tlv(0x04, h.header_iv) + _tlv(0x04, h.header_tag))


def der_message(h: esdk.Header, iv: bytes, cipher: bytes, tag: bytes) -> bytes:
    body = _tlv(0x30, _tlv(0x04, iv) + _tlv(0x04, cipher) + _tlv(0x04, tag))
    return _tlv(0x30, der_header(h) + body)


def encrypt(plain: bytes, data_key: bytes, keys: list[esdk.DataKey], ctx: dict[str, str],
            alg_id: int = 2) -> tuple[esdk.Header, bytes, bytes, bytes]:
    """(header, iv, ciphertext, tag) as ESDK-PY encrypts ``plain`` under ``data_key``."""
    alg = esdk.ALGORITHMS[alg_id]
    h = esdk.Header(1, alg, tuple(keys), tuple(ctx.items()), os.urandom(12), b"")
    enc = Cipher(algorithms.AES(data_key), modes.GCM(h.header_iv)).encryptor()
    enc.authenticate_additional_data(h.auth_fields())
    enc.finalize()
    h = esdk.Header(1, alg, tuple(keys), tuple(ctx.items()), h.header_iv, enc.tag)
    iv = os.urandom(alg.iv_len)
    if alg.mode == "gcm":
        enc = Cipher(algorithms.AES(data_key), modes.GCM(iv)).encryptor()
        enc.authenticate_additional_data(h.context_bytes())
        ct = enc.update(plain) + enc.finalize()
        return h, iv, ct, enc.tag
    if alg.mode == "cbc":
        if alg.pkcs5:
            p = padding.PKCS7(128).padder()
            plain = p.update(plain) + p.finalize()
        enc = Cipher(algorithms.AES(data_key), modes.CBC(iv)).encryptor()
        return h, iv, enc.update(plain) + enc.finalize(), b""
    enc = Cipher(algorithms.AES(data_key), modes.CTR(iv)).encryptor()
    return h, iv, enc.update(plain) + enc.finalize(), b""


def java_headers(h: esdk.Header, iv: bytes, tag: bytes) -> dict[str, str]:
    """User metadata as the Java sample's upload sends it (the Java OSS SDK prefixes again)."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return {esdk.H_HEADER: b64(der_header(h)), esdk.H_IV: b64(iv), "x-oss-meta-x-oss-meta-authTag": b64(tag)}


def plain_sha(name: str) -> str:
    return vector(name)[2]["plain_sha256"]


def upload_vectors(bucket, prefix: str, names: list[str] | None = None) -> dict[str, str]:
    """PUT the vector objects (body and upload headers as the SDK samples sent them) with a
    plain ``oss2.Bucket``; returns {object key: plaintext SHA-256}."""
    out = {}
    for name in names or vector_names():
        body, meta, entry = vector(name)
        bucket.put_object(prefix + name, body, headers=meta)
        out[prefix + name] = entry["plain_sha256"]
    return out


def tamper(bucket, key: str, at: int | None = None, meta: dict[str, str] | None = None) -> None:
    """Re-upload ``key`` with one body byte flipped (``at``, negative from the end) and/or
    some metadata replaced."""
    obj = bucket.get_object(key)
    body = bytearray(obj.read())
    headers = {k: v for k, v in obj.headers.items() if k.lower().startswith("x-oss-meta-")}
    if at is not None:
        body[at] ^= 0x01
    headers.update(meta or {})
    bucket.put_object(key, bytes(body), headers=headers)


def make_region_object(server, region: str, plain: bytes, ctx: dict[str, str],
                       alg_id: int = 2, java: bool = False) -> tuple[bytes, dict[str, str]]:
    """An ESDK object whose CMK lives in ``region`` (served by ``server``): the data key comes
    from that KMS's GenerateDataKey, the message from esdk_build (checked against the SDK's
    own bytes in test_esdk.py)."""
    cmk = server.create_key()
    assert esdk.ALGORITHMS[alg_id].key_len == 32        # GenerateDataKey here gives 32 bytes
    client = kms_client(cmk, region, CredentialSource.static(AK, SK), endpoint=server.endpoint,
                        context=ctx or None)
    key_b64, blob = client._generate_data_key()
    dk = esdk.DataKey(f"acs:kms:{region}:1234567890123456:key/{cmk}", base64.b64decode(blob))
    h, iv, ct, tag = encrypt(plain, base64.b64decode(key_b64), [dk], ctx, alg_id)
    if java:
        return ct, java_headers(h, iv, tag)
    return der_message(h, iv, ct, tag), {}
