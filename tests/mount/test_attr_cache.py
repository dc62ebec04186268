"""`ls -l` without a request per file: the persistent attribute cache and `-o listing_attrs`."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import time

import pytest

from tests.conftest import reupload_with_meta

pytestmark = pytest.mark.mount


def _ls(path) -> dict[str, list[str]]:
    out = subprocess.run(["ls", "-l", "--time-style=+%s", str(path)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return {f[6]: f for f in (ln.split() for ln in out.splitlines()[1:])}


def _heads(emulator, prefix: str) -> list[str]:
    time.sleep(0.2)                     # stats of the last responses are recorded after them
    return [e[4] for e in emulator.request_log if e[1] == "HeadObject" and e[4].startswith(prefix)]


def _populate(m, n: int = 30) -> None:
    d = m.path / "d"
    d.mkdir()
    for i in range(n):
        p = d / f"f{i:03d}"
        p.write_bytes(b"y" * i)
        if i % 3 == 0:
            os.chmod(p, 0o751)
        os.utime(p, (1_600_000_000 + i, 1_600_000_000 + i))
    os.symlink("f001", d / "link")
    m.wait_uploaded()


def test_remount_lists_with_no_head_per_file(make_mount, emulator):
    m = make_mount("a")
    _populate(m)
    before = _ls(m.path / "d")
    m.remount()                          # new process, same --cache-dir: nothing in memory
    emulator.reset_stats()
    after = _ls(m.path / "d")
    assert after == before
    assert after["f003"][0] == "-rwxr-x--x" and after["f004"][0] == "-rw-r--r--"
    assert after["f007"][5] == str(1_600_000_007)
    assert after["link"][0].startswith("l") and after["link"][-1] == "f001"
    assert _heads(emulator, "d/f") == []
    # open still fetches what it needs (the wrapped data key) and reads the right bytes
    assert (m.path / "d" / "f005").read_bytes() == b"y" * 5


def test_a_change_by_another_client_is_seen_after_remount(make_mount, emulator, oss2_bucket):
    m = make_mount("a")
    _populate(m, 6)
    m.stop()
    time.sleep(2.1)                      # Last-Modified has whole seconds, and the record of
                                         # our own write takes one up to 1 s after its reply
    head = oss2_bucket.head_object("d/f002").headers
    headers = {k: v for k, v in head.items() if k.lower().startswith("x-oss-meta-")}
    headers["x-oss-meta-mode"] = str(stat.S_IFREG | 0o600)
    reupload_with_meta(oss2_bucket, "d/f002", headers)    # same bytes: the ETag stays
    oss2_bucket.put_object("d/f004", b"other content")          # plain object, no POSIX meta
    m.start()
    emulator.reset_stats()
    got = _ls(m.path / "d")
    assert got["f002"][0] == "-rw-------"
    assert got["f004"][0] == "-rw-r--r--" and got["f004"][4] == str(len(b"other content"))
    assert got["f003"][0] == "-rwxr-x--x"
    assert sorted(_heads(emulator, "d/f")) == ["d/f002", "d/f004"]


def test_listing_attrs_costs_no_head_on_a_cold_cache(make_mount, emulator, oss2_bucket):
    for i in range(20):
        oss2_bucket.put_object(f"cold/g{i:02d}", b"z" * i)
    m = make_mount("cold", extra=["-o", "listing_attrs"])
    emulator.reset_stats()
    got = _ls(m.path / "cold")
    assert len(got) == 20
    assert all(f[0] == "-rw-r--r--" and f[4] == str(int(n[1:])) for n, f in got.items())
    assert _heads(emulator, "cold/g") == []
    assert (m.path / "cold" / "g07").read_bytes() == b"z" * 7


def test_a_damaged_cache_file_costs_heads_not_the_mount(make_mount, emulator):
    m = make_mount("a")
    _populate(m, 5)
    m.stop()
    db = m.base_dir() / "attrs.sqlite"
    assert db.exists()
    for suffix in ("-wal", "-shm"):
        (m.base_dir() / f"attrs.sqlite{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"not a database" * 100)
    m.start()
    got = _ls(m.path / "d")
    assert got["f003"][0] == "-rwxr-x--x"
    assert "damaged" in m.log()


def test_no_extended_attributes(mount):
    p = mount.path / "x"
    p.write_bytes(b"1")
    for call in (lambda: os.setxattr(p, "user.a", b"1"), lambda: os.getxattr(p, "user.a"),
                 lambda: os.listxattr(p)):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EOPNOTSUPP


def test_records_of_deleted_objects_are_pruned_by_a_listing(make_mount, oss2_bucket):
    import sqlite3
    m = make_mount("a")
    _populate(m, 4)
    m.stop()
    oss2_bucket.delete_object("d/f001")                          # by another client
    m.start()
    assert sorted(os.listdir(m.path / "d")) == ["f000", "f002", "f003", "link"]
    m.stop()                                                     # commits the cache
    db = sqlite3.connect(m.base_dir() / "attrs.sqlite")
    keys = sorted(k for (k,) in db.execute("SELECT key FROM attrs"))
    db.close()
    assert keys == ["d/f000", "d/f002", "d/f003", "d/link"]
