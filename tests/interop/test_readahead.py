"""Read-ahead through the block cache against the emulator: what a read costs in requests
and bytes, and what lands in the on-disk cache. Counts, never timings."""
from __future__ import annotations

import functools
import random

import trio

from ossencfs.fs import readahead
from ossencfs.fs.cache import BlockCache
from ossencfs.fs.readahead import BlockSource
from tests.interop.conftest import payload

MiB = 1 << 20


def _objects(store, rsa_key_path):
    from ossencfs.envelope.keys import KeyRing, RsaMasterKey
    from ossencfs.objects import EncryptedObjects
    return EncryptedObjects(store, KeyRing([RsaMasterKey.from_pem_file(rsa_key_path)]))


async def _source(store, objects, cache, nursery, key, data):
    await objects.write(key, data, len(data))
    reader = await objects.open_reader(key)
    return BlockSource(cache, reader, key, reader.info.etag, reader.size,
                       lambda fn: (nursery.start_soon(fn), True)[1])


def test_sequential_reads_use_few_large_gets(store, rsa_key_path, tmp_path, monkeypatch):
    from ossencfs.fs.fetchcost import FetchCost
    monkeypatch.setattr(readahead, "STREAM_DISK_LIMIT", 2 * MiB)
    # a fast link (loopback), however busy the machine: over a slow one the GETs are smaller
    # (``SLOW_FETCH_SIZE``, test_the_window_stays_smaller_where_connections_are_fast)
    monkeypatch.setattr(FetchCost, "slow_connection", lambda self: False)
    data = payload(12 * MiB + 12345)
    objects = _objects(store, rsa_key_path)

    async def main():
        cache = BlockCache(str(tmp_path / "blocks"))
        async with trio.open_nursery() as nursery:
            src = await _source(store, objects, cache, nursery, "seq.bin", data)
            before = store.requests["get"]
            got = bytearray()
            for off in range(0, len(data), 128 * 1024):       # the kernel's request size
                got += await src.read(off, 128 * 1024)
            assert bytes(got) == data
            gets = store.requests["get"] - before
            # 256 KiB blocks one GET each would be 49; runs of up to FETCH_SIZE are ~10
            assert gets <= len(data) // readahead.FETCH_SIZE + 6, gets
            assert store.bytes_fetched <= len(data) + 64 * 1024
        # background disk writes are done once the nursery is: only the head of the stream
        assert 0 < cache.disk_bytes <= 2 * MiB + readahead.FETCH_SIZE
    trio.run(main)


def test_a_sequential_reader_holds_in_memory_only_the_blocks_ahead_of_it(store, rsa_key_path,
                                                                         tmp_path):
    """Blocks a sequential reader has passed leave the in-memory cache (the kernel's page cache
    has their plaintext): memory stays near the read-ahead window, not the whole file. Before,
    a 16 MiB read kept all 16 MiB (up to the 64 MiB hot set) in memory."""
    data = payload(16 * MiB + 777, seed=5)
    objects = _objects(store, rsa_key_path)
    window = 4 * MiB

    async def main():
        cache = BlockCache(str(tmp_path / "blocks"))
        async with trio.open_nursery() as nursery:
            await objects.write("stream.bin", data, len(data))
            reader = await objects.open_reader("stream.bin")
            src = BlockSource(cache, reader, "stream.bin", reader.info.etag, reader.size,
                              lambda fn: (nursery.start_soon(fn), True)[1], max_window=window)
            peak = 0
            for off in range(0, len(data), 128 * 1024):
                assert await src.read(off, 128 * 1024) == data[off:off + 128 * 1024]
                await trio.sleep(0)                            # as between FUSE requests
                peak = max(peak, cache.memory_bytes)
            # the window, a GET that completes it, and the block of slack behind the reader
            assert peak <= window + readahead.FETCH_SIZE + 2 * cache.block_size, peak
            last = (len(data) - 1) // cache.block_size
            assert not any(cache.in_memory("stream.bin", reader.info.etag, i)
                           for i in range(last - 2))
            # a new handle reading it again gets the same bytes (disk, then GETs)
            again = BlockSource(cache, reader, "stream.bin", reader.info.etag, reader.size,
                                lambda fn: (nursery.start_soon(fn), True)[1])
            assert await again.read(0, len(data)) == data
    trio.run(main)


