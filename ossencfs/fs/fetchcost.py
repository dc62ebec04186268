"""What a ranged GET costs on this mount's link, measured: a part per request, a part per byte.

Why it exists: a small read that seeks (``readahead.BlockSource``) may fetch just its 4 KiB
pages plus a margin (a *fragment*) or the whole cache block around it. Over a link like a
real OSS region's (20 ms to the first byte, 50 Mbit/s per connection) a 256 KiB block costs
about 42 ms more than a fragment, twice the request itself, and fetching only fragments cut
4 KiB random reads from ~145 to 7.9 KiB fetched per read. On loopback the extra bytes cost
next to nothing while the request does, and later random reads of the same file often land
in blocks already fetched: there fragments made 4 KiB random reads 1.7 times slower (64 MiB
file, 300 reads). No fixed rule suits both, so the choice is made from measurements.

The same samples say whether one connection is slow (``slow_connection``): read-ahead then
keeps two GETs of a stream under way (``readahead``).

Model: a GET of ``n`` bytes takes ``per_request + n * per_byte`` seconds. Small GETs
(``SMALL`` bytes at most) measure ``per_request``; large ones (``LARGE`` bytes at least: blocks,
read-ahead runs) measure ``per_byte``, each against the ``per_request`` known at its time.
Each is the least of a few recent samples: noise here only adds (load on this machine, a
cold connection), and a link that changes moves the choice within a few GETs. Measured on
2 shared, loaded cores: loopback ~5-15 ms per request and ~1 ms more for a 256 KiB block;
20 ms + 50 Mbit/s: ~30-55 ms per request and ~45 ms more for the block. Times are wall-clock
seconds of the awaited GET, queueing behind other requests included.
"""
from __future__ import annotations

import collections

SMALL = 64 << 10        # a GET this small measures the per-request cost
LARGE = 128 << 10       # a GET this large measures the per-byte cost
KEEP_SMALL = 8          # the per-request cost is the least of this many recent small GETs
KEEP_LARGE = 4          # the per-byte cost: the least of this many recent large GETs
#: a whole block pays when its extra bytes cost at most this fraction of one request: then a
#: later read landing in the block (which saves a request) need only be that likely
WHOLE_BLOCK_RATIO = 0.35
#: while fragments win, every this many decisions a block is fetched again to measure the
#: link anew (the gap doubles each time, up to ``PROBE_GAP_MAX``): one slow first block must
#: not decide for the whole mount
PROBE_GAP, PROBE_GAP_MAX = 8, 256
#: bytes per second below which one connection is slow: the best recent large GET brought
#: less (loopback: 1 MiB GETs of 16 parallel readers 100-450 MB/s; a region at 50 Mbit/s per
#: connection, the cloud profile: ~6 MB/s)
SLOW_CONNECTION = 25e6


class FetchCost:
    """Recent GET times on one mount (shared by every file's ``BlockSource``)."""

    def __init__(self) -> None:
        self._small: collections.deque[float] = collections.deque(maxlen=KEEP_SMALL)
        self._large: collections.deque[float] = collections.deque(maxlen=KEEP_LARGE)
        self._early: list[tuple[int, float]] = []   # large GETs seen before any small one
        self._rates: collections.deque[float] = collections.deque(maxlen=KEEP_LARGE)
        self._gap, self._until_probe = PROBE_GAP, PROBE_GAP

    @property
    def per_request(self) -> float | None:
        """Seconds a small GET takes (the least recent one), None before any."""
        return min(self._small) if self._small else None

    @property
    def per_byte(self) -> float | None:
        """Seconds per byte beyond the request, None before any large GET was measured."""
        return min(self._large) if self._large else None

    def record(self, nbytes: int, seconds: float) -> None:
        """One GET of ``nbytes`` bytes that took ``seconds``. A large GET is measured against
        the per-request cost known at its time."""
        if nbytes <= SMALL:
            self._small.append(seconds)
            early, self._early = self._early, []
            for n, s in early:
                self._large.append(max(0.0, s - seconds) / n)
        elif nbytes >= LARGE:
            self._rates.append(nbytes / max(seconds, 1e-9))
            per_request = self.per_request
            if per_request is None:
                self._early = [*self._early[-3:], (nbytes, seconds)]
            else:
                self._large.append(max(0.0, seconds - per_request) / nbytes)

    def slow_connection(self) -> bool:
        """Does one connection bring less than ``SLOW_CONNECTION`` bytes per second (the best
        of the last ``KEEP_LARGE`` large GETs, request time included)? Then two GETs at once
        fetch a range in about half the time. False before any large GET."""
        return bool(self._rates) and max(self._rates) < SLOW_CONNECTION

    def whole_block_pays(self, block: int, fragment: int) -> bool:
        """Should a small read that seeks fetch its whole ``block``-byte cache block rather
        than a ``fragment``-byte range? Before any large GET was seen: yes (the block is the
        probe, and what reads did before fragments existed); before any small one: no (the
        fragment is the probe). Then: when the extra bytes cost at most
        ``WHOLE_BLOCK_RATIO`` of a request, and now and then to measure again."""
        per_request, per_byte = self.per_request, self.per_byte
        if per_byte is None and not self._early:
            return True
        if per_byte is None or per_request is None:
            return False
        if per_byte * max(0, block - fragment) <= WHOLE_BLOCK_RATIO * per_request:
            self._gap = self._until_probe = PROBE_GAP
            return True
        self._until_probe -= 1
        if self._until_probe > 0:
            return False
        self._gap = min(2 * self._gap, PROBE_GAP_MAX)
        self._until_probe = self._gap
        return True
