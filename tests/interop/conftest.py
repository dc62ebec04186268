"""Fixtures for interop tests: oss2 CryptoBucket oracles and our layer on the same emulator."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import oss2
import pytest

from tests.conftest import AK, BUCKET, SK, SDK_FIXTURES

# Small enough to make multipart cheap, large enough for oss2's 100 KiB minimum.
PART = 100 * 1024
SMALL_MULTIPART = ["--part-size", str(PART), "--multipart-threshold", str(2 * PART)]


def pem(path: str | Path) -> str:
    return Path(path).read_text()


def public_pem_of(private_path: str) -> str:
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(Path(private_path).read_bytes(), None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture
def rsa_provider(rsa_key_path: str, rsa_public_key_path: str) -> oss2.RsaProvider:
    return oss2.RsaProvider(key_pair={"private_key": pem(rsa_key_path),
                                      "public_key": pem(rsa_public_key_path)})


@pytest.fixture
def second_rsa_provider(second_rsa_key_path: str) -> oss2.RsaProvider:
    return oss2.RsaProvider(key_pair={"private_key": pem(second_rsa_key_path),
                                      "public_key": public_pem_of(second_rsa_key_path)})


@pytest.fixture
def crypto_bucket(emulator) -> Callable[[object], oss2.CryptoBucket]:
    def make(provider) -> oss2.CryptoBucket:
        return oss2.CryptoBucket(oss2.Auth(AK, SK), emulator.endpoint, BUCKET,
                                 crypto_provider=provider)
    return make


@pytest.fixture
def store(emulator):
    from ossencfs.store import ObjectStore
    return ObjectStore.connect(emulator.endpoint, BUCKET, AK, SK, concurrency=8,
                               backoff_base=0.01)


def oss2_multipart(bucket: oss2.CryptoBucket, key: str, data: bytes, part_size: int) -> None:
    """What an oss2 user does for a client-side-encrypted multipart upload."""
    ctx = oss2.models.MultipartUploadCryptoContext(data_size=len(data), part_size=part_size)
    upload_id = bucket.init_multipart_upload(key, upload_context=ctx).upload_id
    parts = []
    for n, off in enumerate(range(0, len(data), part_size), start=1):
        r = bucket.upload_part(key, upload_id, n, data[off:off + part_size], upload_context=ctx)
        parts.append(oss2.models.PartInfo(n, r.etag))
    bucket.complete_multipart_upload(key, upload_id, parts)


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic, non-repeating bytes (a repeated pattern could hide offset bugs)."""
    import hashlib
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def example_jpg() -> bytes:
    return (SDK_FIXTURES / "example.jpg").read_bytes()


def leftovers(folder: str | Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".ossencfs-part"))
