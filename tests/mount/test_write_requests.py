"""What a write costs in requests: a new small file is one PUT.

Counts come from the emulator (real HTTP), never from timings.
"""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.mount


def _ops(emulator, prefix: str) -> list[tuple[str, str]]:
    time.sleep(0.2)                      # the stats of the last responses follow them
    return [(e[1], e[4]) for e in emulator.request_log if e[4].startswith(prefix)]


def test_new_small_files_cost_one_put_each(mount, crypto_bucket, emulator):
    """In a directory the mount has listed, creating a file and closing it sends exactly one
    PutObject (with x-oss-forbid-overwrite): the name's absence comes from the listing."""
    (mount.path / "d").mkdir()
    (mount.path / "d" / "old").write_bytes(b"old")
    emulator.reset_stats()
    for i in range(10):
        with open(mount.path / "d" / f"new{i}", "wb") as f:
            f.write(b"x" * (100 + i))
    ops = _ops(emulator, "d/")
    assert ops == [("PutObject", f"d/new{i}") for i in range(10)], ops
    for i in range(10):
        assert crypto_bucket.get_object(f"d/new{i}").read() == b"x" * (100 + i)
