"""Pieces of the mount that need no FUSE: extents, POSIX header mapping, option parsing,
the block cache and a staging round trip (ciphertext on disk, plaintext back)."""
from __future__ import annotations

import json
import os
import random
import stat

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from ossencfs.errors import OssEncError
from ossencfs.fs import dirtystate, posix
from ossencfs.fs.cache import HOT_ENTRY_OVERHEAD, BlockCache
from ossencfs.fs.mountoptions import parse_mount_options, parse_size
from ossencfs.fs.journal import Journal
from ossencfs.fs.extents import Extents
from ossencfs.fs.stagingarea import StagingArea


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
    """The path the mount uses (``fs.readahead``): claim, settle, peek, store_disk, load_disk;
    the disk stays under the cap (LRU), a changed object misses, concurrent readers of a
    block wait for the one fetch, and a new cache over the directory adopts the blocks."""
    async def main():
        cache = BlockCache(str(tmp_path / "c"), block_size=16 * 4, max_bytes=64 * 3,
                           hot_bytes=64 + HOT_ENTRY_OVERHEAD)
        for i in range(5):
            cache.claim("k", "e1", i)
            cache.settle("k", "e1", i, bytes([i]) * 64)
        await cache.store_disk("k", "e1", [(i, bytes([i]) * 64) for i in range(5)])
        assert cache.disk_bytes <= 64 * 3                             # LRU cap
        assert not cache.on_disk("k", "e1", 0) and cache.on_disk("k", "e1", 4)
        assert cache.peek("k", "e1", 4) == bytes([4]) * 64            # the hot set
        assert cache.peek("k", "e1", 0) is None                       # (room for one block)
        assert await cache.load_disk("k", "e1", [3, 4]) == {3: bytes([3]) * 64, 4: bytes([4]) * 64}
        assert await cache.load_disk("k", "e2", [4]) == {}            # another version
        # one fetch per block: a second reader finds the claim and waits for its settle
        cache.claim("k", "e3", 0)
        got = []

        async def reader():
            event = cache.pending("k", "e3", 0)
            assert event is not None
            await event.wait()
            got.append(cache.peek("k", "e3", 0))
        async with trio.open_nursery() as n:
            n.start_soon(reader)
            n.start_soon(reader)
            await trio.sleep(0.01)
            cache.settle("k", "e3", 0, b"x" * 64)
        assert got == [b"x" * 64, b"x" * 64] and cache.pending("k", "e3", 0) is None
        await cache.store_disk("k", "e3", [(0, b"x" * 64)])
        # a new cache over the same directory adopts the blocks
        again = BlockCache(str(tmp_path / "c"), block_size=64, max_bytes=64 * 3)
        assert await again.load_disk("k", "e3", [0]) == {0: b"x" * 64}
        # staged data shares the limit: room is made by evicting clean blocks
        again.reserved = lambda: 64 * 2
        await again.make_room(64)
        assert again.disk_bytes <= 64
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
        await stg.save_manifest()               # small writes reach the disk with an entry
        assert await stg.read(0, 100_000) == bytes(model)
        raw = open(stg.data_path, "rb").read()
        assert bytes(model[:4000]) not in raw
        await stg.materialize()
        cipher = await stg.read_cipher(0, stg.size)
        from ossencfs.envelope.ctr import crypt_at
        m = ring.open(stg.crypto_headers)
        assert crypt_at(m.key, m.counter0, 0, cipher) == bytes(model)  # what will be uploaded
        dirtystate.seal(stg)
        nxt = await area.rekey(stg, "etag1")                           # fresh key, same content
        assert nxt.crypto_headers != stg.crypto_headers
        assert await nxt.read(0, 100_000) == bytes(model)
        await area.drop(nxt)
        left = os.listdir(tmp_path / "s")        # only files kept for reuse (ciphertext)
        assert all(n.endswith(".spare") for n in left), left
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
        dirtystate.commit(stg)
        dirtystate.seal(stg)
        stg.prior_keys = ["earlier-wrapped-key"]
        await stg.save_manifest(durable=True)
        entry = area.journal.scan()[0][0]
        again = StagingArea(str(tmp_path / "s"), ring)
        restored = again.restore(entry, ring.open(entry.crypto_headers), None)
        assert restored.sealed and restored.committed
        assert restored.prior_keys == ["earlier-wrapped-key"]
        nxt = await again.rekey(restored, None, committed=True, unconfirmed=True)
        assert not nxt.sealed and nxt.crypto_headers != restored.crypto_headers
        assert nxt.prior_keys == ["earlier-wrapped-key", restored.wrapped_key]
        assert await nxt.read(0, 32) == b"A" * 32
    trio.run(main)


