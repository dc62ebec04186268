"""Every SDK golden vector decrypts exactly, whole and from odd offsets (tests/fixtures/sdk)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ossencfs.envelope import format as fmt
from ossencfs.envelope.format import CryptoHeaders, parse_headers
from ossencfs.envelope.keys import ContentMaterial, KeyRing, RsaMasterKey, material_from_plaintext
from ossencfs.errors import WrongKeyError

SDK = Path(__file__).resolve().parent.parent / "fixtures" / "sdk"
ONE_MIB_A = b"a" * (1 << 20)


def _meta(name: str) -> dict[str, str]:
    return json.loads((SDK / name).read_text())


@pytest.fixture(scope="module")
def sdk_key() -> RsaMasterKey:
    return RsaMasterKey.from_pem_file(str(SDK / "rsa_test_private.pem"))


class RecordedKms:
    """A MasterKey that answers like KMS did when the legacy KMS vector was written.

    The vector's JSON records KMS's Decrypt answers (``base64-plain-key``, ``plain-start``);
    this stands in for the remote unwrapper, it is not a fake of oss2 or the network.
    """

    wrap_alg = fmt.WRAP_KMS
    matdesc = None

    def __init__(self, meta: dict[str, str]) -> None:
        self.name = "kms:recorded"
        self._answers = {
            meta["x-oss-meta-oss-crypto-key"]: base64.b64decode(meta["base64-plain-key"]),
            meta["x-oss-meta-oss-crypto-start"]: meta["plain-start"].encode("ascii"),
        }

    def can_unwrap(self, h: CryptoHeaders) -> bool:
        return h.wrap_family == fmt.WRAP_KMS

    def _decrypt(self, blob: str) -> bytes:
        if blob not in self._answers:
            raise WrongKeyError("KMS: ciphertext blob not recognised")
        return self._answers[blob]

    def unwrap(self, h: CryptoHeaders) -> ContentMaterial:
        return material_from_plaintext(h, self._decrypt(h.wrapped_key), self._decrypt(h.wrapped_start))

    def wrap_new(self):  # pragma: no cover - read-only stand-in
        raise NotImplementedError


def _check_exact(material: ContentMaterial, cipher: bytes, plain: bytes) -> None:
    assert material.crypt_at(0, cipher) == plain
    for start in (1, 15, 16, 17, 4095, len(plain) // 2 + 3, len(plain) - 1):
        end = min(len(plain), start + 5000)
        assert material.crypt_at(start, cipher[start:end]) == plain[start:end], start
    stream = material.stream(7)
    out = b"".join(stream.update(cipher[i:i + 999]) for i in range(7, len(cipher), 999))
    assert out == plain[7:]


def test_go_sdk_rsa_vector(sdk_key):
    cipher = (SDK / "encrypted_go_example.jpg").read_bytes()
    plain = (SDK / "example.jpg").read_bytes()
    assert len(plain) == 21839 and cipher != plain
    ring = KeyRing([sdk_key])
    material = ring.open(_meta("encrypted_go_example_meta.json"), object_name="go")
    assert material.iv[8:12] == b"\0\0\0\0"
    _check_exact(material, cipher, plain)


def test_legacy_rsa_vector(sdk_key):
    meta = _meta("deprecated_encrypted_1MB_a_meta_rsa.json")
    cipher = (SDK / "deprecated_encrypted_1MB_a_rsa").read_bytes()
    material = KeyRing([sdk_key]).open(meta)
    assert material.counter0 == 8  # the decimal counter, not an IV
    _check_exact(material, cipher, ONE_MIB_A)


def test_legacy_kms_vector_through_recorded_unwrapper(sdk_key):
    meta = _meta("deprecated_encrypted_1MB_a_meta_kms.json")
    cipher = (SDK / "deprecated_encrypted_1MB_a_kms").read_bytes()
    h = parse_headers(meta)
    assert h.legacy and h.wrap_alg == fmt.WRAP_LEGACY_KMS
    # the RSA key is not a candidate for a KMS object; the KMS stand-in is
    ring = KeyRing([sdk_key, RecordedKms(meta)])
    material = ring.open(meta)
    assert ring.unwrap_calls == 1 and material.counter0 == 8
    _check_exact(material, cipher, ONE_MIB_A)


def test_vectors_need_the_right_key():
    other = RsaMasterKey.generate(2048)
    with pytest.raises(WrongKeyError):
        KeyRing([other]).open(_meta("encrypted_go_example_meta.json"))
    with pytest.raises(WrongKeyError):
        KeyRing([other]).open(_meta("deprecated_encrypted_1MB_a_meta_rsa.json"))
