"""``--shard I/N``: a deterministic split of the key space among N independent runs.

An object belongs to shard ``I`` (1..N) when the first 8 bytes of SHA-256 of its UTF-8 key,
as a big-endian integer, are ``I - 1`` modulo N. Every machine computes the same answer
without coordination, and the shards of a bucket are disjoint and cover it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import OssEncError


@dataclass(frozen=True)
class Shard:
    index: int      # 1..count
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: str) -> bool:
        if self.count == 1:
            return True
        h = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big")
        return h % self.count == self.index - 1


WHOLE = Shard(1, 1)


def parse_shard(text: str) -> Shard:
    """``"I/N"`` with 1 <= I <= N -> Shard; OssEncError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise OssEncError(f"--shard {text!r}: expected I/N, e.g. 2/8")
    index, count = int(m.group(1)), int(m.group(2))
    if not 1 <= index <= count:
        raise OssEncError(f"--shard {text}: I must be between 1 and N")
    return Shard(index, count)
