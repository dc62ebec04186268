"""``fs.cache.BlockCache``'s hot set is bounded in real memory: what keeping a block costs
besides its bytes (its name, the ``bytes`` header, the LRU's slot) counts against
``hot_bytes`` too, so a set of many small blocks (the whole body of every small file a
listing's first stat fetched) stays within it (issue 17)."""
from __future__ import annotations

import gc
import tracemalloc

import trio

from ossencfs.fs.cache import HOT_ENTRY_OVERHEAD, BlockCache


def _hot_memory(cache: BlockCache, blocks: int, size: int) -> int:
    """Bytes Python holds after ``blocks`` blocks of ``size`` bytes went to the hot set."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(blocks):
            key = f"dir/file-{i:06d}"
            cache.claim(key, "0123456789ABCDEF0123456789ABCDEF", 0)
            cache.settle(key, "0123456789ABCDEF0123456789ABCDEF", 0, bytes([i % 251]) * size)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_many_small_blocks_stay_within_the_hot_budget():
    budget = 1 << 20
    cache = BlockCache(None, hot_bytes=budget)
    used = _hot_memory(cache, 20_000, 64)      # 1.28 MB of bodies: 4 MB if only they count
    assert used <= budget, used
    kept = sum(cache.in_memory(f"dir/file-{i:06d}", "0123456789ABCDEF0123456789ABCDEF", 0)
               for i in range(20_000))
    assert kept == budget // (64 + HOT_ENTRY_OVERHEAD)     # the most recent ones
    assert cache.peek("dir/file-019999", "0123456789ABCDEF0123456789ABCDEF", 0) == \
        bytes([19_999 % 251]) * 64


def test_a_large_block_costs_what_it_holds():
    """Blocks of the mount's size (256 KiB) are counted much as before: four fit in 1 MiB
    plus four entries' overhead."""
    cache = BlockCache(None, hot_bytes=4 * ((256 << 10) + HOT_ENTRY_OVERHEAD))
    for i in range(5):
        cache.settle("big", "E", i, bytes(256 << 10))
    assert [cache.in_memory("big", "E", i) for i in range(5)] == [False, True, True, True, True]


def test_only_block_files_are_adopted(tmp_path):
    """Blocks are kept by their 32-byte name in memory, their file named by its hex form: a
    new cache adopts (and may evict) those files, and leaves alone any other file of 64
    characters, which it did not make."""
    blocks = tmp_path / "blocks"
    cache = BlockCache(str(blocks), max_bytes=1 << 20)
    cache.settle("k", "E", 0, b"x" * 100)
    trio.run(cache.store_disk, "k", "E", [(0, b"x" * 100)])
    (name,) = [p.name for p in blocks.iterdir()]
    assert len(name) == 64 and int(name, 16) >= 0
    stranger = blocks / ("z" * 64)
    stranger.write_bytes(b"not a block")
    again = BlockCache(str(blocks), max_bytes=1 << 20)
    assert again.on_disk("k", "E", 0) and again.disk_bytes == 100
    BlockCache(str(blocks), max_bytes=0)           # evicts every adopted block
    assert sorted(p.name for p in blocks.iterdir()) == [stranger.name]


def test_blocks_of_reads_that_seek_take_only_their_share_of_memory():
    """Blocks fetched for reads that seek wait for no reader (an encrypted object's are on
    disk too): they take at most ``seeking_bytes`` of the hot set, and their churn does not
    push out blocks fetched ahead for a stream. With the whole hot set theirs, 500 random
    reads on loopback peaked at 128-133 MiB of RSS (issue 17)."""
    block = 256 << 10
    cache = BlockCache(None, hot_bytes=8 * (block + HOT_ENTRY_OVERHEAD))
    cache.seeking_bytes = 3 * (block + HOT_ENTRY_OVERHEAD)
    for i in range(4):                                   # a stream's read-ahead
        cache.settle("stream", "E", i, bytes(block))
    for i in range(20):                                  # random reads, a block each
        cache.settle("random", "E", i, bytes(block), seeking=True)
        assert cache.memory_bytes <= 7 * (block + HOT_ENTRY_OVERHEAD)
    assert all(cache.in_memory("stream", "E", i) for i in range(4))
    assert [i for i in range(20) if cache.in_memory("random", "E", i)] == [17, 18, 19]
    assert cache.peek("random", "E", 17) is not None     # used again: the last to go
    cache.settle("random", "E", 20, bytes(block), seeking=True)
    assert [i for i in range(21) if cache.in_memory("random", "E", i)] == [17, 19, 20]
    cache.release("random", "E", range(21))              # and the share is given back
    for i in range(3):
        cache.settle("again", "E", i, bytes(block), seeking=True)
    assert all(cache.in_memory("again", "E", i) for i in range(3))
    assert cache.memory_bytes == 7 * (block + HOT_ENTRY_OVERHEAD)
