"""``DirListing.names_after``: the names a stat walk fetches ahead (``fs.freshness``)."""
from __future__ import annotations

import stat

from ossencfs.fs.inodes import DirListing, Entry


def _listing(n: int) -> DirListing:
    names = [f"e{i:03d}" for i in range(n)]
    return DirListing({x: Entry(x, stat.S_IFREG) for x in names}, 0.0)


def test_names_after_and_beyond():
    lst = _listing(10)
    assert lst.names_after("e002", 3) == ["e003", "e004", "e005"]
    # those up to ``beyond`` were fetched ahead already: only the new end of the window
    assert lst.names_after("e002", 3, beyond="e004") == ["e005"]
    assert lst.names_after("e002", 3, beyond="e007") == []
    assert lst.names_after("e005", 3, beyond="e001") == ["e006", "e007", "e008"]   # behind
    assert lst.names_after("e008", 5, beyond="e008") == ["e009"]
    lst.put(Entry("e0035", stat.S_IFREG))                       # a new name: order rebuilt
    assert lst.names_after("e003", 2) == ["e0035", "e004"]
