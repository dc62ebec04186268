"""The read-ahead all sequential readers of a mount may hold at once, shared among them.

Why: each reader's window grows to ``readahead.MAX_WINDOW`` (32 MiB), and blocks fetched ahead
wait in the in-memory block cache (64 MiB) until they are read. Sixteen parallel readers asked
for 512 MiB ahead; blocks evicted before their reader reached them were fetched again (23-48 %
more bytes than the files held, 0.37x the rate of 16 CryptoBucket threads; the reduced scale
run of ``scripts/bench_scale.py``). Readers active together now split one budget.

A share is what a stream sees when it asks, and streams that start one after the other saw
large ones (the first of eight readers of 24 MiB files fetched its whole file ahead before the
others asked: 1.55x the bytes), so each stream also reports the bytes it has ahead of its
reader (``note_ahead``) and fetches more only while all of them stay within the budget
(``may_fetch``; a stream's first GET ahead is always allowed, so none starves).
"""
from __future__ import annotations

import time

#: seconds: a stream that read ahead within this long still counts (long enough for a reader
#: starved of CPU for a while: with 2 s, 8 readers under CI load refetched 6 % of their bytes)
ACTIVE = 10.0


class ReadAheadStreams:
    """Streams reading ahead right now, and each one's share of ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._seen: dict[int, float] = {}
        self._ahead: dict[int, int] = {}     # bytes fetched ahead of each stream's reader

    def share(self, stream: object) -> int:
        """Bytes ``stream`` may have fetched ahead of its reader: the budget divided among
        the streams (``stream`` included) that asked within the last ``ACTIVE`` seconds (a
        finished stream keeps its share that long: the others' windows only stay smaller)."""
        now = time.monotonic()
        self._seen[id(stream)] = now
        if len(self._seen) > 1:
            for sid, seen in list(self._seen.items()):
                if now - seen > ACTIVE:
                    del self._seen[sid]
                    self._ahead.pop(sid, None)
        return self.budget // len(self._seen)

    def note_ahead(self, stream: object, nbytes: int) -> None:
        """``stream`` has ``nbytes`` fetched (or being fetched) ahead of its reader (0: none,
        and it is not kept: a reader that only seeks leaves no entry behind)."""
        if nbytes:
            self._ahead[id(stream)] = nbytes
        else:
            self._ahead.pop(id(stream), None)

    def may_fetch(self, stream: object, nbytes: int) -> bool:
        """Whether ``stream`` may have ``nbytes`` ahead of its reader while the other streams
        keep theirs: all together within the budget."""
        sid = id(stream)
        return sum(n for s, n in self._ahead.items() if s != sid) + nbytes <= self.budget

    def done(self, stream: object) -> None:
        """``stream``'s file was closed: it reads nothing more, so the next file of a copy does
        not find its window halved by the last one for ``ACTIVE`` s. (Not when it has fetched
        ahead up to its end: its blocks still wait in memory for its reader, and the others
        then took shares as if they were not there.)"""
        self._seen.pop(id(stream), None)
        self._ahead.pop(id(stream), None)
