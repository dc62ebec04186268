"""An upload that no retry can mend stops, is reported, and unmount does not wait for it
(issue 13: errors are never retried forever)."""
from __future__ import annotations

import os

import pytest

from tests.conftest import BUCKET

pytestmark = pytest.mark.mount


@pytest.mark.log_allow(r"failed for good", reason="the fault this test provokes")
def test_staging_file_cut_short_is_quarantined_not_retried_forever(make_mount, crypto_bucket):
    m = make_mount("cut", extra=["--write-back", "3600"])
    data = os.urandom(300_000)
    (m.path / "victim.bin").write_bytes(data)           # acknowledged: journaled durably
    (m.path / "fine.bin").write_bytes(b"fine")
    datafiles = [p for p in (m.base_dir() / "staging").glob("*.data") if p.stat().st_size > 1000]
    assert len(datafiles) == 1, datafiles
    os.truncate(datafiles[0], 1000)                     # another process cuts it short
    m.stop()                                            # drains: must not hang
    log = m.log()
    assert crypto_bucket.get_object("fine.bin").read() == b"fine"
    lines = [ln for ln in log.splitlines() if "failed for good" in ln]
    assert len(lines) == 1 and f"oss://{BUCKET}/victim.bin" in lines[0], log
    assert "retrying" not in log, log
    r = m.cli("status", "--cache-dir", str(m.cache_dir))
    assert "quarantined journal entries: 1" in r.stdout and "victim.bin" in r.stdout, r.stdout
    m.start()                                           # the next start still lists it
    r = m.cli("status", str(m.path))
    assert "quarantined journal entries: 1" in r.stdout and "victim.bin" in r.stdout, r.stdout
    assert not crypto_bucket.object_exists("victim.bin")   # never a zero-padded copy
