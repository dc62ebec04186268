"""``checksums.crc64`` is the CRC OSS and oss2 compute (``x-oss-hash-crc64ecma``)."""
from __future__ import annotations

import os

from oss2.utils import Crc64

from ossencfs.checksums import crc64


def _oss2(data: bytes) -> int:
    c = Crc64(0)
    c.update(data)
    return c.crc


def test_crc64_is_oss2s_for_every_kind_of_buffer_and_incrementally():
    data = os.urandom(3 << 20) + b"tail"
    assert crc64(b"") == _oss2(b"") == 0
    assert crc64(b"123456789") == 0x995DC9BBDF1939FA          # CRC-64/XZ check value
    assert crc64(data) == _oss2(data)
    assert crc64(memoryview(data)[5:]) == crc64(bytearray(data[5:])) == _oss2(data[5:])
    cut = 1 << 20
    assert crc64(data[cut:], crc64(data[:cut])) == _oss2(data)
