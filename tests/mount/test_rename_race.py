"""A renamed directory never comes back: not in the mount, not in the bucket.

A directory whose entries were just made has work of its own in flight when it is renamed:
its times go to its ``dir/`` marker ``META_DELAY`` after the first change (``Namespace.touch_dir``)
and, with write-back, its files go up in the background. Either used to land under the old
name after the rename's copies and deletes (``fs/rename.py`` ``_rename_dir``), so the old name
reappeared. The loop below renames at a spread of moments around those background writes
(the emulator's latency widens each window); the assertions check only the outcome.
"""
from __future__ import annotations

import os
import time

import oss2
import pytest

from ossencfs.fs.context import META_DELAY

ROUNDS = 12


def _scenario(p, i: int, offset: float) -> None:
    src = p / f"src{i}"
    os.makedirs(src / "sub")
    first_change = time.monotonic()        # the marker of src{i} is written META_DELAY later
    for n in range(5):
        (src / f"f{n}").write_bytes(f"file {n}".encode() * 100)
    (src / "sub" / "deep").write_bytes(b"deep")
    time.sleep(max(0.0, first_change + offset - time.monotonic()))
    os.rename(src, p / f"dst{i}")


@pytest.mark.parametrize("mode", [[], ["--write-back", "1"]], ids=["upload-on-close", "write-back"])
def test_renamed_directory_never_comes_back(make_mount, emulator, oss2_bucket, mode):
    m = make_mount(extra=mode)
    p = m.path
    back: list[str] = []
    emulator.set_faults(latency_ms=40)
    try:
        for i in range(ROUNDS):
            # rename from a little before to a little after the marker write starts
            _scenario(p, i, META_DELAY * (0.5 + i / ROUNDS))
            if os.path.exists(p / f"src{i}"):
                back.append(f"src{i}")
            assert sorted(os.listdir(p / f"dst{i}")) == ["f0", "f1", "f2", "f3", "f4", "sub"]
    finally:
        emulator.set_faults(latency_ms=0)
    assert back == [], f"renamed directories visible again under their old names: {back}"
    m.stop()                      # every pending upload and marker write is done
    keys = [o.key for o in oss2.ObjectIteratorV2(oss2_bucket)]
    assert [k for k in keys if k.startswith("src")] == []
    for i in range(ROUNDS):
        assert {f"dst{i}/", f"dst{i}/sub/deep"} | {f"dst{i}/f{n}" for n in range(5)} <= set(keys)
        assert oss2_bucket.get_object(f"dst{i}/f3").read() != b""    # (CSE bytes: present)
