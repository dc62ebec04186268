"""Every listed key is a usable name and every name a key (``fs.keymap``): names longer than
255 bytes, keys over OSS's 1023-byte limit, names that are not UTF-8, and key segments that
cannot be names (empty, ``.``, ``..``)."""
from __future__ import annotations

import errno
import os

import oss2
import pytest

pytestmark = pytest.mark.mount


def test_a_listed_name_over_255_bytes_is_usable(mount, crypto_bucket, oss2_bucket):
    long_name = "长" * 90 + ".txt"                      # 274 bytes of UTF-8
    crypto_bucket.put_object("d/" + long_name, b"long")
    d = mount.path / "d"
    assert os.listdir(d) == [long_name]
    assert (d / long_name).read_bytes() == b"long"
    os.rename(d / long_name, d / (long_name + ".old"))
    (d / long_name).write_bytes(b"new")
    assert sorted(os.listdir(d)) == [long_name, long_name + ".old"]
    os.unlink(d / (long_name + ".old"))
    assert crypto_bucket.get_object("d/" + long_name).read() == b"new"
    assert {o.key for o in oss2.ObjectIterator(oss2_bucket)} - {"d/"} == \
        {"d/" + long_name}


def test_a_key_over_1023_bytes_is_refused_when_the_name_is_made(mount, oss2_bucket):
    d = mount.path / ("x" * 200)
    for i in range(4):
        d = d / ("y" * 200)
    os.makedirs(d)                                       # 1005 bytes of key: fine
    for make in (lambda p: p.write_bytes(b"z"), os.mkdir, lambda p: os.symlink("t", p)):
        with pytest.raises(OSError) as e:
            make(d / ("z" * 30))
        assert e.value.errno == errno.ENAMETOOLONG
    (d / "ok").write_bytes(b"fits")
    with pytest.raises(OSError) as e:
        os.rename(d / "ok", d / ("z" * 30))
    assert e.value.errno == errno.ENAMETOOLONG
    assert (d / "ok").read_bytes() == b"fits"
    assert "Traceback" not in mount.log()


def test_names_that_are_not_utf8_round_trip(mount, oss2_bucket, crypto_bucket):
    root = os.fsencode(mount.path)
    latin1 = b"caf\xe9.txt"                               # Latin-1
    gbk = b"\xd6\xd0\xce\xc4"                             # GBK: not valid UTF-8
    with open(root + b"/" + latin1, "wb") as f:
        f.write(b"latin")
    os.mkdir(root + b"/" + gbk)
    with open(root + b"/" + gbk + b"/" + latin1, "wb") as f:
        f.write(b"nested")
    assert sorted(os.listdir(root)) == sorted([latin1, gbk])
    keys = {o.key for o in oss2.ObjectIterator(oss2_bucket)}
    assert "caf\uf7e9.txt" in keys                         # the documented escape
    mount.remount()
    assert sorted(os.listdir(root)) == sorted([latin1, gbk])
    with open(root + b"/" + gbk + b"/" + latin1, "rb") as f:
        assert f.read() == b"nested"
    os.rename(root + b"/" + latin1, root + b"/" + latin1 + b".bak")
    assert crypto_bucket.get_object("caf\uf7e9.txt.bak").read() == b"latin"
    # a UTF-8 name inside the escape range cannot be told from an escaped byte
    with pytest.raises(OSError) as e:
        open(mount.path / "bad\uf7e9", "wb")
    assert e.value.errno == errno.EINVAL


def test_empty_and_dot_key_segments_show_under_stand_in_names(mount, crypto_bucket,
                                                               oss2_bucket):
    crypto_bucket.put_object("a//b.txt", b"empty segment")
    crypto_bucket.put_object("c/./d.txt", b"dot segment")
    crypto_bucket.put_object("e/f.txt", b"plain")
    p = mount.path
    assert os.listdir(p / "a") == ["\uf700"]
    assert (p / "a" / "\uf700" / "b.txt").read_bytes() == b"empty segment"
    assert (p / "c" / "\uf72e" / "d.txt").read_bytes() == b"dot segment"
    with pytest.raises(OSError) as e:                    # ls and rmdir agree: not empty
        os.rmdir(p / "a")
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(p / "a" / "\uf700" / "b.txt")
    os.rmdir(p / "a" / "\uf700")
    os.rmdir(p / "a")
    assert not any(k.startswith("a/") for k in
                   (o.key for o in oss2.ObjectIterator(oss2_bucket)))
    (p / "a2").mkdir()
    (p / "a2" / "\uf700").mkdir()                         # the stand-in maps back
    (p / "a2" / "\uf700" / "x").write_bytes(b"x")
    assert crypto_bucket.get_object("a2//x").read() == b"x"
