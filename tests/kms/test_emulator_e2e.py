"""End to end through the local cloud: the OSS emulator with its own KMS (one ``Emulator``),
oss2's CryptoBucket + AliKMSProvider on one side, our KmsMasterKey/KeyRing on the other."""
from __future__ import annotations

import json
import os

import oss2
import pytest
from aliyunsdkcore.client import AcsClient
from aliyunsdkkms.request.v20160120 import CreateKeyRequest

from ossencfs.envelope.keys import KeyRing
from ossencfs.kms import KmsMasterKey

from .conftest import AK, REGION, SK

BUCKET = "test-bucket"          # the root conftest's emulator bucket


@pytest.mark.parametrize("passphrase", [None, "pw"])
def test_oss2_cryptobucket_and_keyring_through_emulator(emulator, passphrase) -> None:
    if not getattr(emulator, "kms_endpoint", None):
        pytest.skip("emulator runs no KMS")
    # create the CMK over RPC, as a user of `ossencfs emulator --kms-port` would
    admin = AcsClient(AK, SK, REGION, auto_retry=False, proxy={"http": None, "https": None})
    admin.add_endpoint(REGION, "kms", emulator.kms_endpoint)
    cmk = json.loads(admin.do_action_with_exception(CreateKeyRequest.CreateKeyRequest()))["KeyMetadata"]["KeyId"]

    provider = oss2.AliKMSProvider(AK, SK, REGION, cmk, passphrase=passphrase)
    provider.kms_client.add_endpoint(REGION, "kms", emulator.kms_endpoint)
    provider.kms_client.proxy = {"http": None, "https": None}
    crypto = oss2.CryptoBucket(oss2.Auth(AK, SK), emulator.endpoint, BUCKET, crypto_provider=provider)
    plain = oss2.Bucket(oss2.Auth(AK, SK), emulator.endpoint, BUCKET)
    ring = KeyRing([KmsMasterKey(cmk, REGION, AK, SK, endpoint=emulator.kms_endpoint,
                                 context={"x-passphrase": passphrase} if passphrase else None)])
    data = os.urandom(300_000)

    # oss2 writes, we read (raw ciphertext through a plain bucket, decrypted with our key ring)
    crypto.put_object("by-oss2.bin", data)
    obj = plain.get_object("by-oss2.bin")
    cipher = obj.read()
    assert cipher != data
    material = ring.open(dict(obj.headers), object_name="by-oss2.bin")
    assert material.crypt_at(0, cipher) == data
    part = plain.get_object("by-oss2.bin", byte_range=(4096, 9999)).read()
    assert material.crypt_at(4096, part) == data[4096:10000]

    # we write (oss2 flavour), oss2 reads, whole and ranged
    material, headers = ring.new_object()
    plain.put_object("by-us.bin", material.crypt_at(0, data), headers=headers)
    assert crypto.get_object("by-us.bin").read() == data
    assert crypto.get_object("by-us.bin", byte_range=(1001, 5000)).read() == data[1001:5001]
