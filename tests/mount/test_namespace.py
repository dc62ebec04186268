"""The namespace as the kernel and tools see it: listings that stay right while they change
under them, and inode numbers that stay put.

Each test is one example of a kind of fault from the issue: a stale sorted-name cache of a
listing (EIO from stat-ahead), a local change lost when a listing fetched before it lands
(a just-closed file missing), and inode numbers that change on forget, rename and remount
(backup tools, git's index and sync clients re-read everything).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.mount


def _drop_caches() -> None:
    """Make the kernel forget every unused inode (FUSE_FORGET for all of them)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")


# -- 1. a listing's sorted names follow every change of its entries ---------------------------
def test_stat_after_a_same_count_change_is_not_eio(make_mount):
    """A rename keeps the entry count of a listing: its sorted-name cache must still change
    (it was rebuilt only when the count changed, and stat-ahead hit a KeyError -> EIO)."""
    m = make_mount("t", extra=["-o", "attr_timeout=0.5"])
    d = m.path / "d"
    d.mkdir()
    for i in range(1, 6):
        (d / f"f{i}").write_bytes(b"x" * i)
    time.sleep(1.0)                                   # past attr_timeout
    assert not (d / "missing").exists()               # lists d afresh
    assert os.stat(d / "f3").st_size == 3             # builds the sorted names
    os.rename(d / "f4", d / "g4")                     # same count, other names
    assert os.stat(d / "f1").st_size == 1             # stat-ahead walks the sorted names
    os.unlink(d / "f2")
    (d / "a0").write_bytes(b"")                       # again the same count
    assert os.stat(d / "a0").st_size == 0
    assert sorted(os.listdir(d)) == ["a0", "f1", "f3", "f5", "g4"]
    for name, size in (("f1", 1), ("f3", 3), ("f5", 5), ("g4", 4)):
        assert os.stat(d / name).st_size == size


# -- 2. a local change made while a listing is in flight survives its result --------------------
def _lists(emulator) -> int:
    counts = emulator.request_counts
    return counts["ListObjects"] + counts["ListObjectsV2"]


def test_a_file_closed_while_its_directory_is_listed_is_shown(make_mount, oss2_bucket, emulator):
    """A listing of a large directory is fetched (slowly: a narrow link, ~3 s for its one
    page) while a file's upload lands at close(): the listing's result must not drop the file
    when it replaces the cached one. The page is made when asked for, before the upload.
    (The issue's case: 3,100 entries at 200 ms a request; a narrow link slows only listings.)
    The kernel runs unlink, rename, mkdir and rmdir of a directory only while no lookup or
    readdir of it is in progress, so those kinds are driven through the model itself in
    ``test_namespace_model.py``; an upload lands whenever it is done."""
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: oss2_bucket.put_object(f"big/e{i:05d}", b""), range(600)))
    oss2_bucket.put_object("big/", b"")
    m = make_mount("t", extra=["-o", "attr_timeout=4"])
    big = m.path / "big"
    writer = open(big / "a-new.txt", "wb")            # looked up and created: listing cached
    try:
        writer.write(b"just closed")
        time.sleep(4.2)                                # the listing of big has expired
        emulator.set_faults(bandwidth_mbps=0.5)
        before = _lists(emulator)
        seen: list[set[str]] = []
        lister = threading.Thread(target=lambda: seen.append(set(os.listdir(big))))
        lister.start()
        deadline = time.monotonic() + 10
        while _lists(emulator) == before:              # its page is asked for
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.05)
        writer.close()
        lister.join(timeout=60)
        assert seen, "the listing did not finish"
        ops = [e[1] for e in emulator.request_log if e[1] in ("PutObject", "ListObjectsV2")]
        assert ops[-2:] == ["PutObject", "ListObjectsV2"]   # the upload landed mid-listing
    finally:
        writer.close()
        emulator.set_faults(bandwidth_mbps=0)
    names = set(os.listdir(big))                       # within attr_timeout: the cached listing
    assert "a-new.txt" in names and len(names) == 601
    assert os.stat(big / "a-new.txt").st_size == len(b"just closed")


# -- 3. inode numbers ------------------------------------------------------------------------
def test_inode_numbers_survive_forget_rename_and_remount(make_mount):
    m = make_mount("t")
    d = m.path / "d"
    d.mkdir()
    (d / "sub").mkdir()
    for i in range(5):
        (d / f"f{i}").write_bytes(b"z" * i)
    (d / "sub" / "deep").write_bytes(b"deep")
    before = {p: os.stat(d / p).st_ino for p in ("", "sub", "sub/deep", "f0", "f1", "f2")}
    assert len(set(before.values())) == len(before)

    _drop_caches()                                     # the kernel forgets every inode
    assert {p: os.stat(d / p).st_ino for p in before} == before

    os.rename(d / "f1", d / "g1")                      # rename of a file ...
    os.rename(d / "sub", d / "moved")                  # ... and of a directory
    _drop_caches()
    renamed = {"": "", "sub": "moved", "sub/deep": "moved/deep", "f0": "f0", "f1": "g1",
               "f2": "f2"}
    assert {p: os.stat(d / q).st_ino for p, q in renamed.items()} == before

    m.remount()                                        # a new process: the attribute cache knows
    assert {p: os.stat(d / q).st_ino for p, q in renamed.items()} == before

    # numbers handed out after the remount never collide with remembered ones
    (d / "fresh").write_bytes(b"")
    (d / "freshdir").mkdir()
    inos = [os.stat(p).st_ino for p in d.rglob("*")] + [os.stat(d).st_ino]
    assert len(inos) == len(set(inos)), sorted(inos)


def test_a_deleted_and_recreated_name_gets_a_new_number(make_mount):
    m = make_mount("t")
    p = m.path / "f"
    p.write_bytes(b"one")
    with open(p, "rb") as held:                         # the old inode lives on while open
        old = os.fstat(held.fileno()).st_ino
        os.unlink(p)
        p.write_bytes(b"two")
        assert os.stat(p).st_ino != old
