"""Pieces of the mount that need no FUSE: extents, POSIX header mapping, option parsing,
the block cache and a staging round trip (ciphertext on disk, plaintext back)."""
from __future__ import annotations

import os
import random
import stat

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from ossencfs.errors import OssEncError
from ossencfs.fs import posix
from ossencfs.fs.cache import BlockCache
from ossencfs.fs.mounter import parse_mount_options, parse_size
from ossencfs.fs.staging import Extents, StagingArea


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "trunc"]), st.integers(0, 200),
                          st.integers(0, 60)), max_size=25))
def test_extents_match_a_bitmap(ops):
    ext, bits = Extents(), [False] * 300
    for op, a, n in ops:
        if op == "add":
            ext.add(a, a + n)
            for i in range(a, a + n):
                bits[i] = True
        else:
            ext.truncate(a)
            for i in range(a, 300):
                bits[i] = False
    segs = ext.segments(0, 300)
    assert segs[0][0] == 0 and segs[-1][1] == 300
    for s, e, staged in segs:
        assert all(bits[i] == staged for i in range(s, e))
    assert all(e1 == s2 for (_, e1, _), (s2, _, _) in zip(segs, segs[1:]))
    assert all(s < e for s, e in zip(ext.starts, ext.ends))
    assert all(e1 < s2 for e1, s2 in zip(ext.ends, ext.starts[1:]))   # merged, sorted


def test_posix_headers_roundtrip_ossfs_style():
    policy = posix.MountPolicy()
    meta = posix.new_meta(stat.S_IFREG, 0o640, 1000, 100)
    h = posix.to_headers(meta)
    assert h["x-oss-meta-mode"] == str(stat.S_IFREG | 0o640)        # decimal, type bits included
    back = posix.from_headers(h, is_dir=False, fallback_mtime=0, policy=policy)
    assert (back.mode, back.uid, back.gid, back.mtime_ns) == (meta.mode, 1000, 100, meta.mtime_ns)
    # what ossfs 1.x writes: whole seconds; and no metadata at all -> defaults
    old = posix.from_headers({"X-Oss-Meta-Mode": "33261", "x-oss-meta-mtime": "1600000000"},
                             is_dir=False, fallback_mtime=0, policy=policy)
    assert old.mode == stat.S_IFREG | 0o755 and old.mtime_ns == 1_600_000_000 * 10**9
    d = posix.from_headers({}, is_dir=True, fallback_mtime=5.0,
                           policy=posix.MountPolicy(dir_mode=0o700))
    assert d.mode == stat.S_IFDIR | 0o700 and d.mtime_ns == 5 * 10**9
    assert posix.is_symlink_headers({"x-oss-meta-mode": str(stat.S_IFLNK | 0o777)})


def test_mount_option_parsing():
    o = parse_mount_options(["allow_other,ro", "uid=5,gid=6,umask=022,file_mode=600,dir_mode=0711",
                             "_netdev,attr_timeout=3.5"])
    assert o.allow_other and o.read_only and o.ttl == 3.5
    assert o.policy and (o.policy.uid, o.policy.gid, o.policy.umask) == (5, 6, 0o22)
    assert (o.policy.file_mode, o.policy.dir_mode) == (0o600, 0o711)
    with pytest.raises(OssEncError):
        parse_mount_options(["bogus"])
    with pytest.raises(OssEncError):
        parse_mount_options(["umask=9"])
    assert parse_size("1G") == 1 << 30 and parse_size("512MiB") == 512 << 20
    assert parse_size("4096") == 4096


def test_block_cache_lru_cap(tmp_path):
    async def main():
        cache = BlockCache(str(tmp_path / "c"), block_size=16 * 4, max_bytes=64 * 3, hot_bytes=64)
        for i in range(5):
            await cache.put("k", "e1", i, bytes([i]) * 64)
        assert cache.disk_bytes <= 64 * 3
        assert await cache.get("k", "e1", 4) == bytes([4]) * 64
        assert await cache.get("k", "e2", 4) is None                  # another version
        calls = []

        async def fetch():
            calls.append(1)
            await trio.sleep(0.01)
            return b"x" * 64
        async with trio.open_nursery() as n:
            for _ in range(5):
                n.start_soon(cache.get_or_fetch, "k", "e3", 0, fetch)
        assert len(calls) == 1                                         # one GET for all waiters
        # a new cache over the same directory adopts the blocks
        again = BlockCache(str(tmp_path / "c"), block_size=64, max_bytes=64 * 3)
        assert await again.get("k", "e3", 0) == b"x" * 64
    trio.run(main)


