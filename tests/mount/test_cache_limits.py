"""Cache limits: staged (unsent) data is never evicted; at the limit -- ours or the disk's --
writers get ENOSPC, the mount keeps working, and it recovers once space frees."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from tests.mount.conftest import eventually, fill_disk, tmpfs

pytestmark = pytest.mark.mount

MiB = 1 << 20


def _write(path: Path, data: bytes) -> int:
    """0, or the errno of the write/close that failed."""
    try:
        with open(path, "wb") as f:
            f.write(data)
        return 0
    except OSError as exc:
        return exc.errno or -1


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    with tmpfs(tmp_path / "tmpfs", "8m") as d:
        yield d


def test_full_cache_disk_gives_enospc_and_recovers(small_tmpfs, make_mount, crypto_bucket):
    # (small_tmpfs first: it is torn down after the mount)
    m = make_mount("full", extra=["--write-back", "3600"], start=False)
    m.cache_dir = small_tmpfs / "cache"
    m.start()
    written: dict[str, bytes] = {}
    failure = 0
    for i in range(12):                                 # 12 MiB into an 8 MiB disk
        data = os.urandom(MiB)
        failure = _write(m.path / f"f{i}.bin", data)
        if failure:
            break
        written[f"f{i}.bin"] = data
    assert failure == errno.ENOSPC, failure
    assert len(written) >= 3
    assert sorted(os.listdir(m.path))                   # the mount is alive
    for name, data in written.items():                  # and nothing staged was damaged
        assert (m.path / name).read_bytes() == data
    os.unlink(m.path / f"f{len(written)}.bin")          # the partial one
    victim = next(iter(written))
    os.unlink(m.path / victim)                          # deleting frees its staging
    del written[victim]
    data = os.urandom(MiB // 2)
    assert _write(m.path / "after-delete.bin", data) == 0
    written["after-delete.bin"] = data
    name = next(iter(written))
    with open(m.path / name, "rb") as f:                # uploading frees it too
        os.fsync(f.fileno())
    assert crypto_bucket.get_object(name).read() == written[name]
    data = os.urandom(MiB // 2)
    assert _write(m.path / "after-upload.bin", data) == 0
    written["after-upload.bin"] = data
    r = m.cli("umount", str(m.path))
    assert r.returncode == 0, r.stderr
    m.proc.wait(timeout=30)
    m.proc = None
    for name, data in written.items():
        assert crypto_bucket.get_object(name).read() == data, name
    assert "Traceback" not in m.log()


def test_cache_size_counts_staged_data_and_evicts_only_clean_blocks(make_mount, crypto_bucket):
    remote = os.urandom(3 * MiB // 2)
    crypto_bucket.put_object("remote.bin", remote)
    m = make_mount("cap", extra=["--write-back", "3600", "--cache-size", "2M"])
    assert (m.path / "remote.bin").read_bytes() == remote
    eventually(lambda: m.state()["cache"]["block_bytes"] >= MiB)       # clean blocks cached
    first = os.urandom(3 * MiB // 2)
    assert _write(m.path / "first.bin", first) == 0     # room made by evicting clean blocks
    eventually(lambda: (lambda c: c["staged_bytes"] >= len(first)
                        and c["block_bytes"] + c["staged_bytes"] <= 2 * MiB)(m.state()["cache"]))
    assert _write(m.path / "second.bin", os.urandom(MiB)) == errno.ENOSPC
    assert (m.path / "first.bin").read_bytes() == first                # unsent data intact
    assert (m.path / "remote.bin").read_bytes() == remote              # still readable
    r = m.cli("status", str(m.path))
    assert "staged of 2.0 MiB limit" in r.stdout, r.stdout
    assert re.search(r"blocks on disk, [\d.]+ \w+ in memory", r.stdout), r.stdout
    assert 0 <= m.state()["cache"]["memory_bytes"] <= 64 * MiB
    os.unlink(m.path / "second.bin")
    with open(m.path / "first.bin", "rb") as f:
        os.fsync(f.fileno())                            # uploaded: its staging is freed
    second = os.urandom(MiB)
    assert _write(m.path / "second.bin", second) == 0
    m.stop()                                            # unmount uploads the rest
    assert crypto_bucket.get_object("first.bin").read() == first
    assert crypto_bucket.get_object("second.bin").read() == second


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_reads_leave_a_small_cache_disk_usable(small_tmpfs, make_mount, crypto_bucket):
    """Issue 13 item 2: with the default --cache-size (1G) on an 8 MiB cache file system,
    reading a 12 MiB file must not fill the disk with clean blocks: writes still succeed
    (clean blocks make room), also after a remount, and other users of that file system
    keep a reserve."""
    remote = os.urandom(12 * MiB)
    crypto_bucket.put_object("big.bin", remote)
    m = make_mount("disk", extra=["--write-back", "3600"], start=False)
    m.cache_dir = small_tmpfs / "cache"
    m.start()
    assert (m.path / "big.bin").read_bytes() == remote
    eventually(lambda: m.state()["cache"]["block_bytes"] >= 2 * MiB)   # it does cache
    time_to_settle = m.state()["updated"]
    eventually(lambda: m.state()["updated"] > time_to_settle + 1.0)
    assert _free(small_tmpfs) >= 512 * 1024, _free(small_tmpfs)      # a reserve is kept
    for rnd in range(2):                                # also after a remount
        data = os.urandom(3 * MiB)
        assert _write(m.path / f"w{rnd}.bin", data) == 0
        assert (m.path / f"w{rnd}.bin").read_bytes() == data
        with open(m.path / f"w{rnd}.bin", "rb") as f:
            os.fsync(f.fileno())                        # uploaded: its staging is freed
        assert crypto_bucket.get_object(f"w{rnd}.bin").read() == data
        m.remount()
        assert (m.path / "big.bin").read_bytes() == remote
    assert _free(small_tmpfs) >= 512 * 1024
    hog = small_tmpfs / "other-user.bin"                # another process fills the disk
    fill_disk(hog)
    data = os.urandom(MiB)                              # clean blocks go first
    assert _write(m.path / "after-hog.bin", data) == 0
    os.unlink(hog)
    m.stop()
    assert crypto_bucket.get_object("after-hog.bin").read() == data


def test_close_on_a_full_cache_disk_uploads_at_once(small_tmpfs, make_mount, crypto_bucket):
    """Write-back mode, cache disk full (another process): the journal entry cannot be
    written, so close uploads at once -- and that upload needs no journal write either."""
    m = make_mount("nojournal", extra=["--write-back", "3600"], start=False)
    m.cache_dir = small_tmpfs / "cache"
    m.start()
    hog = small_tmpfs / "other-user.bin"
    fill_disk(hog)
    try:
        data = os.urandom(20_000)                       # kept in memory until the close
        assert _write(m.path / "small.bin", data) == 0
        assert crypto_bucket.get_object("small.bin").read() == data
    finally:
        os.unlink(hog)


@pytest.mark.log_allow(r"cannot journal|No space left|retrying|upload failed|503|flush|release",
                       reason="OSS fails and the cache disk is full on purpose")
def test_a_failed_close_on_a_full_cache_disk_is_kept_in_memory_and_retried(
        small_tmpfs, make_mount, crypto_bucket, emulator):
    """Without write-back, a small file's failed upload at close is journaled; when the
    cache disk is full it cannot be. The retries must not claim the journal keeps it (the
    log said "data kept in the journal", and ``umount -z`` counted it as journaled), and
    they must still reach OSS (each failed at its journal write first, never sending)."""
    m = make_mount("memonly", extra=["--retries", "0"], start=False)
    m.cache_dir = small_tmpfs / "cache"
    m.start()
    os.listdir(m.path)                                  # the listing: create needs no request
    hog = small_tmpfs / "other-user.bin"
    fill_disk(hog)
    data = os.urandom(3000)
    try:
        emulator.set_faults(fail_rate=1.0)
        assert _write(m.path / "kept.bin", data) == errno.EIO
        eventually(lambda: "kept in memory only" in m.log(), 30)
        [pending] = m.state()["pending"]
        assert pending["key"].endswith("kept.bin") and pending["journaled"] is False, pending
        eventually(lambda: "in memory only" in m.cli("status", str(m.path)).stdout, 10)
        assert "data kept in the journal" not in m.log()
        emulator.set_faults(fail_rate=0.0)      # OSS is back, the disk still full: the
        m.wait_uploaded(timeout=60)             # retries send it without a journal entry
        assert crypto_bucket.get_object("kept.bin").read() == data
    finally:
        emulator.set_faults(fail_rate=0.0)
        os.unlink(hog)
