"""Two mounts of one bucket (two cache directories): a concurrent edit is a conflict copy,
never a lost update."""
from __future__ import annotations

import os
import re

import pytest

from tests.mount.conftest import eventually

pytestmark = pytest.mark.mount

CONFLICT = re.compile(r"^(?P<name>.+)\.conflict-[A-Za-z0-9_-]+-\d{8}T\d{6}Z(-\d+)?$")


def _conflicts(bucket, name: str) -> list[str]:
    import oss2
    return [o.key for o in oss2.ObjectIterator(bucket, prefix=name + ".conflict-")
            if CONFLICT.match(o.key)]


def test_concurrent_edit_of_one_file_gives_a_conflict_copy(make_mount, crypto_bucket):
    crypto_bucket.put_object("shared.txt", b"version zero\n")
    a = make_mount("a")
    b = make_mount("b")
    with open(a.path / "shared.txt", "r+b") as fa:        # A opens the current version
        assert fa.read() == b"version zero\n"
        (b.path / "shared.txt").write_bytes(b"B's edit\n")  # B replaces it meanwhile
        assert crypto_bucket.get_object("shared.txt").read() == b"B's edit\n"
        fa.seek(0)
        fa.write(b"A's edit, longer\n")
    # A's close did not overwrite B's version: it went beside it
    assert crypto_bucket.get_object("shared.txt").read() == b"B's edit\n"
    [copy] = _conflicts(crypto_bucket, "shared.txt")
    assert crypto_bucket.get_object(copy).read() == b"A's edit, longer\n"
    assert "conflict" in a.log() and copy in a.log()
    # A now shows B's version at the name and its own version beside it
    eventually(lambda: (a.path / "shared.txt").read_bytes() == b"B's edit\n")
    assert (a.path / os.path.basename(copy)).read_bytes() == b"A's edit, longer\n"
    eventually(lambda: f"local version saved as {copy}" in a.cli("status", str(a.path)).stdout)


def test_new_file_created_on_both_sides_is_not_overwritten(make_mount, crypto_bucket):
    a = make_mount("a", extra=["--write-back", "3600"])
    b = make_mount("b")
    (a.path / "report.txt").write_bytes(b"from A")        # journaled, not uploaded yet
    (b.path / "report.txt").write_bytes(b"from B")        # B creates the same name first
    assert crypto_bucket.get_object("report.txt").read() == b"from B"
    with open(a.path / "report.txt", "rb") as f:          # fsync uploads now (forbid-overwrite)
        os.fsync(f.fileno())
    assert crypto_bucket.get_object("report.txt").read() == b"from B"
    [copy] = _conflicts(crypto_bucket, "report.txt")
    assert crypto_bucket.get_object(copy).read() == b"from A"


def test_write_back_upload_checks_the_base_version(make_mount, crypto_bucket):
    crypto_bucket.put_object("doc.txt", b"base")
    a = make_mount("a", extra=["--write-back", "1"])
    with open(a.path / "doc.txt", "ab") as f:
        f.write(b" + A")
    crypto_bucket.put_object("doc.txt", b"changed elsewhere")   # before A's delayed upload
    eventually(lambda: len(_conflicts(crypto_bucket, "doc.txt")) == 1, 30)
    [copy] = _conflicts(crypto_bucket, "doc.txt")
    assert crypto_bucket.get_object(copy).read() == b"base + A"
    assert crypto_bucket.get_object("doc.txt").read() == b"changed elsewhere"


def test_partial_rewrite_whose_base_vanished_is_kept_aside(make_mount, crypto_bucket):
    crypto_bucket.put_object("big.bin", os.urandom(600_000))
    a = make_mount("a")
    with pytest.raises(OSError):
        with open(a.path / "big.bin", "r+b") as f:         # untouched ranges never read
            f.write(b"local change")
            crypto_bucket.put_object("big.bin", b"replaced elsewhere")
    # nothing half-made was uploaded; the other version stays; the local change is kept aside
    assert crypto_bucket.get_object("big.bin").read() == b"replaced elsewhere"
    assert not _conflicts(crypto_bucket, "big.bin")
    r = a.cli("status", str(a.path))
    assert "quarantined journal entries: 1" in r.stdout and "big.bin" in r.stdout, r.stdout
    eventually(lambda: (a.path / "big.bin").read_bytes() == b"replaced elsewhere")