def test_concurrent_reads_of_a_stream_keep_the_blocks_the_earlier_ones_wait_for(
        store, rsa_key_path, tmp_path):
    """The kernel keeps several reads of one stream under way, and each takes its blocks from
    the cache in turn: a later read that finished first must not drop blocks an earlier one
    has yet to take (it fetched them again: 40 MiB read as 42). Every byte is fetched once."""
    data = payload(24 * MiB + 99, seed=6)
    objects = _objects(store, rsa_key_path)
    request = 1 * MiB

    async def main():
        cache = BlockCache(None)
        async with trio.open_nursery() as nursery:
            src = await _source(store, objects, cache, nursery, "concurrent.bin", data)
            before = store.bytes_fetched
            got: dict[int, bytes] = {}
            limit = trio.Semaphore(4)                          # four reads under way

            async def one(off: int) -> None:
                try:
                    got[off] = await src.read(off, request)
                finally:
                    limit.release()
            async with trio.open_nursery() as readers:
                for off in range(0, len(data), request):
                    await limit.acquire()
                    readers.start_soon(one, off)
            assert b"".join(got[o] for o in sorted(got)) == data
            assert store.bytes_fetched - before == len(data)
    trio.run(main)


def test_a_small_share_over_slow_connections_keeps_two_gets_under_way(store, emulator, rsa_key_path,
                                                                    tmp_path):
    """16 readers share the read-ahead budget, so each one's window is one ``FETCH_SIZE``;
    over slow connections each window goes out as two GETs, the second issued while the reader
    is still in the first: no read-ahead GET starts at the block the reader has just reached
    (with one GET per window every one did, and the reader waited for all of it)."""
    data = payload(8 * MiB, seed=4)
    objects = _objects(store, rsa_key_path)
    issued: list[tuple[int, int]] = []          # (GET start, end of the reader's last read)

    async def main():
        cache = BlockCache(None, hot_bytes=2 * readahead.FETCH_SIZE)   # budget: one FETCH_SIZE
        async with trio.open_nursery() as nursery:
            src = await _source(store, objects, cache, nursery, "slow.bin", data)
            real, real_blocks = src.reader.read_cipher, src.reader.read_cipher_blocks

            async def recording(offset: int, length: int) -> bytes:
                issued.append((offset, src._last_end))
                return await real(offset, length)

            async def recording_blocks(offset: int, length: int, block: int) -> list[bytes]:
                issued.append((offset, src._last_end))
                return await real_blocks(offset, length, block)
            src.reader.read_cipher = recording
            src.reader.read_cipher_blocks = recording_blocks
            emulator.set_faults(bandwidth_mbps=100)            # 12.5 MB/s per connection
            try:
                got = bytearray()
                for off in range(0, len(data), 128 * 1024):
                    got += await src.read(off, 128 * 1024)
                    await trio.sleep(0)                        # as between FUSE requests
            finally:
                emulator.set_faults(bandwidth_mbps=0)
            assert bytes(got) == data
            assert cache.fetch_cost.slow_connection()
    trio.run(main)
    ahead = [(start, pos) for start, pos in issued if start >= 2 * MiB]   # after the ramp
    assert len(ahead) >= 3, issued
    assert all(start - pos >= 256 * 1024 for start, pos in ahead), issued


def test_random_small_reads_fetch_at_most_one_block(store, rsa_key_path, tmp_path):
    data = payload(6 * MiB, seed=2)
    objects = _objects(store, rsa_key_path)
    rnd = random.Random(7)

    async def main():
        cache = BlockCache(str(tmp_path / "blocks"))
        async with trio.open_nursery() as nursery:
            src = await _source(store, objects, cache, nursery, "rand.bin", data)
            for _ in range(40):
                off = rnd.randrange(len(data) - 4096)
                fetched = store.bytes_fetched
                assert await src.read(off, 4096) == data[off:off + 4096]
                # a 4 KiB read inside one block costs at most that block, unless it straddles two
                limit = 2 if off // cache.block_size != (off + 4095) // cache.block_size else 1
                assert store.bytes_fetched - fetched <= limit * cache.block_size
    trio.run(main)


