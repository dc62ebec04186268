"""AES-256-CTR content cipher, usable from any byte offset of an object.

Every SDK encrypts object content with AES-256-CTR whose first counter block is the 16-byte IV
and whose counter is a full 128-bit big-endian integer (SPEC A.2). A ranged read or a multipart
part therefore starts at counter ``(counter0 + offset // 16) mod 2**128`` and drops the first
``offset % 16`` keystream bytes. Nothing here buffers a whole object: callers feed chunks.
"""
from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_SIZE = 16
KEY_SIZE = 32
IV_SIZE = 16
_COUNTER_MOD = 1 << 128


def new_data_key() -> bytes:
    """A fresh content key; never reused across objects (DESIGN invariant 2)."""
    return os.urandom(KEY_SIZE)


def new_iv() -> bytes:
    """A fresh IV with bytes 8..11 zero.

    Java and Go add block numbers to the low 64 bits only (Java even overwrites IV[8..11]);
    with those bytes zero their arithmetic equals the 128-bit add (SPEC A.4, pitfall 3).
    """
    iv = bytearray(os.urandom(IV_SIZE))
    iv[8:12] = b"\x00\x00\x00\x00"
    return bytes(iv)


def iv_to_counter(iv: bytes) -> int:
    """The IV as the big-endian 128-bit initial counter."""
    if len(iv) != IV_SIZE:
        raise ValueError(f"IV must be {IV_SIZE} bytes, got {len(iv)}")
    return int.from_bytes(iv, "big")


def counter_to_iv(counter: int) -> bytes:
    """The counter block for ``counter`` (reduced mod 2**128, as every SDK's counter wraps)."""
    return (counter % _COUNTER_MOD).to_bytes(IV_SIZE, "big")


class CtrStream:
    """Streaming AES-256-CTR keystream XOR, positioned at any byte offset.

    Encryption and decryption are the same operation. Successive ``update`` calls continue
    where the previous one stopped, so a large object is processed chunk by chunk.
    """

    __slots__ = ("_ctx", "_position")

    def __init__(self, key: bytes, counter0: int, offset: int = 0) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"AES-256 key must be {KEY_SIZE} bytes, got {len(key)}")
        if offset < 0:
            raise ValueError("offset must be >= 0")
        block, skip = divmod(offset, BLOCK_SIZE)
        # OpenSSL's CTR increments the whole 16-byte block with carry and wraps at 2**128,
        # which is what the SDKs do; tests pin this (test_ctr.py counter-wrap cases).
        self._ctx = Cipher(algorithms.AES(key), modes.CTR(counter_to_iv(counter0 + block))).encryptor()
        if skip:
            self._ctx.update(bytes(skip))
        self._position = offset

    @property
    def position(self) -> int:
        """Object offset of the next byte ``update`` will process."""
        return self._position

    def update(self, data: bytes | memoryview) -> bytes:
        """XOR ``data`` with the keystream at the current position and advance."""
        out = self._ctx.update(data)
        self._position += len(data)
        return out


def crypt_at(key: bytes, counter0: int, offset: int, data: bytes | memoryview) -> bytes:
    """One-shot encrypt/decrypt of ``data`` that sits at ``offset`` in the object."""
    return CtrStream(key, counter0, offset).update(data)