def test_staging_keeps_only_ciphertext_and_reads_back(tmp_path, rsa_key_path):
    from ossencfs.envelope.keys import KeyRing, RsaMasterKey
    ring = KeyRing([RsaMasterKey.from_pem_file(rsa_key_path)])
    base = os.urandom(50_000)

    class Base:
        async def read(self, off, n):
            return base[off:off + n]

    async def main():
        area = StagingArea(str(tmp_path / "s"), ring)
        stg = await area.new("obj", len(base), Base(), len(base), "etag0")
        model = bytearray(base)
        rnd = random.Random(1)
        for _ in range(30):
            off, n = rnd.randrange(60_000), rnd.randrange(1, 3000)
            data = rnd.randbytes(n)
            await stg.write(off, data)
            if off > len(model):
                model += bytes(off - len(model))
            model[off:off + n] = data
        await stg.truncate(40_000)
        del model[40_000:]
        await stg.write(45_000, b"end")
        model += bytes(5000) + b"end"
        assert await stg.read(0, 100_000) == bytes(model)
        raw = open(stg.data_path, "rb").read()
        assert bytes(model[:4000]) not in raw
        await stg.materialize()
        cipher = await stg.read_cipher(0, stg.size)
        from ossencfs.envelope.ctr import crypt_at
        m = ring.open(stg.crypto_headers)
        assert crypt_at(m.key, m.counter0, 0, cipher) == bytes(model)  # what will be uploaded
        stg.sealed = True
        nxt = await area.rekey(stg, "etag1")                           # fresh key, same content
        assert nxt.crypto_headers != stg.crypto_headers
        assert await nxt.read(0, 100_000) == bytes(model)
        await area.drop(nxt)
        assert os.listdir(tmp_path / "s") == []
    trio.run(main)


def test_restore_keeps_sealed_and_prior_keys(tmp_path, rsa_key_path):
    """A replayed entry whose key may be in the bucket stays sealed: a later write re-keys
    instead of encrypting other data under the same (key, IV)."""
    from ossencfs.envelope.keys import KeyRing, RsaMasterKey
    ring = KeyRing([RsaMasterKey.from_pem_file(rsa_key_path)])

    async def main():
        area = StagingArea(str(tmp_path / "s"), ring)
        stg = await area.new("f", 0, None, 0, None)
        await stg.write(0, b"A" * 32)
        stg.committed, stg.sealed, stg.prior_keys = True, True, ["earlier-wrapped-key"]
        await stg.save_manifest(durable=True)
        entry = area.journal.scan()[0][0]
        again = StagingArea(str(tmp_path / "s"), ring)
        restored = again.restore(entry, ring.open(entry["crypto_headers"]), None)
        assert restored.sealed and restored.committed
        assert restored.prior_keys == ["earlier-wrapped-key"]
        nxt = await again.rekey(restored, None, committed=True, unconfirmed=True)
        assert not nxt.sealed and nxt.crypto_headers != restored.crypto_headers
        assert nxt.prior_keys == ["earlier-wrapped-key", restored.wrapped_key]
        assert await nxt.read(0, 32) == b"A" * 32
    trio.run(main)


class _SlowObjects:
    """Stands in for EncryptedObjects (no network): a multipart upload that sends one part
    every ``gap`` seconds of (mock) time."""

    def __init__(self, gap: float, parts: int) -> None:
        self.gap, self.parts = gap, parts
        self.store = type("S", (), {"name": "b"})()

    def multipart_part_size(self, size):
        return size // self.parts

    async def upload(self, key, size, read_cipher, crypto, extra, *, forbid_overwrite,
                     if_match, progress):
        for _ in range(self.parts):
            await trio.sleep(self.gap)
            progress(size // self.parts)
        return "etag-1"


@pytest.mark.parametrize("gap,ok", [(100.0, True), (500.0, False)])
def test_upload_deadline_is_a_no_progress_timeout(tmp_path, rsa_key_path, gap, ok):
    """A slow upload that keeps making progress is never cut off (10 parts, 100 s apart, far
    beyond 2 min + 1 s/MiB in total); one that stalls longer than that is."""
    from ossencfs.envelope.keys import KeyRing, RsaMasterKey
    from ossencfs.errors import NetworkError
    from ossencfs.fs.uploader import Uploader
    ring = KeyRing([RsaMasterKey.from_pem_file(rsa_key_path)])

    async def main():
        area = StagingArea(str(tmp_path / "s"), ring)
        stg = await area.new("big", 0, None, 0, None)
        await stg.write(0, b"z" * 100_000)
        up = Uploader(_SlowObjects(gap, 10))
        if ok:
            assert (await up.upload(stg, {})).etag == "etag-1"
        else:
            with pytest.raises(NetworkError):
                await up.upload(stg, {})
        assert stg.sealed
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
