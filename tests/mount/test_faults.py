"""Emulator faults (503s, dropped connections, latency, a dead service) lose nothing."""
from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from tests.mount.conftest import eventually

pytestmark = pytest.mark.mount


def _tree(root: Path, seed: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    files: dict[str, bytes] = {}
    for d in ("", "a", "a/b", "c"):
        (root / d).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            size = rnd.choice([0, 10, 4096, 70_000, 300_000])   # 300 KB: multipart
            data = rnd.randbytes(size)
            rel = f"{d}/f{i}.bin" if d else f"f{i}.bin"
            (root / rel).write_bytes(data)
            files[rel] = data
    return files


@pytest.mark.parametrize("write_back", ["0", "1"])
def test_cp_r_under_faults_loses_nothing(make_mount, crypto_bucket, emulator, tmp_path,
                                         write_back):
    src = tmp_path / "src"
    files = _tree(src, int(write_back) + 7)
    m = make_mount("f", extra=["--write-back", write_back, "--retries", "8"])
    emulator.set_faults(fail_rate=0.2, drop_rate=0.1, latency_ms=5)
    try:
        m.run("cp", "-r", str(src), str(m.path / "tree"), timeout=240)
        if write_back != "0":
            m.wait_uploaded(timeout=120)           # background retries, under faults
    finally:
        emulator.set_faults(fail_rate=0.0, drop_rate=0.0, latency_ms=0)
    m.wait_uploaded(timeout=120)
    for rel, data in files.items():
        assert crypto_bucket.get_object(f"tree/{rel}").read() == data, rel
    m.remount()
    for rel, data in files.items():
        assert (m.path / "tree" / rel).read_bytes() == data, rel
    assert not m.journal_files()


def test_offline_cached_reads_staged_writes_then_recovery(make_mount, crypto_bucket, emulator):
    m = make_mount("off", extra=["--write-back", "1", "-o", "attr_timeout=0.5"])
    blob = os.urandom(400_000)
    (m.path / "cached.bin").write_bytes(blob)
    m.remount()                                     # drop the kernel's page cache
    assert (m.path / "cached.bin").read_bytes() == blob      # now in the block cache
    assert os.listdir(m.path) == ["cached.bin"]
    emulator.set_faults(fail_rate=1.0)              # OSS is down
    try:
        import time
        time.sleep(1.2)                             # attributes and listings expire
        assert (m.path / "cached.bin").read_bytes() == blob  # cached data stays readable
        assert os.listdir(m.path) == ["cached.bin"]
        for i in range(5):
            (m.path / f"offline{i}.txt").write_bytes(b"written offline %d" % i)
        with pytest.raises(OSError) as ei:          # fsync waits for the bucket: fails now
            with open(m.path / "offline0.txt", "r+b") as f:
                os.fsync(f.fileno())
        assert ei.value.errno == errno.EIO

        def retrying() -> bool:
            st = m.state()
            return len(st["pending"]) == 5 and all(p["attempts"] >= 1 and p["last_error"]
                                                   for p in st["pending"])
        eventually(retrying, 30)
        r = m.cli("status", str(m.path))
        assert "pending uploads: 5" in r.stdout and "503" in r.stdout, r.stdout
        for i in range(5):
            assert (m.path / f"offline{i}.txt").read_bytes() == b"written offline %d" % i
    finally:
        emulator.set_faults(fail_rate=0.0)
    m.wait_uploaded(timeout=90)                     # backoff is capped; nothing dropped
    for i in range(5):
        assert crypto_bucket.get_object(f"offline{i}.txt").read() == b"written offline %d" % i
    assert "retrying" in m.log()


def test_kms_outage_is_eio_once_per_read_and_reads_recover(make_mount, kms_server):
    """Issue 13 item 7: with KMS down, reading a KMS object answers EIO (an outage is not a
    permission problem) after one bounded wait, the log names the object, and once KMS is back
    the same file reads again."""
    from tests.conftest import KMS_REGION
    cmk = kms_server.create_key(description="outage")
    m = make_mount("kmsout", keys=["--kms-key", cmk, "--kms-region", KMS_REGION,
                                   "--kms-endpoint", kms_server.endpoint])
    data = os.urandom(50_000)
    (m.path / "k.bin").write_bytes(data)
    m.wait_uploaded(timeout=60)
    m.remount()                                     # no data key in memory any more
    kms_server.stop()                               # connections refused
    try:
        for _ in range(3):                          # a burst of reads: EIO every time
            with pytest.raises(OSError) as ei:
                (m.path / "k.bin").read_bytes()
            assert ei.value.errno == errno.EIO
    finally:
        kms_server.start()
    errors = [line for line in m.log_path.read_text(errors="replace").splitlines()
              if "ERROR" in line and "k.bin" in line]
    assert len(errors) == 1, errors                 # one wait, one line: the burst repeats neither
    assert "unreachable" in errors[0] and "Connection refused" in errors[0]

    def readable() -> bool:
        try:
            return (m.path / "k.bin").read_bytes() == data
        except OSError:
            return False
    eventually(readable, timeout=30)


def test_a_create_that_gets_no_data_key_leaves_no_file_behind(make_mount, kms_server):
    """KMS down: creating a file fails with EIO and leaves no name behind (a 0-byte file was
    listed and stat'ed until the next mount); once KMS is back the name can be created."""
    from tests.conftest import KMS_REGION
    cmk = kms_server.create_key(description="create outage")
    m = make_mount("kmscreate", keys=["--kms-key", cmk, "--kms-region", KMS_REGION,
                                      "--kms-endpoint", kms_server.endpoint])
    os.listdir(m.path)
    kms_server.stop()                               # connections refused
    try:
        with pytest.raises(OSError) as ei:
            (m.path / "new.txt").write_bytes(b"no key for me")
        assert ei.value.errno == errno.EIO
        assert not (m.path / "new.txt").exists()
        assert "new.txt" not in os.listdir(m.path)
    finally:
        kms_server.start()

    def created() -> bool:
        try:
            (m.path / "new.txt").write_bytes(b"now with a key")
            return True
        except OSError:
            return False
    eventually(created, timeout=30)
    assert os.listdir(m.path) == ["new.txt"]
