"""The write-back journal: kill -9 of the mount, replay at the next mount, quarantine, status.

Every check of "is it in the bucket, intact" goes through oss2's CryptoBucket (RsaProvider with
the SDK test key), i.e. the object is an ordinary SDK-format encrypted object.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mount.conftest import eventually

pytestmark = pytest.mark.mount

MARKER = b"JOURNAL-PLAINTEXT-MARKER"

WRITER = r'''
import hashlib, os, sys
root, logp, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

def content(i):
    size = 1000 + (i * 37799) % 400000
    seed = hashlib.sha256(b"%d" % i).digest()
    return (b"JOURNAL-PLAINTEXT-MARKER" + seed) * (size // 56 + 1)

log = open(logp, "a")
for i in range(count):
    data = content(i)
    with open(os.path.join(root, "f%03d.bin" % i), "wb") as f:
        f.write(data)
        if i % 3 == 0:
            f.flush()
            os.fsync(f.fileno())
    log.write("%d\n" % i)
    log.flush()
    os.fsync(log.fileno())
'''


def content(i: int) -> bytes:
    size = 1000 + (i * 37799) % 400000
    seed = hashlib.sha256(b"%d" % i).digest()
    return (MARKER + seed) * (size // 56 + 1)


def _no_marker_under(root: Path) -> None:
    for d, _, files in os.walk(root):
        for n in files:
            with open(os.path.join(d, n), "rb") as f:
                assert MARKER not in f.read(), f"plaintext in {d}/{n}"


def _start_writer(tmp_path: Path, root: Path, count: int) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    logp = tmp_path / f"written-{root.name}.log"
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(logp), str(count)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, logp


def _done(logp: Path) -> list[int]:
    try:
        return [int(x) for x in logp.read_text().split()]
    except OSError:
        return []


@pytest.mark.parametrize("write_back", ["0", "60"])
def test_kill9_during_many_writes_loses_no_closed_file(make_mount, crypto_bucket, tmp_path,
                                                       write_back):
    m = make_mount("w", extra=["--write-back", write_back])
    writer, logp = _start_writer(tmp_path, m.path, 200)
    try:
        eventually(lambda: len(_done(logp)) >= 12 or writer.poll() is not None, 60)
        m.kill9()                                   # in the middle of the writes
    finally:
        try:
            writer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            writer.kill()
    done = _done(logp)
    assert 12 <= len(done) < 200, "the kill did not land during the writes"
    if write_back != "0":
        # closed, acknowledged, and not in the bucket yet: only the journal has them
        assert not [i for i in done if crypto_bucket.object_exists(f"f{i:03d}.bin")
                    and i % 3], "write-back should have delayed these uploads"
        _no_marker_under(m.cache_dir)
    m.start()                                       # same --cache-dir: replay
    for i in done:                                  # new content at once, from staging
        assert (m.path / f"f{i:03d}.bin").read_bytes() == content(i), i
    m.wait_uploaded()
    for i in done:
        assert crypto_bucket.get_object(f"f{i:03d}.bin").read() == content(i), i
    assert not m.journal_files()
    assert "Traceback" not in m.log()


def test_kill9_in_the_middle_of_a_multipart_upload(make_mount, crypto_bucket, emulator):
    m = make_mount("mp")
    (m.path / "small.txt").write_bytes(b"closed before the crash")
    big = os.urandom(3 << 20)
    emulator.set_faults(latency_ms=120)
    before = emulator.request_counts["UploadPart"]
    writer = subprocess.Popen([sys.executable, "-c",
                               "import sys; open(sys.argv[1], 'wb').write(sys.stdin.buffer.read())",
                               str(m.path / "big.bin")], stdin=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    writer.stdin.write(big)
    writer.stdin.close()                            # the writer closes: the upload starts
    try:
        eventually(lambda: emulator.request_counts["UploadPart"] >= before + 4, 60)
        m.kill9()
    finally:
        writer.wait(timeout=30)
    emulator.set_faults(latency_ms=0)
    assert not crypto_bucket.object_exists("big.bin"), "the kill came too late"
    m.start()
    assert (m.path / "big.bin").read_bytes() == big
    m.wait_uploaded()
    assert crypto_bucket.get_object("big.bin").read() == big
    assert crypto_bucket.get_object("small.txt").read() == b"closed before the crash"


def test_write_back_delays_then_replays_after_kill9(make_mount, crypto_bucket, oss2_bucket):
    crypto_bucket.put_object("old.bin", b"A" * 300_000)
    m = make_mount("wb", extra=["--write-back", "60"])
    (m.path / "new.txt").write_bytes(MARKER + b" new file")
    with open(m.path / "old.bin", "r+b") as f:      # partial rewrite of an existing object
        f.seek(1000)
        f.write(MARKER)
    (m.path / "d").mkdir()
    (m.path / "d" / "deep.txt").write_bytes(b"deep " + MARKER)
    state = m.state()
    assert state["write_back"] == 60
    eventually(lambda: {p["path"] for p in m.state()["pending"]} >=
               {"new.txt", "old.bin", "d/deep.txt"})
    assert not crypto_bucket.object_exists("new.txt")
    assert crypto_bucket.get_object("old.bin").read() == b"A" * 300_000
    status = m.cli("status", str(m.path))
    assert status.returncode == 0, status.stderr
    assert "pending uploads: 3" in status.stdout and "new.txt" in status.stdout
    # the journal is durable and holds no plaintext and no raw data key
    journals = m.journal_files()
    assert len(journals) == 3
    for j in journals:
        entry = json.loads(j.read_bytes())
        assert entry["committed"] and entry["crypto_headers"]
        assert "x-oss-meta-client-side-encryption-key" in entry["crypto_headers"]
    _no_marker_under(m.cache_dir)
    m.kill9()
    m.start()
    expected_old = bytearray(b"A" * 300_000)
    expected_old[1000:1000 + len(MARKER)] = MARKER
    assert (m.path / "new.txt").read_bytes() == MARKER + b" new file"
    assert (m.path / "old.bin").read_bytes() == bytes(expected_old)
    m.wait_uploaded()
    assert crypto_bucket.get_object("new.txt").read() == MARKER + b" new file"
    assert crypto_bucket.get_object("old.bin").read() == bytes(expected_old)
    assert crypto_bucket.get_object("d/deep.txt").read() == b"deep " + MARKER
    assert MARKER not in oss2_bucket.get_object("new.txt").read()
    log = m.log_path.read_text()
    # lifecycle events are INFO (not warnings), and the mount logs at INFO
    assert re.search(r"^ossencfs: INFO: journal: \d+ pending upload\(s\) replayed", log, re.M), log
    assert re.search(r"^ossencfs: INFO: mounted oss://", log, re.M), log
    assert not re.search(r"WARNING: (mounted|unmounted|journal: \d+ pending upload\(s\) replayed)",
                         log), log


def test_umount_waits_for_pending_uploads_and_no_wait_keeps_them_journaled(
        make_mount, crypto_bucket):
    m = make_mount("um", extra=["--write-back", "3600"])
    (m.path / "one.txt").write_bytes(b"first")
    assert not crypto_bucket.object_exists("one.txt")
    r = m.cli("umount", str(m.path))
    assert r.returncode == 0, r.stderr
    m.proc.wait(timeout=30)
    assert crypto_bucket.get_object("one.txt").read() == b"first"   # umount waited for it
    m.start()
    (m.path / "two.txt").write_bytes(b"second")
    r = m.cli("umount", "--no-wait", str(m.path))
    assert r.returncode == 0, r.stderr
    assert "stay journaled" in r.stderr
    m.proc.wait(timeout=30)
    m.proc = None
    assert not crypto_bucket.object_exists("two.txt")               # not waited for...
    assert len(m.journal_files()) == 1                              # ...but kept
    m.start()
    assert (m.path / "two.txt").read_bytes() == b"second"
    m.wait_uploaded()
    assert crypto_bucket.get_object("two.txt").read() == b"second"
    m.stop()
    r = m.cli("umount", str(m.path))                    # nothing mounted there any more
    assert r.returncode == 1 and r.stderr.strip() == f"ossencfs: error: {m.path}: not mounted", \
        r.stderr


def test_umount_no_wait_does_not_count_a_close_in_flight_as_journaled(make_mount, crypto_bucket,
                                                                       emulator):
    """Without write-back a small file's close uploads from memory: nothing of it is in the
    journal, and ``umount --no-wait`` said it "stays journaled". The mount finishes it before
    the close returns."""
    m = make_mount("umz")
    os.listdir(m.path)
    emulator.set_faults(latency_ms=1500)
    try:
        writer = subprocess.Popen([sys.executable, "-c",
                                   "import sys; open(sys.argv[1], 'wb').write(b'in flight')",
                                   str(m.path / "flying.txt")])
        eventually(lambda: any(p["key"].endswith("flying.txt") for p in m.state()["pending"]),
                   30)
        r = m.cli("umount", "--no-wait", str(m.path))
        assert r.returncode == 0, r.stderr
        assert "stay journaled" not in r.stderr and "1 upload(s) at close" in r.stderr, r.stderr
        assert writer.wait(timeout=60) == 0
    finally:
        emulator.set_faults(latency_ms=0)
    m.proc.wait(timeout=60)
    m.proc = None
    assert crypto_bucket.get_object("flying.txt").read() == b"in flight"
    assert not m.journal_files()


def test_corrupt_and_foreign_entries_are_quarantined_and_reported(make_mount, crypto_bucket):
    other = make_mount("p1", prefix="p1/", extra=["--write-back", "3600"])
    (other.path / "theirs.txt").write_bytes(b"belongs to p1/")
    other.kill9()
    mine = make_mount("p2", prefix="p2/", extra=["--write-back", "3600"], start=False)
    mine.cache_dir = other.cache_dir                # one cache root, two mount ids
    mine.start()
    (mine.path / "ok.txt").write_bytes(b"fine")
    mine.kill9()
    staging = [d / "staging" for d in other.cache_dir.iterdir() if (d / "staging").is_dir()]
    p1_dir = next(d for d in staging if any(j.read_bytes().count(b'"p1/"') for j in d.glob("*.json")))
    p2_dir = next(d for d in staging if d != p1_dir)
    foreign = next(p1_dir.glob("*.json"))
    ident = foreign.stem
    (p2_dir / foreign.name).write_bytes(foreign.read_bytes())       # a journal of p1/ in p2/'s
    (p2_dir / (ident + ".data")).write_bytes((p1_dir / (ident + ".data")).read_bytes())
    (p2_dir / "0bad.json").write_bytes(b'{"format": "ossencfs-journal", "version": 2, "tru')
    (p2_dir / "0bad.data").write_bytes(b"\0" * 10)
    ok = next(j for j in p2_dir.glob("*.json") if j.stem not in (ident, "0bad"))
    tampered = json.loads(ok.read_bytes())
    mine.start()
    assert (mine.path / "ok.txt").read_bytes() == b"fine"            # the good entry replays
    r = mine.cli("status", str(mine.path))
    assert r.returncode == 0, r.stderr
    assert "quarantined journal entries: 2" in r.stdout, r.stdout
    assert "foreign entry" in r.stdout and "corrupt entry" in r.stdout
    assert "journal of another mount" in r.stdout                    # p1/'s own, untouched
    assert "quarantined" in mine.log()
    qdir = p2_dir.parent / "quarantine"
    kept = sorted(p.name for p in qdir.rglob("*") if p.is_file())
    assert "0bad.json" in kept and f"{ident}.json" in kept and f"{ident}.data" in kept
    assert tampered["key"] == "p2/ok.txt"
    mine.wait_uploaded()
    assert crypto_bucket.get_object("p2/ok.txt").read() == b"fine"
    assert not crypto_bucket.object_exists("p2/theirs.txt")
    other.start()                                    # p1/ still replays its own entry
    other.wait_uploaded()
    assert crypto_bucket.get_object("p1/theirs.txt").read() == b"belongs to p1/"
    r = mine.cli("status", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["mounts"]


def test_tampered_entry_is_quarantined(make_mount, crypto_bucket):
    m = make_mount("t", extra=["--write-back", "3600"])
    (m.path / "x.txt").write_bytes(b"original")
    m.kill9()
    [j] = m.journal_files()
    entry = json.loads(j.read_bytes())
    entry["key"] = "elsewhere.txt"                  # checksum no longer matches
    j.write_text(json.dumps(entry))
    m.start()
    r = m.cli("status", str(m.path))
    assert "checksum mismatch" in r.stdout, r.stdout
    assert not (m.path / "x.txt").exists()
    time.sleep(0.5)
    assert not crypto_bucket.object_exists("elsewhere.txt")
