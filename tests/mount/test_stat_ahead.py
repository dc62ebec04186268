"""`ls -l` of a directory: attributes right, one request per entry, no re-listing per stat.

An entry's attributes come from a HEAD, or, where the object might be an Encryption SDK
message (no headers known yet, 64 bytes or more), from a GET of its first 4 KiB, which
answers the same headers and the probe at once (``EsdkObjects.head``): `_resolving`
counts both."""
from __future__ import annotations

import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.mount


RESOLVING = ("HeadObject", "GetObject")


def _seed(oss2_bucket, n: int) -> dict[str, int]:
    """Plain objects written beside the mount, every seventh with its own POSIX mode."""
    modes = {}

    def put(i: int) -> None:
        name = f"f{i:04d}"
        headers = {}
        if i % 7 == 0:
            headers = {"x-oss-meta-mode": str(stat.S_IFREG | 0o600)}
            modes[name] = 0o600
        else:
            modes[name] = None
        oss2_bucket.put_object(f"big/{name}", b"x" * i, headers=headers)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(n)))
    return modes


def test_ls_l_resolves_each_entry_once_and_right(mount, oss2_bucket, emulator):
    n = 300
    modes = _seed(oss2_bucket, n)
    emulator.reset_stats()
    out = subprocess.run(["ls", "-l", "--time-style=+", str(mount.path / "big")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    lines = [ln.split() for ln in out.splitlines()[1:]]
    assert len(lines) == n
    for fields in lines:
        name, size = fields[-1], int(fields[4])
        assert size == int(name[1:])
        if modes[name] == 0o600:
            assert fields[0] == "-rw-------", fields
        else:
            assert fields[0].startswith("-rw-r--r--") or fields[0].startswith("-rwx"), fields
    time.sleep(0.2)                      # stats of the last responses are recorded after them
    heads = [e[4] for e in emulator.request_log if e[1] in RESOLVING and e[4] != "big/"]
    # every entry's attributes fetched exactly once, whether by stat-ahead or by the stat
    # itself: a stat never duplicates a request already in flight
    assert sorted(heads) == sorted(f"big/{name}" for name in modes)
    gets = [e[4] for e in emulator.request_log if e[1] == "GetObject"]
    assert sorted(gets) == sorted(f"big/{name}" for name in modes if int(name[1:]) >= 64)
    counts = emulator.request_counts
    assert counts["ListObjects"] + counts["ListObjectsV2"] <= 3, counts


def test_stat_after_listing_expired_does_not_relist(make_mount, oss2_bucket, emulator):
    # attr_timeout leaves room for the five stats on a loaded machine: a root listing that
    # expires again between them would be listed twice (seen at 0.5 s and 3 s under load)
    m = make_mount("ttl", extra=["-o", "attr_timeout=8"])
    _seed(oss2_bucket, 40)
    names = sorted(os.listdir(m.path / "big"))
    assert len(names) == 40
    time.sleep(8.5)                      # the listing and every HEAD result have expired
    emulator.reset_stats()
    for name in names[:5]:
        os.stat(m.path / "big" / name)
    counts = emulator.request_counts
    # one listing of the root, to find the directory `big` again; none of `big` itself
    # (its 40 entries are known: each revalidates with its own HEAD)
    assert counts["ListObjects"] + counts["ListObjectsV2"] == 1, counts
    assert counts["HeadObject"] + counts["GetObject"] >= 5, counts


def test_first_stat_fetches_the_next_entries_ahead(mount, oss2_bucket, emulator):
    from tests.mount.conftest import eventually
    _seed(oss2_bucket, 100)
    names = sorted(os.listdir(mount.path / "big"))
    emulator.reset_stats()
    os.stat(mount.path / "big" / names[0])
    wanted = {f"big/{name}" for name in names[1:65]}      # the stat-ahead window (64)

    def fetched() -> bool:
        return wanted <= {e[4] for e in emulator.request_log if e[1] in RESOLVING}
    eventually(fetched, timeout=20)
    heads = {e[4] for e in emulator.request_log if e[1] in RESOLVING}
    assert f"big/{names[70]}" not in heads                 # bounded: not the whole directory


def test_a_long_directory_walk_lists_the_directory_once(make_mount, oss2_bucket, emulator):
    """readdir continuations come from the opendir snapshot, even after the listing expired."""
    m = make_mount("walk", extra=["-o", "attr_timeout=0.2"])
    _seed(oss2_bucket, 1500)
    os.stat(m.path / "big")
    emulator.reset_stats()
    names = []
    with os.scandir(m.path / "big") as it:
        for i, entry in enumerate(it):
            names.append(entry.name)
            if i == 10:
                time.sleep(0.6)          # the listing's lifetime ends in the middle of the walk
    assert len(names) == 1500
    counts = emulator.request_counts
    assert counts["ListObjects"] + counts["ListObjectsV2"] == 2, counts   # 1,500 keys: 2 pages


def test_revalidating_a_path_does_not_list_its_parents(make_mount, oss2_bucket, emulator):
    """After the listings expired, the kernel looks every component of a path up again: a known
    directory is checked with one short request, not with a listing of its whole parent."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: oss2_bucket.put_object(f"wide/f{i:05d}", b""), range(2100)))
    oss2_bucket.put_object("wide/sub/deep/file", b"data")          # implied directories only
    m = make_mount("reval", extra=["-o", "attr_timeout=0.5"])
    target = m.path / "wide" / "sub" / "deep" / "file"
    assert target.read_bytes() == b"data"
    time.sleep(1.2)
    emulator.reset_stats()
    assert os.stat(target).st_size == 4
    counts = emulator.request_counts
    # wide/ alone would take three pages; root, wide/sub/ and wide/sub/deep/ one short request each
    assert counts["ListObjects"] + counts["ListObjectsV2"] <= 3, counts
