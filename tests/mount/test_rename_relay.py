"""mv of a file above the CopyObject size limit: its ciphertext relayed through the mount.

Real OSS copies no object above its size limit with CopyObject and no CSE object with
UploadPartCopy (SPEC D.13), so the mount fetches the stored bytes and uploads them again
(``objects.EncryptedObjects.relay``). The fetch is sized for the network, not for the parts:
a 1 GiB object with 200 KiB parts used to cost one GET per part (5,243; ``mv`` took 1,296 s).
The emulator's request counters tell what was sent; oss2's CryptoBucket is the oracle.
"""
from __future__ import annotations

import os

import oss2

from ossencfs.envelope import format as fmt
from ossencfs.relay import RELAY_PIECE

PART = 102400


def _requests(emulator) -> dict[str, int]:
    return dict(emulator.stats["requests"])


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def test_mv_above_the_copy_limit_fetches_large_ranges_and_keeps_the_ciphertext(
        make_mount, crypto_bucket, oss2_bucket, emulator):
    size = 2 * RELAY_PIECE + 12345          # three GETs; 83 parts of 100 KiB
    data = os.urandom(size)
    crypto_bucket.put_object("big.bin", data)
    stored = oss2_bucket.get_object("big.bin")
    body, wrapped = stored.read(), stored.headers[fmt.H_KEY]
    emulator.set_faults(copy_limit=200_000)
    m = make_mount(extra=["--part-size", str(PART), "--multipart-threshold", str(1 << 20),
                          "--copy-limit", "200000"])
    os.stat(m.path / "big.bin")             # first sight (a GET of its first KiB) not counted
    before = _requests(emulator)
    os.rename(m.path / "big.bin", m.path / "moved.bin")
    sent = _delta(before, _requests(emulator))
    parts = -(-size // PART)
    # ranged GETs of RELAY_PIECE bytes (it was one GET per 100 KiB part: 83), every part sent,
    # no CopyObject tried (the mount knows the limit), the source deleted after Complete
    assert sent.get("GetObject") == -(-size // RELAY_PIECE)
    assert sent.get("UploadPart") == parts and sent.get("CompleteMultipartUpload") == 1
    assert "CopyObject" not in sent and "AbortMultipartUpload" not in sent
    assert sent.get("DeleteObject") == 1
    assert {o.key for o in oss2.ObjectIterator(oss2_bucket)} == {"moved.bin"}
    moved = oss2_bucket.get_object("moved.bin")
    assert moved.read() == body and moved.headers[fmt.H_KEY] == wrapped   # relayed, not re-encrypted
    assert moved.headers["x-oss-object-type"] == "Multipart"
    assert crypto_bucket.get_object("moved.bin").read() == data
    assert (m.path / "moved.bin").read_bytes() == data


def test_mv_of_a_plain_object_above_the_copy_limit_copies_in_parts_on_the_server(
        make_mount, oss2_bucket, emulator):
    size = 3 * (1 << 20) + 7
    data = os.urandom(size)
    oss2_bucket.put_object("plain.bin", data, headers={"Content-Type": "application/x-test",
                                                       "x-oss-meta-note": "kept"})
    emulator.set_faults(copy_limit=200_000)
    m = make_mount(extra=["--copy-limit", "200000"])
    before, served = _requests(emulator), emulator.stats["bytes_sent"]
    os.rename(m.path / "plain.bin", m.path / "moved.bin")
    sent = _delta(before, _requests(emulator))
    # OSS allows UploadPartCopy from a plain source (it refuses it only for CSE and
    # appendable ones): the object's bytes do not pass through the mount (at most a small
    # GET: a plain object's first bytes tell whether it is an Encryption SDK object)
    assert sent.get("UploadPartCopy", 0) >= 1 and sent.get("CompleteMultipartUpload") == 1
    assert "UploadPart" not in sent and "CopyObject" not in sent
    assert emulator.stats["bytes_sent"] - served < 64 << 10
    assert {o.key for o in oss2.ObjectIterator(oss2_bucket)} == {"moved.bin"}
    moved = oss2_bucket.get_object("moved.bin")
    assert moved.read() == data
    assert moved.headers["Content-Type"] == "application/x-test"
    assert moved.headers["x-oss-meta-note"] == "kept"
    assert (m.path / "moved.bin").read_bytes() == data


def test_a_failed_relay_leaves_the_source_whole_and_no_upload_behind(
        make_mount, crypto_bucket, oss2_bucket, emulator):
    data = os.urandom(3 * PART + 5)
    crypto_bucket.put_object("big.bin", data)
    emulator.set_faults(copy_limit=200_000)
    m = make_mount(extra=["--part-size", str(PART), "--multipart-threshold", str(PART),
                          "--copy-limit", "200000"])
    emulator.set_faults(deny_writes=True)       # every write refused: 403 AccessDenied
    try:
        os.rename(m.path / "big.bin", m.path / "moved.bin")
    except OSError as exc:
        refused = exc
    else:
        refused = None
    emulator.set_faults(deny_writes=False)
    assert refused is not None
    # copy before delete: the old name keeps its object, the new one has none
    assert {o.key for o in oss2.ObjectIterator(oss2_bucket)} == {"big.bin"}
    assert crypto_bucket.get_object("big.bin").read() == data
    assert not list(oss2.MultipartUploadIterator(oss2_bucket))
    assert (m.path / "big.bin").read_bytes() == data
    assert not (m.path / "moved.bin").exists()


def test_mv_of_a_directory_sends_its_copies_many_at_once(make_mount, crypto_bucket, oss2_bucket, emulator):
    """A CopyObject moves no data through the mount, only OSS's round trip: a directory's
    copies go out as many at once as the store sends requests (``--connections``), not 8
    (a 200-file ``mv`` waited on 25 rounds; issue 17). Each request takes ``latency``
    here, so more than 8 copies finishing within less than ``latency`` of each other proves
    more than 8 were in flight at once (read from the emulator's request log)."""
    n, latency = 40, 0.4
    for i in range(n):
        crypto_bucket.put_object(f"dir/f{i:03d}", b"x" * (i + 1))
    m = make_mount()
    os.stat(m.path / "dir")
    emulator.set_faults(latency_ms=latency * 1000)
    try:
        os.rename(m.path / "dir", m.path / "moved")
    finally:
        emulator.set_faults(latency_ms=0)
    done = sorted(t for t, op, *_ in list(emulator._stats.log) if op == "CopyObject")
    assert len(done) == n
    most = max(sum(1 for t in done[i:] if t - done[i] < 0.9 * latency) for i in range(n))
    assert most >= 20, f"at most {most} copies within {0.9 * latency} s: sent {most} at a time or fewer"
    assert {o.key for o in oss2.ObjectIterator(oss2_bucket)} == {f"moved/f{i:03d}" for i in range(n)} | {"moved/"}
    assert crypto_bucket.get_object("moved/f039").read() == b"x" * 40