def test_concurrent_readers_share_gets(store, rsa_key_path, tmp_path):
    data = payload(3 * MiB, seed=3)
    objects = _objects(store, rsa_key_path)

    async def main():
        cache = BlockCache(str(tmp_path / "blocks"))
        async with trio.open_nursery() as nursery:
            src = await _source(store, objects, cache, nursery, "shared.bin", data)
            before = store.bytes_fetched
            results: dict[int, bytes] = {}

            async def whole(i: int) -> None:
                results[i] = bytes(await src.cipher_range(0, len(data)))
            async with trio.open_nursery() as readers:
                for i in range(4):
                    readers.start_soon(whole, i)
            assert len(set(results.values())) == 1
            assert store.bytes_fetched - before == len(data)    # every block fetched once
            assert src.reader.decrypt(0, results[0]) == data
    trio.run(main)


def test_the_window_opens_after_the_same_bytes_whatever_the_request_size(store, rsa_key_path,
                                                                         tmp_path):
    """With the kernel's read-ahead raised, a stream arrives as 1 MiB requests instead of
    128 KiB ones. The window must open and grow per byte read in a row, not per request: counted
    per request, two 1 MiB reads opened no window at all, and a stream over a slow link waited
    for each GET in turn for its first megabytes."""
    data = payload(12 * MiB, seed=11)
    objects = _objects(store, rsa_key_path)

    async def ahead_after(request: int, upto: int) -> int:
        """Bytes asked to be fetched ahead once [0, upto) was read in ``request``-byte reads."""
        cache = BlockCache(str(tmp_path / f"blocks-{request}"))
        asked: list[tuple[int, int]] = []
        async with trio.open_nursery() as nursery:
            reader = await objects.open_reader("ramp.bin")

            def spawn(fn) -> bool:
                if isinstance(fn, functools.partial):    # a read-ahead: (first, last block)
                    asked.append(fn.args)
                nursery.start_soon(fn)
                return True
            src = BlockSource(cache, reader, "ramp.bin", reader.info.etag, reader.size, spawn)
            for off in range(0, upto, request):
                assert await src.read(off, request) == data[off:off + request]
        return sum(last - first + 1 for first, last in asked) * cache.block_size

    async def main():
        await objects.write("ramp.bin", data, len(data))
        small = await ahead_after(128 * 1024, 2 * MiB)
        large = await ahead_after(MiB, 2 * MiB)
        assert small >= 4 * MiB, small
        assert large >= small - readahead.FETCH_SIZE, (large, small)   # within one GET
    trio.run(main)


def test_streams_that_start_later_keep_all_read_ahead_within_the_budget(store, rsa_key_path,
                                                                       tmp_path):
    """A stream alone may fetch its whole share (the budget) ahead; one that starts later gets
    only what the first leaves of the budget until the first one reads on. Counted per
    stream's share alone, the second asked for half the budget on top of the first's whole
    one, and eight such readers overflowed the in-memory cache (1.55x the bytes fetched)."""
    size = 24 * MiB
    objects = _objects(store, rsa_key_path)

    async def main():
        cache = BlockCache(str(tmp_path / "blocks"))
        budget = cache.streams.budget
        asked: dict[str, int] = {"a.bin": 0, "b.bin": 0}
        async with trio.open_nursery() as nursery:
            sources = {}
            for key in asked:
                await objects.write(key, payload(size, seed=len(sources)), size)
                reader = await objects.open_reader(key)

                def spawn(fn, key=key) -> bool:
                    if isinstance(fn, functools.partial):
                        first, last = fn.args
                        asked[key] += (last - first + 1) * cache.block_size
                    nursery.start_soon(fn)
                    return True
                sources[key] = BlockSource(cache, reader, key, reader.info.etag, size, spawn)
            for key in asked:                     # a reads 2 MiB, then b does
                for off in range(0, 2 * MiB, MiB):
                    await sources[key].read(off, MiB)
        assert asked["a.bin"] >= 16 * MiB, asked            # alone: a large window
        assert asked["a.bin"] + asked["b.bin"] <= budget + readahead.FETCH_SIZE + 2 * MiB, asked
    trio.run(main)



