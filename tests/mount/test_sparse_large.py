"""Sparse files and objects larger than --cache-size (issue 13, item 1).

Only bytes actually written count against the cache limit: holes are zeros (the keystream,
once encrypted) and untouched ranges of the old object are streamed from it while uploading,
never staged. ``truncate -s`` far beyond the limit, an append to an object larger than the
limit, and a rewrite of part of one all reach the bucket; unmount does not hang.
"""
from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = pytest.mark.mount

MiB = 1 << 20
LIMIT = ["--cache-size", "2M"]


def _stopped_cleanly(m) -> None:
    """Unmount (uploads drain) and check the process ended by itself, with status 0."""
    proc = m.proc
    subprocess.run(["fusermount3", "-u", str(m.path)], check=True, timeout=30)
    assert proc.wait(timeout=120) == 0, m.log()
    m.proc = None


@pytest.mark.parametrize("write_back", ["0", "1"])
def test_truncate_far_beyond_the_cache_limit(make_mount, crypto_bucket, write_back):
    m = make_mount("sparse", extra=[*LIMIT, "--write-back", write_back])
    m.run("truncate", "-s", "10M", str(m.path / "sparse.bin"))
    assert (m.path / "sparse.bin").stat().st_size == 10 * MiB
    with open(m.path / "holes.bin", "wb") as f:         # data, a hole, data
        f.write(b"head")
        f.seek(6 * MiB)
        f.write(b"tail")
    assert m.state()["cache"]["staged_bytes"] <= 2 * MiB
    _stopped_cleanly(m)
    assert crypto_bucket.get_object("sparse.bin").read() == bytes(10 * MiB)
    assert crypto_bucket.get_object("holes.bin").read() == \
        b"head" + bytes(6 * MiB - 4) + b"tail"
    assert not m.journal_files()


@pytest.mark.parametrize("write_back", ["0", "1"])
def test_append_and_rewrite_part_of_an_object_larger_than_the_limit(make_mount, crypto_bucket,
                                                                      write_back):
    old = os.urandom(6 * MiB)
    crypto_bucket.put_object("big.bin", old)
    crypto_bucket.put_object("mid.bin", old)
    m = make_mount("big", extra=[*LIMIT, "--write-back", write_back])
    tail = os.urandom(300_000)
    with open(m.path / "big.bin", "ab") as f:           # append to a 6 MiB object
        f.write(tail)
    patch = os.urandom(100_000)
    with open(m.path / "mid.bin", "r+b") as f:          # rewrite 100 KB in the middle
        f.seek(3 * MiB)
        f.write(patch)
    expect_mid = old[:3 * MiB] + patch + old[3 * MiB + len(patch):]
    assert (m.path / "mid.bin").read_bytes() == expect_mid
    with open(m.path / "big.bin", "ab") as f:           # a second change of the same file
        f.write(b"more")
    _stopped_cleanly(m)
    assert crypto_bucket.get_object("big.bin").read() == old + tail + b"more"
    assert crypto_bucket.get_object("mid.bin").read() == expect_mid
    assert not m.journal_files()