def test_staging_files_are_reused_never_while_open(tmp_path, rsa_key_path):
    """Dropped stagings leave emptied spares that the next ones are made of (no inode is
    created or deleted); a data file still open (unlink of an open file) is never reused; an
    uncommitted entry is overwritten in place and a commit then replays; leftover spares of
    an earlier run are taken up again by the next scan."""
    from ossencfs.envelope.keys import KeyRing, RsaMasterKey
    ring = KeyRing([RsaMasterKey.from_pem_file(rsa_key_path)])
    d = tmp_path / "s"

    async def main():
        area = StagingArea(str(d), ring)
        first = await area.new("a", 0, None, 0, None)
        await first.write(0, b"first" * 100)
        assert not os.listdir(d)                  # in memory until a commit needs the file
        await first.save_manifest()
        inodes = {os.stat(first.data_path).st_ino, os.stat(first.manifest_path).st_ino}
        await area.drop(first)
        assert len([n for n in os.listdir(d) if n.endswith(".spare")]) == 2
        second = await area.new("b", 0, None, 0, None)       # made of the spares
        await second.write(0, b"second")
        await second.save_manifest()
        assert {os.stat(second.data_path).st_ino, os.stat(second.manifest_path).st_ino} == inodes
        assert not [n for n in os.listdir(d) if n.endswith(".spare")]
        dirtystate.commit(second)                              # uncommitted -> committed, in place
        await second.save_manifest({"x-oss-meta-mode": "33188"}, durable=True)
        assert os.stat(second.manifest_path).st_ino in inodes
        # still open after an unlink: its data must survive the next stagings
        area.journal.remove(second.ident, durable=False)
        for i in range(3):
            other = await area.new(f"c{i}", 0, None, 0, None)
            await other.write(0, b"X" * 5000)
            await other.save_manifest()
            await area.drop(other)
        assert await second.read(0, 100) == b"second"
        await area.drop(second)
        third = await area.new("d", 0, None, 0, None)
        await third.write(0, b"third")
        dirtystate.commit(third)
        await third.save_manifest({}, durable=True)
        # unlinked while its data is still in memory: later data goes to no named file
        gone = await area.new("e", 0, None, 0, None)
        await gone.write(0, b"early")
        area.journal.remove(gone.ident, durable=False)
        big = os.urandom(100_000)                 # too big for memory: goes to a file
        await gone.write(5, big)
        assert await gone.read(0, 200_000) == b"early" + big
        assert not [n for n in os.listdir(d) if n.startswith(gone.ident)]
        await area.drop(gone)
        (d / "123-4.spare").write_bytes(b"left by an earlier run")
        later = Journal(str(d), str(tmp_path / "q"), area.journal.identity)
        good, bad = later.scan()
        assert [e.id for e in good] == [third.ident] and not bad
        spares = {os.stat(d / n).st_ino for n in os.listdir(d) if n.endswith(".spare")}
        assert os.stat(d / "123-4.spare").st_ino in spares
        os.close(later.create_data("f" * 32))             # made of a spare, not a new inode
        assert os.stat(d / ("f" * 32 + ".data")).st_ino in spares
        assert len([n for n in os.listdir(d) if n.endswith(".spare")]) == len(spares) - 1
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
                     if_match, progress, read_cipher_sync=None):
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


class _OneShotObjects:
    """EncryptedObjects stand-in: a single PUT that reads the body as the real one does."""

    def __init__(self) -> None:
        self.store = type("S", (), {"name": "b"})()
        self.bodies: list[bytes] = []

    def multipart_part_size(self, size):
        return None

    async def upload(self, key, size, read_cipher, crypto, extra, *, forbid_overwrite,
                     if_match, progress, read_cipher_sync=None):
        body = await trio.to_thread.run_sync(read_cipher_sync, 0, size) if read_cipher_sync \
            else await read_cipher(0, size)
        self.bodies.append(body)
        return "etag-1"