def test_the_window_stays_smaller_where_connections_are_fast(store, rsa_key_path, tmp_path,
                                                              monkeypatch):
    """Where one connection is fast the window stops at ``FAST_WINDOW``: it reads as fast, and
    every byte of the window may wait in memory; over slow connections it grows to
    ``max_window``, in GETs of ``SLOW_FETCH_SIZE`` (many GETs at once keep a slow link busy,
    and smaller ones reach the reader sooner)."""
    from ossencfs.fs.fetchcost import FetchCost
    monkeypatch.setattr(readahead, "FAST_WINDOW", 4 * MiB)
    data = payload(24 * MiB + 99, seed=7)
    objects = _objects(store, rsa_key_path)

    async def read_all(slow: bool) -> tuple[int, int, int]:
        monkeypatch.setattr(FetchCost, "slow_connection", lambda self: slow)
        cache = BlockCache(None)
        gets = store.requests["get"]
        async with trio.open_nursery() as nursery:
            reader = await objects.open_reader("fast.bin")
            src = BlockSource(cache, reader, "fast.bin", reader.info.etag, reader.size,
                              lambda fn: (nursery.start_soon(fn), True)[1], max_window=12 * MiB)
            window = peak = 0
            for off in range(0, len(data), 128 * 1024):
                assert await src.read(off, 128 * 1024) == data[off:off + 128 * 1024]
                await trio.sleep(0)                            # as between FUSE requests
                window, peak = max(window, src._window), max(peak, cache.memory_bytes)
        return window * cache.block_size, peak, store.requests["get"] - gets

    async def main():
        await objects.write("fast.bin", data, len(data))
        fast_window, fast_peak, fast_gets = await read_all(slow=False)
        slow_window, _, slow_gets = await read_all(slow=True)
        assert fast_window == 4 * MiB and slow_window == 12 * MiB
        assert fast_peak <= 4 * MiB + readahead.FETCH_SIZE + 2 * 256 * 1024, fast_peak
        # GETs of FETCH_SIZE where connections are fast, of SLOW_FETCH_SIZE where slow
        assert fast_gets <= len(data) // readahead.FETCH_SIZE + 6, fast_gets
        assert slow_gets >= len(data) // readahead.SLOW_FETCH_SIZE, slow_gets
    trio.run(main)


def test_blocks_of_random_reads_stay_within_their_share_of_memory(store, rsa_key_path,
                                                                   tmp_path, monkeypatch):
    """Where whole blocks pay for reads that seek (loopback), the blocks they fetch are kept
    in memory only within ``BlockCache.seeking_bytes``; later reads that land in one come from
    memory or the disk cache, not from another GET."""
    from ossencfs.fs.fetchcost import FetchCost
    monkeypatch.setattr(FetchCost, "whole_block_pays", lambda self, block, fragment: True)
    data = payload(16 * MiB, seed=8)
    objects = _objects(store, rsa_key_path)
    rnd = random.Random(3)
    offsets = [rnd.randrange(0, len(data) - 4096) for _ in range(60)]

    async def main():
        cache = BlockCache(str(tmp_path / "blocks"))
        cache.seeking_bytes = MiB
        async with trio.open_nursery() as nursery:
            src = await _source(store, objects, cache, nursery, "rand.bin", data)
            for off in offsets:
                assert await src.read(off, 4096) == data[off:off + 4096]
                await trio.sleep(0)
                assert 0 < cache.memory_bytes <= MiB
            gets = store.requests["get"]
            for off in offsets:                          # again: memory, else disk
                assert await src.read(off, 4096) == data[off:off + 4096]
            assert store.requests["get"] == gets
    trio.run(main)
