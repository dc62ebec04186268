"""Round trips with oss2's own crypto classes in process (oss2 is the oracle).

oss2's classes do the SDK side: ``RsaProvider``/``LocalRsaProvider`` wrap and unwrap keys,
``ContentCryptoMaterial`` writes and parses the headers, ``AESCTRCipher`` (pycryptodome)
encrypts and decrypts. No network is involved, so nothing here is mocked.
"""
from __future__ import annotations

import copy
import os

import oss2
import pytest
from oss2.models import ContentCryptoMaterial
from oss2.utils import AESCTRCipher

from ossencfs.envelope import format as fmt
from ossencfs.envelope.keys import KeyRing, RsaMasterKey
from ossencfs.errors import WrongKeyError

pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")

SIZES = [0, 1, 15, 16, 17, 1000, 100_003]


@pytest.fixture(scope="module")
def master() -> RsaMasterKey:
    return RsaMasterKey.generate(2048)


@pytest.fixture(scope="module")
def key_pair(master):
    return {"private_key": master.private_pem().decode(), "public_key": master.public_pem().decode()}


def _oss2_decrypt(provider, headers, cipher: bytes, offset: int = 0) -> bytes:
    """What oss2's GetObjectResult does with an object's headers and a (ranged) body."""
    material = ContentCryptoMaterial(provider.cipher, provider.wrap_alg)
    material.from_object_meta(headers)   # raises InconsistentError on a wrap/cek mismatch
    assert not material.is_unencrypted()
    assert material.mat_desc == provider.mat_desc  # oss2 needs equal dicts
    plain_key = provider.decrypt_encrypted_key(material.encrypted_key)
    plain_iv = provider.decrypt_encrypted_iv(material.encrypted_iv)
    cipher_obj = copy.copy(material.cipher)
    cipher_obj.initialize(plain_key, plain_iv, material.cipher.calc_offset(offset))
    return cipher_obj.decrypt(cipher)


@pytest.mark.parametrize("size", SIZES)
def test_oss2_rsa_provider_reads_what_we_write(master, key_pair, size):
    plain = os.urandom(size)
    material, headers = KeyRing([master]).new_object()
    cipher = material.stream().update(plain)
    provider = oss2.RsaProvider(key_pair)
    assert _oss2_decrypt(provider, headers, cipher) == plain
    if size >= 48:  # ranged GET as oss2 does it: start aligned down to 16
        assert _oss2_decrypt(provider, headers, cipher[32:], offset=32) == plain[32:]


def test_oss2_reads_with_matdesc_and_public_only_writer(master, key_pair):
    desc = {"owner": "ossencfs", "a": "1"}
    writer = RsaMasterKey(public_key=master._public, matdesc=desc)
    material, headers = KeyRing([writer]).new_object(data_size=100, part_size=102400)
    assert headers[fmt.H_MATDESC] == '{"a":"1","owner":"ossencfs"}'
    plain = os.urandom(100)
    cipher = material.crypt_at(0, plain)
    assert _oss2_decrypt(oss2.RsaProvider(key_pair, mat_desc=desc), headers, cipher) == plain


def test_oss2_local_rsa_provider_reads_our_oaep(tmp_path, master):
    provider = oss2.LocalRsaProvider(dir=str(tmp_path), key="k")
    ours = RsaMasterKey.from_pem_file(str(tmp_path / "k.private_key.pem"))
    oaep = RsaMasterKey(ours._private, write_alg=fmt.WRAP_RSA_OAEP)
    material, headers = KeyRing([oaep]).new_object()
    plain = os.urandom(5000)
    assert _oss2_decrypt(provider, headers, material.crypt_at(0, plain)) == plain


def _oss2_encrypt(provider, plain: bytes):
    material = provider.create_content_material()
    headers = dict(material.to_object_meta())
    return headers, material.cipher.encrypt(plain)


@pytest.mark.parametrize("size", SIZES)
def test_we_read_oss2_rsa_provider(master, key_pair, size):
    provider = oss2.RsaProvider(key_pair)
    plain = os.urandom(size)
    headers, cipher = _oss2_encrypt(provider, plain)
    assert headers[fmt.H_WRAP_ALG] == fmt.WRAP_RSA_PKCS1
    material = KeyRing([master]).open(headers)
    assert material.iv[8:12] == b"\0\0\0\0"
    assert material.crypt_at(0, cipher) == plain
    if size > 17:
        assert material.crypt_at(17, cipher[17:]) == plain[17:]


def test_we_read_oss2_matdesc_as_a_map(master, key_pair):
    provider = oss2.RsaProvider(key_pair, mat_desc={"b": "2", "a": "1"})
    plain = os.urandom(333)
    headers, cipher = _oss2_encrypt(provider, plain)
    assert headers[fmt.H_MATDESC] != '{"a":"1","b":"2"}'  # oss2 writes {"b": "2", "a": "1"}
    same = RsaMasterKey(master._private, matdesc={"a": "1", "b": "2"})
    assert KeyRing([same]).open(headers).crypt_at(0, cipher) == plain
    different = RsaMasterKey(master._private, matdesc={"a": "1"})
    with pytest.raises(WrongKeyError, match="matdesc"):
        KeyRing([different]).open(headers)


@pytest.mark.parametrize("passphrase", [None, "pw"])
def test_we_read_oss2_local_rsa_provider(tmp_path, passphrase):
    provider = oss2.LocalRsaProvider(dir=str(tmp_path), key="t", passphrase=passphrase)
    plain = os.urandom(70_000)
    headers, cipher = _oss2_encrypt(provider, plain)
    assert headers[fmt.H_WRAP_ALG] == fmt.WRAP_RSA_OAEP
    ours = RsaMasterKey.from_pem_file(str(tmp_path / "t.private_key.pem"),
                                      passphrase.encode() if passphrase else None)
    ring = KeyRing([RsaMasterKey.generate(2048), ours])  # a wrong key first: tried in turn
    material = ring.open(headers)
    assert ring.unwrap_calls == 2
    assert material.crypt_at(0, cipher) == plain
    assert material.crypt_at(40_001, cipher[40_001:]) == plain[40_001:]


def test_oss2_multipart_part_equals_our_stream_at_offset(master, key_pair):
    """oss2 encrypts part k with IV + (k-1)*P/16; our stream at that offset must agree."""
    provider = oss2.RsaProvider(key_pair)
    crypto = provider.create_content_material()
    headers = dict(crypto.to_object_meta())
    material = KeyRing([master]).open(headers)
    part_size = 102400
    plain = os.urandom(part_size * 2 + 5)
    part2 = plain[part_size:2 * part_size]
    oss2_cipher = AESCTRCipher()
    oss2_cipher.initialize(material.key, material.iv, oss2_cipher.calc_offset(part_size))
    assert material.crypt_at(part_size, part2) == oss2_cipher.encrypt(part2)
