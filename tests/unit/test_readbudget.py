"""``fs.readbudget``: streams reading ahead at once split one budget; a stream that fetched up
to its end, or went quiet for ``ACTIVE`` seconds, no longer takes a share."""
from __future__ import annotations

from ossencfs.fs import readbudget
from ossencfs.fs.readbudget import ReadAheadStreams


def test_streams_split_the_budget_until_done_or_quiet(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(readbudget.time, "monotonic", lambda: now[0])
    streams = ReadAheadStreams(32 << 20)
    a, b, c = object(), object(), object()
    assert streams.share(a) == 32 << 20
    assert streams.share(b) == 16 << 20
    assert streams.share(c) == (32 << 20) // 3
    streams.done(c)                       # fetched to its end: the next file gets c's share
    assert streams.share(a) == 16 << 20
    now[0] += readbudget.ACTIVE + 1       # b went quiet (a stalled or closed reader)
    assert streams.share(a) == 32 << 20
    streams.done(object())                # unknown stream: nothing happens
    assert streams.share(a) == 32 << 20
