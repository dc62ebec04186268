"""Block cache of object *ciphertext*: on disk (size-capped LRU) plus a small hot set in memory.

Blocks are keyed by (object key, ETag, block index), so a changed object simply misses; stale
entries age out by LRU. Only ciphertext is stored, exactly as OSS returned it, which keeps the
"no plaintext on local disk" rule trivially true: decryption happens per read, on the slice
that is returned. Blocks of *plain* (unencrypted) objects are kept in memory only, because their
"ciphertext" is plaintext.

Fetches of the same block are de-duplicated (one GET, every waiter gets the result).

``--cache-size`` caps blocks *plus* staged (unsent) data: ``reserved()`` says how much the
staging area holds, and only clean blocks are ever evicted to make room. A block that cannot
be stored (limit reached by staged data, or ENOSPC from the OS) is simply not cached.

The cache file system is watched too, since ``--cache-size`` may be larger than it (the
default 1 GiB on a small disk) and other programs share it: clean blocks are written only
while the file system keeps ``disk_reserve`` bytes free, older blocks are evicted to make
room for newer ones (and at start, when an earlier mount or another program took the space),
and ``make_disk_room`` evicts them for staged data, which may use the reserve.
"""
from __future__ import annotations

import collections
import errno
import hashlib
import logging
import os
from typing import Callable

import trio

from ..atomicfile import replace_file
from .fetchcost import FetchCost
from .readbudget import ReadAheadStreams

log = logging.getLogger(__name__)

BLOCK_SIZE = 256 * 1024          # multiple of 16, so every block starts on a CTR block boundary
RESERVE_MAX = 1 << 30            # the free space kept for others: a tenth of the disk, at most this


