"""CRC-64/XZ combining (``x-oss-hash-crc64ecma`` of appended data and of multipart objects).

OSS reports the CRC of a multipart object or an appended object as the combination of the
pieces' CRCs; computing it this way avoids re-reading the data.
"""
from __future__ import annotations

import functools
from typing import Sequence

_POLY_REFLECTED = 0xC96C5795D7870F42          # CRC-64/XZ (ECMA-182), reflected


def _gf2_times(mat: Sequence[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_compose(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """The operator "apply b, then a"."""
    return [_gf2_times(a, col) for col in b]


@functools.lru_cache(maxsize=64)
def _zeros_operator(nbytes: int) -> tuple[int, ...]:
    """GF(2) matrix that advances a CRC register over ``nbytes`` zero bytes.

    Cached per length: a Complete of N equal parts then costs two matrix builds instead of N
    (oss2's generic combine rebuilds it on every call, ~25 ms each in pure Python).
    """
    op = [_POLY_REFLECTED] + [1 << (k - 1) for k in range(1, 64)]    # one zero bit
    for _ in range(3):                                                # -> one zero byte
        op = _gf2_compose(op, op)
    result: list[int] | None = None
    while nbytes:
        if nbytes & 1:
            result = op if result is None else _gf2_compose(op, result)
        nbytes >>= 1
        if nbytes:
            op = _gf2_compose(op, op)
    return tuple(result or [1 << k for k in range(64)])


def crc64_combine(crc1: int | None, crc2: int | None, len2: int) -> int | None:
    """CRC of a+b from crc(a), crc(b) and len(b) (zlib-style); None when either is unknown."""
    if crc1 is None or crc2 is None:
        return None
    if len2 == 0:
        return crc1
    return _gf2_times(_zeros_operator(len2), crc1) ^ crc2
