"""AES-256-CTR at any offset, checked against a keystream built from raw AES blocks.

The reference below computes keystream block n as AES-ECB(counter0 + n mod 2**128), which is
the SDKs' definition (SPEC A.2/A.4); it shares no code with CtrStream's use of CTR mode.
"""
from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings, strategies as st

from ossencfs.envelope.ctr import (CtrStream, counter_to_iv, crypt_at, iv_to_counter, new_data_key,
                                   new_iv)

MOD = 1 << 128
KEY = bytes(range(32))


def reference_keystream(key: bytes, counter0: int, offset: int, length: int) -> bytes:
    first, skip = divmod(offset, 16)
    nblocks = (skip + length + 15) // 16
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    blocks = b"".join(((counter0 + first + i) % MOD).to_bytes(16, "big") for i in range(nblocks))
    return ecb.update(blocks)[skip:skip + length]


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def test_new_iv_shape_and_freshness():
    ivs = {new_iv() for _ in range(64)}
    assert len(ivs) == 64
    for iv in ivs:
        assert len(iv) == 16
        assert iv[8:12] == b"\0\0\0\0"
    keys = {new_data_key() for _ in range(64)}
    assert len(keys) == 64 and all(len(k) == 32 for k in keys)


def test_iv_counter_conversion():
    iv = bytes.fromhex("5649ca0d16946d8100000000e649d194")
    c = iv_to_counter(iv)
    assert c == int("5649ca0d16946d8100000000e649d194", 16)
    assert counter_to_iv(c) == iv
    assert counter_to_iv(MOD + 5) == (5).to_bytes(16, "big")
    assert counter_to_iv(-1) == b"\xff" * 16
    with pytest.raises(ValueError):
        iv_to_counter(b"short")


@pytest.mark.parametrize("counter0", [0, 8, (1 << 64) - 1, MOD - 1, MOD - 3, 0x2A5F1C9E77D04B3386E1F0A4C3B2D1E0])
@pytest.mark.parametrize("offset", [0, 1, 15, 16, 17, 47, 1000])
def test_matches_reference_including_wrap(counter0, offset):
    data = os.urandom(100)
    assert crypt_at(KEY, counter0, offset, data) == xor(data, reference_keystream(KEY, counter0, offset, 100))


def test_counter_wraps_at_2_128():
    # block 0 uses 2**128-1, block 1 must use 0 (not 2**128 and not an error)
    ks = crypt_at(KEY, MOD - 1, 0, bytes(32))
    ecb = Cipher(algorithms.AES(KEY), modes.ECB()).encryptor()
    assert ks[16:] == ecb.update(bytes(16))
    # starting right at the wrapped position gives the same bytes
    assert crypt_at(KEY, MOD - 1, 16, bytes(16)) == ks[16:]


def test_stream_position_and_validation():
    s = CtrStream(KEY, 7, 5)
    assert s.position == 5
    s.update(b"abc")
    assert s.position == 8
    with pytest.raises(ValueError):
        CtrStream(b"k" * 16, 0)
    with pytest.raises(ValueError):
        CtrStream(KEY, 0, -1)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(0, 3000), data=st.data(), counter0=st.integers(0, MOD - 1))
def test_any_window_equals_slice_of_whole(size, data, counter0):
    plain = os.urandom(size)
    whole = crypt_at(KEY, counter0, 0, plain)
    start = data.draw(st.integers(0, size))
    length = data.draw(st.integers(0, size - start))
    window = crypt_at(KEY, counter0, start, whole[start:start + length])
    assert window == plain[start:start + length]


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, 5000), cuts=st.lists(st.integers(0, 5000), max_size=8),
       counter0=st.sampled_from([0, 9, MOD - 2, (1 << 64) - 1]))
def test_chunked_stream_equals_one_shot_and_roundtrips(size, cuts, counter0):
    plain = os.urandom(size)
    bounds = sorted({0, size, *(c for c in cuts if c <= size)})
    enc = CtrStream(KEY, counter0)
    cipher = b"".join(enc.update(plain[a:b]) for a, b in zip(bounds, bounds[1:]))
    assert cipher == crypt_at(KEY, counter0, 0, plain)
    assert len(cipher) == size
    assert CtrStream(KEY, counter0).update(cipher) == plain