def disk_reserve(directory: str) -> int:
    """Bytes of the file system holding ``directory`` that clean blocks leave free: a tenth
    of its size, at most ``RESERVE_MAX`` (blocking: one statvfs)."""
    st = os.statvfs(directory)
    return min(RESERVE_MAX, st.f_blocks * st.f_frsize // 10)


def disk_free(directory: str) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``directory``."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


#: memory a block kept in memory takes besides its bytes: its name (a 32-byte ``bytes``: 65
#: bytes), the ``bytes`` object's header (33) and its slot in the LRU (dict entry, index and
#: ordered-dict link, in a table that LRU churn keeps up to ~3x larger than its entries):
#: 170-260 bytes measured, so 320. Counted against ``hot_bytes`` with each block: the hot set
#: holds the whole body of every small file a listing's first stat fetched (``freshness``),
#: and 10,000 bodies of 64 bytes took ~2.8 MB where 640 KB were counted (issue 17).
#: tests/unit/test_block_cache.py checks the bound.
HOT_ENTRY_OVERHEAD = 320

#: bytes of the in-memory set that blocks fetched for reads that seek may take (``settle``
#: with ``seeking``). They wait for no reader: they are kept for reads that land in them later,
#: and an encrypted object's blocks are on disk as well. With the whole hot set theirs, 500
#: random 4 KiB reads of a 256 MiB file on loopback (a block each) peaked at 128-133 MiB of
#: RSS, the process's ~60 at idle plus 64 MiB of such blocks (issue 17: at most 100 MiB).
SEEKING_HOT_BYTES = 16 << 20


def _name(key: str, etag: str, index: int) -> bytes:
    """A block's name: SHA-256 of (key, ETag, index). Kept as the digest (65 bytes as a
    ``bytes``, 113 as the hex string); its file on disk is named by the hex form."""
    return hashlib.sha256(f"{key}\0{etag}\0{index}".encode()).digest()


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class BlockCache:
    """LRU of ciphertext blocks; disk I/O runs in worker threads."""

    def __init__(self, directory: str | None, *, block_size: int = BLOCK_SIZE,
                 max_bytes: int = 1 << 30, hot_bytes: int = 64 << 20) -> None:
        assert block_size % 16 == 0
        self.block_size = block_size
        self.directory = directory
        self.max_bytes = max_bytes
        self.hot_bytes = hot_bytes
        self._disk: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self._disk_bytes = 0
        self._hot: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self._hot_used = 0           # bytes of the blocks plus HOT_ENTRY_OVERHEAD each
        self.seeking_bytes = min(hot_bytes, SEEKING_HOT_BYTES)
        self._seeking_blocks: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self._seeking_used = 0       # the part of _hot_used of blocks fetched for seeking reads
        self._inflight: dict[bytes, trio.Event] = {}
        self.hits = 0
        self.misses = 0
        self.reserved: Callable[[], int] = lambda: 0     # staged bytes sharing the limit
        self.fetch_cost = FetchCost()    # GET times of every reader of this mount's blocks
        # blocks fetched ahead wait here in memory: all readers together stay within half of it
        self.streams = ReadAheadStreams(hot_bytes // 2)
        # background block writes: few threads, and a cap on the bytes they hold, so a slow
        # cache disk costs cache hits rather than memory
        self._disk_limiter = trio.CapacityLimiter(2)
        self._writing_bytes = 0
        self._writing_max = 64 << 20
        self.disk_reserve = 0
        self._full = False           # the cache file system refused a block (warned once)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self.disk_reserve = disk_reserve(directory)
            self._scan()

    def _scan(self) -> None:
        """Adopt blocks left by an earlier mount, oldest access first."""
        entries = []
        assert self.directory
        for entry in os.scandir(self.directory):
            if entry.is_file() and len(entry.name) == 64:
                try:
                    name = bytes.fromhex(entry.name)
                except ValueError:
                    continue             # not a block's name: not ours to adopt or evict
                st = entry.stat()
                entries.append((st.st_atime, name, st.st_size))
            elif entry.is_file() and entry.name.endswith(".tmp"):
                os.unlink(entry.path)
        for _, name, size in sorted(entries):
            self._disk[name] = size
            self._disk_bytes += size
        self._evict_disk_sync()
        _unlink_all(self._pop_for_free(self.disk_reserve))

    # -- memory -----------------------------------------------------------------------------
    def _hot_put(self, name: bytes, data: bytes, seeking: bool = False) -> None:
        """Keep a block in memory; least recently used ones go while the blocks and what
        keeping each costs (``HOT_ENTRY_OVERHEAD``) exceed ``hot_bytes``, and those of
        ``seeking`` reads while theirs exceed ``seeking_bytes``."""
        cost = len(data) + HOT_ENTRY_OVERHEAD
        if cost > (self.seeking_bytes if seeking else self.hot_bytes):
            return
        self._hot_drop(name)
        self._hot[name] = data
        self._hot_used += cost
        if seeking:
            self._seeking_blocks[name] = cost
            self._seeking_used += cost
            while self._seeking_used > self.seeking_bytes:
                self._hot_drop(next(iter(self._seeking_blocks)))
        while self._hot_used > self.hot_bytes and self._hot:
            self._hot_drop(next(iter(self._hot)))

    def _hot_drop(self, name: bytes) -> None:
        """Forget a block kept in memory, if it is."""
        data = self._hot.pop(name, None)
        if data is not None:
            self._hot_used -= len(data) + HOT_ENTRY_OVERHEAD
            self._seeking_used -= self._seeking_blocks.pop(name, 0)

    # -- disk -------------------------------------------------------------------------------
    def _path(self, name: bytes) -> str:
        assert self.directory
        return os.path.join(self.directory, name.hex())

    def _evict_disk_sync(self) -> None:
        self.evict_to(self.max_bytes - self.reserved())

    def _pop_lru(self, target: int) -> list[str]:
        """Forget least recently used clean blocks until they take at most ``target`` bytes;
        returns their paths (the LRU dict is only touched in the loop)."""
        doomed: list[str] = []
        while self._disk_bytes > max(0, target) and self._disk:
            name, size = self._disk.popitem(last=False)
            self._disk_bytes -= size
            doomed.append(self._path(name))
        return doomed

    def _pop_for_free(self, want: int) -> list[str]:
        """Forget least recently used clean blocks until deleting them would leave ``want``
        bytes free on the cache file system (or none are left); returns their paths."""
        if not self._disk:
            return []
        try:
            short = want - disk_free(self.directory or ".")
        except OSError:
            return []
        doomed: list[str] = []
        while short > 0 and self._disk:
            name, size = self._disk.popitem(last=False)
            self._disk_bytes -= size
            short -= size
            doomed.append(self._path(name))
        return doomed

    async def make_disk_room(self, n: int) -> None:
        """Room for ``n`` bytes of staged data on the cache file system: clean blocks are
        evicted (oldest first) until ``n`` plus the reserve are free, or none is left. Staged
        data may use the reserve; the OS answers ENOSPC only when it has no room itself."""
        doomed = self._pop_for_free(n + self.disk_reserve)
        if doomed:
            await trio.to_thread.run_sync(_unlink_all, doomed)

    def _fits_disk(self, n: int) -> bool:
        """Whether a block of ``n`` bytes still leaves the reserve free (blocking)."""
        try:
            return disk_free(self.directory or ".") - n >= self.disk_reserve
        except OSError:
            return False

    def evict_to(self, target: int) -> None:
        """Blocking eviction (startup, before the loop serves anything)."""
        _unlink_all(self._pop_lru(target))

    async def make_room(self, target: int) -> None:
        """Eviction from the loop: thousands of unlinks on a slow disk run in a worker thread,
        and are done before the caller writes into the room made."""
        doomed = self._pop_lru(target)
        if doomed:
            await trio.to_thread.run_sync(_unlink_all, doomed)

    def _read_disk(self, name: bytes) -> bytes | None:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _write_disk(self, name: bytes, data: bytes) -> None:
        if not self._fits_disk(len(data)):
            raise OSError(errno.ENOSPC, "cache file system is at its reserve")
        replace_file(self._path(name), data)

    # -- API (fs.readahead: a block is claimed, fetched with its neighbours in one GET, settled
    # in memory, then stored on disk in the background) -------------------------------------
    def peek(self, key: str, etag: str, index: int) -> bytes | None:
        """The block if it is in memory: no await, so a hit costs no scheduling."""
        name = _name(key, etag, index)
        data = self._hot.get(name)
        if data is not None:
            self._hot.move_to_end(name)
            if name in self._seeking_blocks:
                self._seeking_blocks.move_to_end(name)
            self.hits += 1
        return data

    def in_memory(self, key: str, etag: str, index: int) -> bool:
        return _name(key, etag, index) in self._hot

    def release(self, key: str, etag: str, indices: range) -> None:
        """Drop blocks a sequential reader has read past from memory (no await). The kernel's
        page cache holds their plaintext, and the first ``readahead.STREAM_DISK_LIMIT`` bytes
        of the run are on disk: kept here, they only took the memory of the blocks still
        ahead of the reader (peak RSS of a 128 MiB read, cloud: 161 MiB, 59 of them at idle)."""
        for index in indices:
            self._hot_drop(_name(key, etag, index))

    def on_disk(self, key: str, etag: str, index: int) -> bool:
        return bool(self.directory) and _name(key, etag, index) in self._disk

    def pending(self, key: str, etag: str, index: int) -> trio.Event | None:
        """The event of a fetch of this block already under way, if any."""
        return self._inflight.get(_name(key, etag, index))

    def claim(self, key: str, etag: str, index: int) -> None:
        """Announce that the caller fetches this block; others wait instead of fetching it too.
        The caller must ``settle`` it, with or without data."""
        name = _name(key, etag, index)
        assert name not in self._inflight
        self._inflight[name] = trio.Event()
        self.misses += 1

    def settle(self, key: str, etag: str, index: int, data: bytes | None, *,
               seeking: bool = False) -> None:
        """End a claim: keep the block in memory (if fetched; within ``seeking_bytes`` when it
        was fetched for a read that seeks, which no reader waits for) and wake the waiters."""
        name = _name(key, etag, index)
        if data is not None:
            self._hot_put(name, data, seeking)
        event = self._inflight.pop(name, None)
        if event is not None:
            event.set()

    async def store_disk(self, key: str, etag: str, blocks: list[tuple[int, bytes]]) -> None:
        """Write freshly fetched blocks to disk in one worker-thread job (read-ahead runs this
        in the background, so a read never waits for the cache disk). Blocks that do not fit
        under the limit, or that the disk refuses, are simply not cached."""
        if not self.directory:
            return
        todo: list[tuple[bytes, bytes]] = []
        for index, data in blocks:
            name = _name(key, etag, index)
            if name in self._disk or self._writing_bytes + len(data) > self._writing_max:
                continue
            if self.reserved() + len(data) > self.max_bytes:
                continue
            todo.append((name, data))
        if not todo:
            return
        size = sum(len(d) for _, d in todo)
        await self.make_disk_room(size)             # older blocks make room for newer ones
        self._writing_bytes += size
        try:
            written = await trio.to_thread.run_sync(self._write_many, todo,
                                                    limiter=self._disk_limiter)
        finally:
            self._writing_bytes -= size
        for name, n in written:
            if name not in self._disk:
                self._disk[name] = n
                self._disk_bytes += n
        if self._disk_bytes + self.reserved() > self.max_bytes:
            await self.make_room(self.max_bytes - self.reserved())

    def _write_many(self, todo: list[tuple[bytes, bytes]]) -> list[tuple[bytes, int]]:
        done = []
        for name, data in todo:
            try:
                self._write_disk(name, data)
            except OSError as exc:   # a full cache disk only costs performance
                self._not_stored(exc)
                break
            self._full = False
            done.append((name, len(data)))
        return done

    def _not_stored(self, exc: OSError) -> None:
        """One warning when the cache file system fills (not one per block), until a block
        is stored again; other errors each get theirs."""
        if exc.errno == errno.ENOSPC:
            if not self._full:
                log.warning("block cache: %s: %s; blocks are not cached until space frees",
                            self.directory, exc.strerror or exc)
            self._full = True
            return
        log.warning("block cache: cannot store a block: %s", exc)

    async def load_disk(self, key: str, etag: str, indices: list[int], *,
                        seeking: bool = False) -> dict[int, bytes]:
        """Blocks of ``indices`` found on disk, read in one worker-thread job, then kept in
        memory as ``settle`` keeps them."""
        if not self.directory:
            return {}
        names = {i: _name(key, etag, i) for i in indices}
        names = {i: n for i, n in names.items() if n in self._disk}
        if not names:
            return {}
        for n in names.values():
            self._disk.move_to_end(n)
        found = await trio.to_thread.run_sync(
            lambda: {i: self._read_disk(n) for i, n in names.items()})
        out: dict[int, bytes] = {}
        for i, data in found.items():
            if data is None:
                self._disk_bytes -= self._disk.pop(names[i], 0)
                continue
            self.hits += 1
            self._hot_put(names[i], data, seeking)
            out[i] = data
        return out

    @property
    def disk_bytes(self) -> int:
        return self._disk_bytes

    @property
    def memory_bytes(self) -> int:
        """Bytes the in-memory blocks take, with ``HOT_ENTRY_OVERHEAD`` each (at most
        ``hot_bytes``)."""
        return self._hot_used
