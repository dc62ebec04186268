"""Regressions from the filesystem audit: each test reproduces one finding end to end
(real FUSE mount, real HTTP to the emulator, oss2 CryptoBucket as the oracle)."""
from __future__ import annotations

import glob
import json
import os
import time

import oss2

from tests.mount.conftest import eventually


def _keys(bucket: oss2.Bucket) -> list[str]:
    return sorted(o.key for o in oss2.ObjectIterator(bucket))


def _crash_and_remount(m, fd: int) -> None:
    """kill -9 the mount while ``fd`` is open on it, then mount again and let replay finish."""
    m.kill9()
    try:
        os.close(fd)
    except OSError:
        pass
    m.start()
    m.wait_uploaded()


def _quarantined(m) -> list[str]:
    return [json.load(open(x))["reason"] for x in
            glob.glob(str(m.base_dir() / "quarantine" / "*" / "reason.json"))]


# -- finding 1: rename of a not-yet-uploaded file over an existing object ----------------------
def test_writeback_rename_temp_over_existing(make_mount, crypto_bucket):
    """Editor pattern under --write-back: write a temp file, close, rename it over the target
    before the temp was uploaded: the target's object must get the new content."""
    m = make_mount("wbren", extra=["--write-back", "1"])
    p = m.path
    (p / "f").write_bytes(b"OLD" * 10)
    m.wait_uploaded()
    eventually(lambda: _keys(crypto_bucket) == ["f"])
    (p / ".f.tmp").write_bytes(b"NEW" * 10)
    os.rename(p / ".f.tmp", p / "f")
    m.wait_uploaded()
    eventually(lambda: crypto_bucket.get_object("f").read() == b"NEW" * 10, 20)
    assert _keys(crypto_bucket) == ["f"], m.log()
    assert (p / "f").read_bytes() == b"NEW" * 10


def test_writeback_rsync_over_existing(make_mount, crypto_bucket, tmp_path):
    """rsync -a writes .NAME.XXXXXX and renames it over NAME."""
    m = make_mount("wbrsync", extra=["--write-back", "1"])
    p = m.path
    (p / "d").mkdir()
    (p / "d" / "a").write_bytes(b"old a" * 100)
    (p / "d" / "b").write_bytes(b"old b" * 100)
    m.wait_uploaded()
    eventually(lambda: _keys(crypto_bucket) == ["d/", "d/a", "d/b"])
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"new content of a" * 50)
    (src / "b").write_bytes(b"new content of b" * 70)
    (src / "c").write_bytes(b"c" * 10)
    m.run("rsync", "-a", "--no-owner", "--no-group", f"{src}/", f"{p}/d/", cwd=tmp_path)
    m.wait_uploaded()
    for n in "abc":
        eventually(lambda n=n: crypto_bucket.get_object(f"d/{n}").read() ==
                   (src / n).read_bytes(), 20)
    assert _keys(crypto_bucket) == ["d/", "d/a", "d/b", "d/c"], m.log()


def test_rename_open_new_file_over_existing(make_mount, crypto_bucket):
    """Without write-back: a new file renamed over an existing one while still open for
    writing, closed afterwards; the close upload must replace the target."""
    m = make_mount("ren")
    p = m.path
    (p / "t").write_bytes(b"OLD" * 10)
    fd = os.open(p / "t.new", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"NEW" * 20)
        os.rename(p / "t.new", p / "t")
    finally:
        os.close(fd)
    assert crypto_bucket.get_object("t").read() == b"NEW" * 20
    assert _keys(crypto_bucket) == ["t"], m.log()


