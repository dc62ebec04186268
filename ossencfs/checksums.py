"""CRC-64/XZ, the checksum OSS reports as ``x-oss-hash-crc64ecma`` (SPEC F.4), for the mount's
request and response bodies and the emulator's stored objects.

fastcrc (a Rust library) computes it at ~5 GB/s on this machine; crcmod's C extension, which
oss2 uses, at ~0.28 GB/s, which made it 42 % of the emulator's CPU while receiving an upload on
loopback and 15 % of the mount's while sending one (py-spy, 256 MiB sequential write). The
values are the same (tests check them against oss2's ``Crc64``).
"""
from __future__ import annotations

import fastcrc


def crc64(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The CRC-64/XZ of ``data``; ``crc``: the CRC of the bytes before it (incremental: the CRC
    of ``a + b`` is ``crc64(b, crc64(a))``), 0 to start."""
    return fastcrc.crc64.xz(data, crc)
