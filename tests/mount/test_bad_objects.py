"""Objects whose stored body does not match what their headers say (issue 13, item 4).

A truncated or over-long encrypted object (body shorter or longer than its
``client-side-encryption-unencrypted-content-length`` header) must never be served as if it
were whole: EIO through the mount, and a one-line error with a non-zero exit from
``ossencfs cat``/``cp``, naming the object.
"""
from __future__ import annotations

import errno
import os

import pytest

from tests.conftest import BUCKET, SDK_FIXTURES

pytestmark = pytest.mark.mount

_UNENC = "x-oss-meta-client-side-encryption-unencrypted-content-length"


def _put_cut(crypto_bucket, oss2_bucket, key: str, data: bytes, body: int) -> None:
    """An oss2 CSE object of ``data`` (Content-Length given, so oss2 records the plaintext
    length, SPEC A.7) re-stored by a plain client with only ``body`` bytes of it (or with
    extra bytes), its headers kept: what a torn or tampered upload leaves behind."""
    crypto_bucket.put_object(key, data, headers={"Content-Length": str(len(data))})
    raw = oss2_bucket.get_object(key)
    headers = {k: v for k, v in raw.headers.items() if k.lower().startswith("x-oss-meta-")}
    assert headers.get(_UNENC) == str(len(data)), headers
    stored = raw.read()
    stored = stored[:body] if body <= len(stored) else stored + os.urandom(body - len(stored))
    oss2_bucket.put_object(key, stored, headers=headers)


@pytest.mark.parametrize("body", [100_000, 300_000], ids=["truncated", "over-long"])
def test_object_cut_short_or_long_is_eio_and_cli_error(make_mount, crypto_bucket, oss2_bucket,
                                                      tmp_path, body):
    data = os.urandom(200_000)
    _put_cut(crypto_bucket, oss2_bucket, "cut.bin", data, body)
    crypto_bucket.put_object("whole.bin", data, headers={"Content-Length": str(len(data))})
    m = make_mount("m")
    assert (m.path / "whole.bin").read_bytes() == data     # the header alone is no fault
    for _ in range(2):                                      # also after a remount
        r = m.run("cat", str(m.path / "cut.bin"), check=False)
        assert r.returncode != 0 and r.stdout == b"", r
        with pytest.raises(OSError) as ei:
            (m.path / "cut.bin").read_bytes()
        assert ei.value.errno == errno.EIO
        m.remount()
    assert f"oss://{BUCKET}/cut.bin" in m.log() and "unencrypted-content-length" in m.log()

    common = ["--endpoint", m.emulator.endpoint, "--no-progress",
              "--rsa-key", str(SDK_FIXTURES / "rsa_test_private.pem")]
    r = m.cli("cat", f"oss://{BUCKET}/cut.bin", *common)
    assert r.returncode != 0 and r.stdout == "", r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"oss://{BUCKET}/cut.bin" in lines[0], r.stderr
    out = tmp_path / "out.bin"
    r = m.cli("cp", f"oss://{BUCKET}/cut.bin", str(out), *common)
    assert r.returncode != 0 and not out.exists(), r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"oss://{BUCKET}/cut.bin" in lines[0], r.stderr
    r = m.cli("cp", f"oss://{BUCKET}/whole.bin", str(out), *common)
    assert r.returncode == 0 and out.read_bytes() == data, r


def test_own_uploads_record_plain_length(make_mount, oss2_bucket, tmp_path):
    """What ossencfs writes carries the length header (single PUT and multipart), so a torn
    copy of it is caught the same way."""
    m = make_mount("m")
    for name, size in (("small.bin", 1000), ("large.bin", 600_000)):
        data = os.urandom(size)
        (m.path / name).write_bytes(data)
        m.wait_uploaded()
        assert oss2_bucket.head_object(name).headers.get(_UNENC) == str(size)
    raw = oss2_bucket.get_object("large.bin")
    headers = {k: v for k, v in raw.headers.items() if k.lower().startswith("x-oss-meta-")}
    oss2_bucket.put_object("large.bin", raw.read()[:500_000], headers=headers)
    m.remount()
    with pytest.raises(OSError) as ei:
        (m.path / "large.bin").read_bytes()
    assert ei.value.errno == errno.EIO