# -- finding 3: stale journal entry after an upload of a still-open file -------------------------
def test_fsync_keep_open_then_crash(make_mount, crypto_bucket):
    m = make_mount("stale")
    p = m.path
    (p / "db").write_bytes(b"A" * 200000)
    fd = os.open(p / "db", os.O_RDWR)
    os.pwrite(fd, b"B" * 100, 0)
    os.fsync(fd)                        # in the bucket now; the file stays open
    want = b"B" * 100 + b"A" * (200000 - 100)
    assert crypto_bucket.get_object("db").read() == want
    _crash_and_remount(m, fd)
    assert not _quarantined(m), m.log()
    assert _keys(crypto_bucket) == ["db"], m.log()
    assert crypto_bucket.get_object("db").read() == want
    assert (p / "db").read_bytes() == want


# -- finding 2: a write after an upload whose reply was lost ------------------------------------
def test_write_after_lost_reply(make_mount, crypto_bucket, emulator):
    m = make_mount("lost", extra=["--timeout", "1", "--retries", "0"])
    p = m.path
    fd = os.open(p / "n", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"A" * 1000)
        emulator.set_faults(latency_ms=1800)   # the PUT lands, its reply comes too late
        try:
            os.fsync(fd)
        except OSError:
            pass
        eventually(lambda: "n" in _keys(crypto_bucket))
        time.sleep(1.0)                        # let the late reply drain
        emulator.set_faults(latency_ms=0)
        os.pwrite(fd, b"B" * 1000, 0)
        os.fsync(fd)
    finally:
        emulator.set_faults(latency_ms=0)
        os.close(fd)
    m.wait_uploaded()
    assert crypto_bucket.get_object("n").read() == b"B" * 1000, m.log()
    assert _keys(crypto_bucket) == ["n"], m.log()


# -- finding 5: a reader's close must not upload a writer's file ---------------------------------
def test_reader_close_does_not_upload(make_mount, crypto_bucket):
    m = make_mount("ro")
    p = m.path
    w = os.open(p / "log", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        base = m.state()["uploads_done"]
        for _ in range(3):
            os.write(w, b"x" * 100000)
            r = os.open(p / "log", os.O_RDONLY)
            os.read(r, 10)
            os.close(r)
        assert "log" not in _keys(crypto_bucket)
        assert m.state()["uploads_done"] == base
    finally:
        os.close(w)
    assert crypto_bucket.get_object("log").read() == b"x" * 300000


# -- finding 4: an unlinked open file written to must not leak its staging -----------------------
def test_unlinked_open_file_frees_staging(make_mount):
    m = make_mount("ul")
    p = m.path
    fd = os.open(p / "g", os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"x" * 100000)
    os.unlink(p / "g")
    os.pwrite(fd, b"y" * 300000, 0)
    assert os.pread(fd, 4, 0) == b"yyyy"
    os.close(fd)
    pid = m.proc.pid

    def freed() -> bool:
        links = []
        for f in glob.glob(f"/proc/{pid}/fd/*"):
            try:
                links.append(os.readlink(f))
            except OSError:
                pass
        return m.state()["cache"]["staged_bytes"] == 0 and \
            not [x for x in links if ".data" in x]
    eventually(freed)
    assert not m.journal_files()


# -- finding 9: rename over an open dirty target drops the target's journal entry -----------------
def test_rename_over_open_dirty_target_then_crash(make_mount, crypto_bucket):
    m = make_mount("r9", extra=["--write-back", "30"])
    p = m.path
    (p / "src").write_bytes(b"S" * 50)
    fd0 = os.open(p / "src", os.O_RDONLY)
    os.fsync(fd0)                            # src is in the bucket now
    os.close(fd0)
    assert crypto_bucket.get_object("src").read() == b"S" * 50
    (p / "dst").write_bytes(b"D" * 50)       # journaled, upload 30 s later
    fd = os.open(p / "dst", os.O_RDONLY)     # still open when replaced
    os.rename(p / "src", p / "dst")
    assert crypto_bucket.get_object("dst").read() == b"S" * 50
    _crash_and_remount(m, fd)
    assert _keys(crypto_bucket) == ["dst"], m.log()
    assert crypto_bucket.get_object("dst").read() == b"S" * 50
