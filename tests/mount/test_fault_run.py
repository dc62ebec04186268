"""The fault run (issue 13, "what must hold afterwards"): a tree copy through a KMS-keyed
mount with a KMS outage in the middle, a cache file system filled by another process, 20 %
5xx from OSS, and a SIGTERM while the unmount drains. Nothing acknowledged is lost (every file
whose write and close succeeded is in the bucket, byte for byte, after the next start), and
every failure a writer saw is in the log, once, under the file's own name."""
from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import oss2
import pytest

from tests.conftest import AK, BUCKET, KMS_REGION, SDK_FIXTURES, SK
from tests.mount.conftest import _is_mounted, eventually, fill_disk, tmpfs

pytestmark = pytest.mark.mount


@pytest.fixture
def small_cache_fs(tmp_path: Path):
    with tmpfs(tmp_path / "cachefs", "16m") as d:
        yield d


def _copy_one(src: bytes, dst: Path) -> str | None:
    """cp of one file: None, or the error the writer saw (acknowledged = write+close ok)."""
    r = subprocess.run(["dd", f"of={dst}", "bs=128k", "status=none"], input=src,
                       capture_output=True, timeout=300)
    return None if r.returncode == 0 else r.stderr.decode(errors="replace").strip() or "failed"


@pytest.mark.log_allow(r"KMS|kms|Key|key|No space left|cannot journal|retrying",
                       reason="the outage, the full disk and the 5xx this run provokes")
def test_fault_run_loses_nothing_acknowledged(small_cache_fs, make_mount, kms_server, emulator):
    cmk = kms_server.create_key(description="fault run")
    m = make_mount("run", start=False, keys=[
        "--kms-key", cmk, "--kms-region", KMS_REGION, "--kms-endpoint", kms_server.endpoint,
        "--rsa-key", str(SDK_FIXTURES / "rsa_test_private.pem")],
        extra=["--write-back", "3600", "--retries", "8"])
    m.cache_dir = small_cache_fs / "cache"
    m.start()
    rnd = random.Random(13)
    files = {f"tree/d{i % 3}/f{i:02d}.bin": rnd.randbytes(rnd.choice([0, 100, 5000, 70_000,
                                                                      300_000]))
             for i in range(32)}
    for d in range(3):
        (m.path / "tree" / f"d{d}").mkdir(parents=True, exist_ok=True)
    acknowledged: dict[str, bytes] = {}
    refused: dict[str, str] = {}
    hog = small_cache_fs / "other-process.bin"
    code = 0
    felt: int | None = None                 # the first file the KMS outage refused
    disk_at: int | None = None
    emulator.set_faults(fail_rate=0.2)
    try:
        for i, (rel, data) in enumerate(files.items()):
            if i == 8:
                # KMS outage: the keys made ahead before it (``fs.keypool``, at most 8) carry
                # a few files through, then a writer feels it ...
                kms_server.set_faults(fail_rate=1.0)
            if felt is not None and i == felt + 1:
                kms_server.set_faults(fail_rate=0.0)            # ... over (the mount
                # remembers an outage briefly: new files fail until it tried KMS again)
                eventually(lambda: _copy_one(b"probe", m.path / "probe.txt") is None, 60)
                acknowledged["probe.txt"] = b"probe"
                disk_at = i + 2
            if i == disk_at:
                fill_disk(hog)                                       # the cache disk fills
            if disk_at is not None and i == disk_at + 3:
                os.unlink(hog)
            err = _copy_one(data, m.path / rel)
            if err is None:
                acknowledged[rel] = data
            else:
                refused[rel] = err
                felt = i if felt is None else felt
        assert all(rel in acknowledged for rel in list(files)[:8]), refused
        assert felt is not None and 8 <= felt <= 16, refused    # the outage was felt
        assert disk_at is not None and disk_at + 3 < len(files)
        # unmount while many uploads are pending, and SIGTERM the process while it drains
        emulator.set_faults(latency_ms=30)
        proc = m.proc
        subprocess.run(["fusermount3", "-u", str(m.path)], check=True, timeout=60)
        eventually(lambda: not _is_mounted(str(m.path)))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        m.proc = None
        assert code in (0, 1), f"mount process ended with {code}:\n{m.log()}"
    finally:
        kms_server.set_faults(fail_rate=0.0)
        emulator.set_faults(fail_rate=0.0, latency_ms=0)
        if hog.exists():
            os.unlink(hog)
    m.start()                                   # the next start uploads what was left
    m.wait_uploaded(timeout=180)
    provider = oss2.AliKMSProvider(AK, SK, KMS_REGION, cmk)       # oss2 is the oracle
    provider.kms_client.add_endpoint(KMS_REGION, "kms", kms_server.endpoint)
    provider.kms_client.proxy = {"http": None, "https": None}
    kms_bucket = oss2.CryptoBucket(oss2.Auth(AK, SK), emulator.endpoint, BUCKET,
                                   crypto_provider=provider)
    for rel, data in acknowledged.items():
        assert kms_bucket.get_object(rel).read() == data, rel
    log = m.log_path.read_text(errors="replace")
    st = m.state()
    assert not st["pending"] and not st["quarantine"], st
    # every failure a writer saw: in the log once, by its name
    counts = {rel: sum(1 for ln in log.splitlines()
                       if "ERROR" in ln and f"oss://{BUCKET}/{rel}:" in ln) for rel in refused}
    assert all(n == 1 for n in counts.values()), counts
