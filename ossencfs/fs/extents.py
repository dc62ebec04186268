"""Where a staging holds ciphertext: sorted, merged, half-open byte ranges.

Why it exists: a staging (``fs.staging``) keeps only the bytes a writer actually wrote; every
read, upload and materialize asks which parts of a range are staged and which come from the
old object or are holes. That bookkeeping is plain interval arithmetic, kept here apart from
the crypto and the disk so it can be read (and tested: ``tests/mount/test_units.py``) alone.
Offsets are bytes of the file (equal to offsets in the object body: CTR keeps positions).
"""
from __future__ import annotations

import bisect


class Extents:
    """Sorted, merged, half-open byte ranges that hold staged ciphertext."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self.ends, start)          # first range ending at/after start
        j = bisect.bisect_right(self.starts, end)         # ranges starting at/before end
        if i < j:
            start = min(start, self.starts[i])
            end = max(end, self.ends[j - 1])
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def truncate(self, size: int) -> None:
        i = bisect.bisect_left(self.ends, size)
        del self.starts[i + 1:], self.ends[i + 1:]
        if i < len(self.starts):
            if self.starts[i] >= size:
                del self.starts[i], self.ends[i]
            else:
                self.ends[i] = min(self.ends[i], size)

    def segments(self, start: int, end: int) -> list[tuple[int, int, bool]]:
        """Split [start, end) into (s, e, staged?) pieces."""
        out: list[tuple[int, int, bool]] = []
        pos = start
        i = bisect.bisect_right(self.ends, start)
        while pos < end:
            if i < len(self.starts) and self.starts[i] <= pos:
                e = min(self.ends[i], end)
                out.append((pos, e, True))
                pos = e
                i += 1
            else:
                nxt = self.starts[i] if i < len(self.starts) else end
                e = min(nxt, end)
                out.append((pos, e, False))
                pos = e
        return out

    def as_list(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self.starts, self.ends)]

    def total(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends))

    def uncovered(self, start: int, end: int) -> int:
        return sum(e - s for s, e, staged in self.segments(start, end) if not staged)
