"""Log lines name the right object, once, and object names cannot forge lines (issue 13 item 6)."""
from __future__ import annotations

import base64
import os
import re

import pytest

pytestmark = pytest.mark.mount

FORGED = "ossencfs: ERROR: forged line"


def _lines(m) -> list[str]:
    return m.log_path.read_text(errors="replace").splitlines()


def _bad_object(bucket, key: str) -> None:
    """An object with a complete CSE header set whose wrapped key no configured key opens."""
    junk = base64.b64encode(os.urandom(256)).decode()
    bucket.put_object(key, os.urandom(100), headers={
        "x-oss-meta-client-side-encryption-key": junk, "x-oss-meta-client-side-encryption-start": junk,
        "x-oss-meta-client-side-encryption-cek-alg": "AES/CTR/NoPadding",
        "x-oss-meta-client-side-encryption-wrap-alg": "RSA/NONE/PKCS1Padding"})


def test_control_characters_in_names_cannot_forge_log_lines(make_mount, oss2_bucket):
    """A bad object whose key holds a newline and terminal escapes: reading it fails, and the
    error line shows the name escaped, on one line, once."""
    name = f"evil\n{FORGED}\x1b[2K\r"
    _bad_object(oss2_bucket, f"d/{name}")
    m = make_mount("names")
    assert name in os.listdir(m.path / "d")
    with pytest.raises(OSError):
        (m.path / "d" / name).read_bytes()
    lines = _lines(m)
    assert not any(line.startswith(FORGED) for line in lines), lines
    assert not any("\x1b" in line or "\r" in line for line in lines)
    hits = [line for line in lines if "evil\\n" + FORGED in line]
    assert len(hits) == 1, lines                    # the object, escaped, once per failure
    assert "oss://test-bucket/d/evil\\n" in hits[0]


def test_errors_on_directory_handles_name_the_directory(make_mount, oss2_bucket, emulator):
    oss2_bucket.put_object("top/sub/x", b"-")
    oss2_bucket.put_object("other.txt", b"-")
    m = make_mount("dirs", extra=["-o", "attr_timeout=0"])
    os.stat(m.path / "top" / "sub")                 # looked up, never listed
    fd = os.open(m.path / "other.txt", os.O_RDONLY)  # a file handle whose number a dir handle may share
    emulator.set_faults(fail_rate=1.0)
    try:
        with pytest.raises(OSError):
            os.listdir(m.path / "top" / "sub")
    finally:
        emulator.set_faults(fail_rate=0.0)
        os.close(fd)
    errors = [line for line in _lines(m) if "ERROR" in line and "readdir" in line]
    assert len(errors) == 1, _lines(m)
    assert "oss://test-bucket/top/sub/" in errors[0] and not re.search(r"[^:]//", errors[0])
    assert "other.txt" not in errors[0]