def test_sealed_at_commit_uploads_without_rewriting_its_entry(tmp_path, rsa_key_path):
    """A small staging sealed in its commit entry goes up with no journal write in between
    (the entry already says that its key may be in the bucket); one that was not sealed is
    sealed in its entry before the bytes are sent; a write after the seal re-keys."""
    from ossencfs.envelope.ctr import crypt_at
    from ossencfs.envelope.keys import KeyRing, RsaMasterKey
    from ossencfs.fs.uploader import Uploader
    ring = KeyRing([RsaMasterKey.from_pem_file(rsa_key_path)])

    async def main():
        area = StagingArea(str(tmp_path / "s"), ring)
        objects = _OneShotObjects()
        up = Uploader(objects)
        for presealed in (True, False):
            stg = await area.new(f"f{presealed}", 0, None, 0, None)
            await stg.write(0, b"payload")
            dirtystate.commit(stg)
            if presealed:
                assert stg.sealable
                dirtystate.seal(stg)
            await stg.save_manifest({}, durable=True)
            before = os.stat(stg.manifest_path)
            await up.upload(stg, {})
            after = os.stat(stg.manifest_path)
            rewritten = (before.st_ino, before.st_mtime_ns) != (after.st_ino, after.st_mtime_ns)
            assert rewritten != presealed
            entry = json.loads(open(stg.manifest_path, "rb").read())
            assert entry["sealed"] and entry["committed"] and stg.sealed
            m = ring.open(stg.crypto_headers)
            assert crypt_at(m.key, m.counter0, 0, objects.bodies[-1]) == b"payload"
            nxt = await area.rekey(stg, None, committed=True, unconfirmed=True)
            assert nxt.crypto_headers != stg.crypto_headers and not nxt.sealed
            assert await nxt.read(0, 100) == b"payload"
    trio.run(main)


def test_removals_of_many_stagings_share_worker_calls(tmp_path, rsa_key_path):
    """Stagings dropped at the same time are all removed (entries first), each caller
    returning once its own removal is done."""
    from ossencfs.envelope.keys import KeyRing, RsaMasterKey
    ring = KeyRing([RsaMasterKey.from_pem_file(rsa_key_path)])
    d = tmp_path / "s"

    async def main():
        area = StagingArea(str(d), ring)
        calls = []
        real = area._remove_batch
        area._remove_batch = lambda batch: (calls.append(len(batch)), real(batch))[1]
        stagings = []
        for i in range(40):
            stg = await area.new(f"f{i}", 0, None, 0, None)
            await stg.write(0, b"x" * 100)
            dirtystate.commit(stg)
            await stg.save_manifest({}, durable=bool(i % 2))
            stagings.append(stg)

        async def drop(stg):
            await area.drop(stg)
            assert not os.path.exists(stg.manifest_path)
            assert not os.path.exists(stg.data_path)
        async with trio.open_nursery() as nursery:
            for stg in stagings:
                nursery.start_soon(drop, stg)
        assert sum(calls) == 40 and len(calls) < 40
        assert not [n for n in os.listdir(d) if not n.endswith(".spare")]
    trio.run(main)


def test_write_back_runs_each_job_when_due_and_not_before():
    """The queue keeps due times in a heap: a job rescheduled later is not run at its old
    time, one rescheduled sooner is, and each runs once per schedule."""
    from ossencfs.fs.writeback import WriteBack

    class Node:
        def __init__(self, name):
            self.name, self.dirty, self.staging, self.size = name, True, None, 10

    ran = []

    class Model:
        def writers(self, node):
            return 0

        async def upload_job(self, node):
            ran.append((node.name, round(trio.current_time())))
            node.dirty = False

        def where(self, node):
            return node.name

    async def main():
        model = Model()
        wb = WriteBack(upload=model.upload_job, writers=model.writers, where=model.where,
                       delay=10.0)
        a, b, c = Node("a"), Node("b"), Node("c")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wb.run)
            await trio.sleep(1)               # t=1
            wb.schedule(a)                    # due 11
            wb.schedule(b)                    # due 11
            wb.schedule(c, 30)                # due 31
            await trio.sleep(5)               # t=6
            wb.schedule(a)                    # later: due 16
            wb.schedule(c, 2)                 # sooner: due 8
            await trio.sleep(40)
            nursery.cancel_scope.cancel()
        assert sorted(ran) == [("a", 16), ("b", 11), ("c", 8)]
        assert not wb.jobs
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
