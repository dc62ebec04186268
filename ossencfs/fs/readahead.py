"""Plaintext reads of one object version through the ciphertext block cache, with read-ahead.

A read costs what it reads: only the blocks that cover the request are fetched (ranged GETs,
16-byte aligned because blocks are), and only the requested slice is decrypted. Sequential
access doubles a read-ahead window (up to ``max_window`` bytes) which is fetched in the
background, several GETs at once; a seek resets it.

Every byte of the window may be in memory (GETs under way keep what has arrived), so it is as
small as reads allow (issue 17: peak RSS at most 100 MiB). Where one connection is slow
(``FetchCost.slow_connection``) a reader is fed by many GETs at once, and smaller GETs feed it
sooner: over the cloud profile (20 ms, 50 Mbit/s per connection) a 256 MiB read with a 32 MiB
window of 2 MiB GETs took 3.16 s and peaked at 103 MiB of RSS; with 1 MiB GETs
(``SLOW_FETCH_SIZE``) 2.15-2.29 s and 101-104 MiB, and with a 24 MiB window of them
(``MAX_WINDOW``) 2.31-2.45 s and 97-98 MiB. Where connections are fast a few 2 MiB GETs keep
up (``FAST_WINDOW``; loopback: 1.02-1.09 s for 256 MiB, peak 86-89 MiB; 1 MiB GETs: 1.42-1.55 s).

Missing blocks that are next to each other are fetched with *one* ranged GET of up to
``fetch_size`` bytes and split into cache blocks: per-request overhead (signing, HTTP, a
thread hop) dominated streaming reads when every 256 KiB block was its own GET. Read-ahead
issues its GETs only once a whole ``fetch_size`` of the window is unfetched, so that steady
streaming keeps that size instead of degenerating into one block per GET. Where each
connection is slow, read-ahead GETs are ``SLOW_FETCH_SIZE``, and a window smaller than two
of them (a stream's share of the read-ahead budget, ``readbudget``, when many read at once) is fetched
in halves: with one GET per window a reader waited for each GET in turn on one connection, and
16 readers over the cloud profile's link (20 ms, 50 Mbit/s per connection) read at 0.67x the
rate of 16 CryptoBucket threads (``scripts/bench_scale.py``). On a fast link the halves only
cost requests (16 readers on loopback: 0.89x -> 0.73-0.80x), so they are not made there.

Read pattern per handle: a read that seeks (it does not continue the previous one, and is not
the first read at offset 0) and is smaller than a block fetches only its own range, widened to
4 KiB pages plus a 4 KiB margin, unless its blocks are cached already or the link makes a
whole block nearly as cheap as that range (``fetchcost``: measured GET times; on loopback a
block costs little more than a page and later random reads often land in it, over a slow
link it costs twice the request); those ranges are kept in a few per-handle fragments, not
in the block cache. Three sequential reads switch back to
blocks and the growing window. Fetched blocks go to the on-disk cache in the background
(one worker-thread job per GET): a read never waits for the cache disk.

Scan resistance: a long sequential run caches only its first ``STREAM_DISK_LIMIT`` bytes on
disk; the rest is kept in memory until read, and every block leaves memory once the reader is
past it (``_release``). Creating a cache file per block was the largest
remaining cost of streaming, a re-read while mounted comes from the kernel page cache anyway,
and a 1 GiB copy would otherwise evict the whole random-access working set from the cache.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Awaitable, Callable, Protocol

import trio

from ..envelope.ctr import in_thread
from ..errors import NetworkError
from .cache import BlockCache

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 120.0
FETCH_SIZE = 2 << 20          # bytes per read-ahead GET (a multiple of the block size)
MAX_WINDOW = 24 << 20        # read-ahead window where connections are slow ...
FAST_WINDOW = 16 << 20       # ... and where they are fast (not ``slow_connection``)
SLOW_FETCH_SIZE = 1 << 20    # bytes per read-ahead GET where connections are slow
STREAM_DISK_LIMIT = 16 << 20  # a sequential run caches only its first 16 MiB on disk
RANDOM_ALIGN = 4 << 10         # a read that seeks fetches whole 4 KiB pages ...
RANDOM_MARGIN = 4 << 10        # ... and this much more (the kernel often asks for it next)
SEQUENTIAL_GAP = 64 << 10      # a read this far past the previous one still continues it
SEQUENTIAL_STEP = 128 << 10    # the window grows per this many bytes read in a row (one step)
RANDOM_FRAGMENTS = 8           # fetched ranges a handle keeps for reads that follow
KERNEL_READAHEAD_KB = 4096     # the kernel's read-ahead on the mount (raise_kernel_readahead)


class CipherReader(Protocol):
    encrypted: bool

    async def read_cipher(self, offset: int, length: int) -> bytes: ...   # [offset, offset+length)
    def decrypt(self, offset: int, cipher: bytes | memoryview) -> bytes: ...


class BlockSource:
    def __init__(self, cache: BlockCache, reader: CipherReader, key: str, etag: str, size: int,
                 spawn: Callable[[Callable[[], Awaitable[object]]], bool], *,
                 max_window: int = MAX_WINDOW, fetch_size: int = FETCH_SIZE) -> None:
        self.cache = cache
        self.reader = reader
        self.key = key
        self.etag = etag
        self.size = size
        self._spawn = spawn
        self._bs = cache.block_size
        self._fetch_blocks = max(1, fetch_size // self._bs)
        self._max_window = max(1, max_window // self._bs)       # in blocks
        self._last_block = max(0, (size - 1) // self._bs)
        self._window = 0
        self._sequential = 0
        self._last_end = -1
        self._prefetched_to = -1
        self._run_start = 0
        # read pattern: a read that seeks fetches only its range (``_fragment``) until a few
        # sequential reads open the read-ahead window again
        self._seeking = False
        self._fragments: list[tuple[int, bytes]] = []
        self._released_to = 0         # blocks below this one are dropped from memory (``_release``)
        self._reading: list[int] = []   # offsets of this handle's reads under way

    # ------------------------------------------------------------------ fetching
    async def _fetch_run(self, first: int, last: int) -> dict[int, bytes]:
        """One ranged GET for blocks first..last (all claimed by us), split into blocks.

        Every claimed block is settled whatever happens, so waiters never hang; the disk copy
        is written in the background."""
        start = first * self._bs
        end = min((last + 1) * self._bs, self.size) - 1
        got: dict[int, bytes] = {}
        seeking = self._seeking and not self._window     # no reader waits for the blocks
        try:
            pieces = await self._timed_get(start, end + 1, in_blocks=first != last)
            if sum(map(len, pieces)) != end - start + 1:
                raise NetworkError(f"{self.key}: short ranged GET {start}-{end} "
                                   f"({sum(map(len, pieces))} bytes)")
            got = dict(zip(range(first, last + 1), pieces))
        finally:
            for i in range(first, last + 1):
                self.cache.settle(self.key, self.etag, i, got.get(i), seeking=seeking)
        if got and self.reader.encrypted and self.cache.directory \
                and start - self._run_start < STREAM_DISK_LIMIT:
            blocks = sorted(got.items())
            if not self._spawn(lambda: self.cache.store_disk(self.key, self.etag, blocks)):
                await self.cache.store_disk(self.key, self.etag, blocks)
        return got

    async def _load(self, indices: list[int], out: dict[int, bytes]) -> None:
        """Fill ``out`` with blocks ``indices``: memory, disk, else a GET per run of adjacent
        missing blocks, else wait for a fetch already under way."""
        for i in indices:
            data = self.cache.peek(self.key, self.etag, i)
            if data is not None:
                out[i] = data
        on_disk = [i for i in indices
                   if i not in out and self.cache.on_disk(self.key, self.etag, i)]
        if on_disk:
            out.update(await self.cache.load_disk(self.key, self.etag, on_disk,
                                                  seeking=self._seeking and not self._window))
        waits: list[tuple[int, trio.Event]] = []
        mine: list[int] = []
        for i in indices:
            if i in out:
                continue
            data = self.cache.peek(self.key, self.etag, i)     # arrived while we read the disk
            if data is not None:
                out[i] = data
                continue
            event = self.cache.pending(self.key, self.etag, i)
            if event is not None:
                waits.append((i, event))
            else:
                self.cache.claim(self.key, self.etag, i)
                mine.append(i)
        runs = _runs(mine, self._fetch_blocks)
        if len(runs) == 1:
            out.update(await self._fetch_run(*runs[0]))
        elif runs:
            async def one(first: int, last: int) -> None:
                out.update(await self._fetch_run(first, last))
            async with trio.open_nursery() as nursery:
                for first, last in runs:
                    nursery.start_soon(one, first, last)
        again: list[int] = []
        for i, event in waits:
            await event.wait()
            data = self.cache.peek(self.key, self.etag, i)
            if data is None:            # the other fetch failed, or the block was evicted
                again.append(i)
            else:
                out[i] = data
        if again:
            await self._load(again, out)

    async def blocks(self, first: int, last: int) -> list[bytes]:
        out: dict[int, bytes] = {}
        await self._load(list(range(first, last + 1)), out)
        return [out[i] for i in range(first, last + 1)]

    async def block(self, index: int) -> bytes:
        return (await self.blocks(index, index))[0]

    async def cipher_range(self, off: int, n: int) -> bytes | memoryview:
        """Ciphertext of [off, off+n) (clipped at EOF), fetching missing blocks."""
        end = min(off + n, self.size)
        if end <= off:
            return b""
        first, last = off // self._bs, (end - 1) // self._bs
        parts = await self.blocks(first, last)
        joined = parts[0] if len(parts) == 1 else b"".join(parts)
        rel = off - first * self._bs
        if rel == 0 and len(joined) == end - off:
            return joined
        return memoryview(joined)[rel:rel + (end - off)]

    async def read(self, off: int, n: int) -> bytes:
        """Plaintext of [off, off+n) clipped at EOF."""
        end = min(off + n, self.size)
        if end <= off:
            return b""
        if getattr(self.reader, "direct", False):       # CBC: no counter, no block cache
            return await self.reader.read(off, end - off)   # type: ignore[attr-defined]
        started = getattr(self.reader, "read_started", None)
        if started is not None:
            started(off)
        self._advance_window(off, end)
        self._reading.append(off)
        try:
            if self._seeking and end - off < self._bs and not self._all_near(off, end) and \
                    not self.cache.fetch_cost.whole_block_pays(self._bs,
                                                               _fragment_size(off, end)):
                cipher = await self._fragment(off, end)
            else:
                cipher = await self.cipher_range(off, end - off)
            note_read = getattr(self.reader, "note_read", None)
            if note_read is not None:   # GCM: a read reaching the end after one from 0 is checked
                await note_read(off, cipher, self.cipher_range)   # (it may need earlier blocks)
            elif self._window:
                self._release()
        finally:
            self._reading.remove(off)
        if not self.reader.encrypted:
            return bytes(cipher)
        if in_thread(len(cipher)):
            return await trio.to_thread.run_sync(self.reader.decrypt, off, cipher)
        return self.reader.decrypt(off, cipher)

    def _release(self) -> None:
        """A sequential reader does not come back to the blocks before those its reads under
        way still take from the cache (the kernel sends several reads of a stream at once, and
        each waits for its blocks in turn), with one block of slack for reads of the stream
        arriving slightly out of order: the cache keeps blocks only as long as they are read
        (``BlockCache.release``)."""
        below = min(self._reading) // self._bs - 1
        if below > self._released_to:
            self.cache.release(self.key, self.etag, range(self._released_to, below))
            self._released_to = below

    # ------------------------------------------------------------------ random reads
    def _all_near(self, off: int, end: int) -> bool:
        """Every block of [off, end) is in memory, on disk or being fetched already."""
        c, k, e = self.cache, self.key, self.etag
        return all(c.in_memory(k, e, i) or c.on_disk(k, e, i) or c.pending(k, e, i) is not None
                   for i in range(off // self._bs, (end - 1) // self._bs + 1))

    async def _fragment(self, off: int, end: int) -> bytes | memoryview:
        """Ciphertext of [off, end) for a read that seeks: one ranged GET of just that range,
        widened to ``RANDOM_ALIGN`` and ``RANDOM_MARGIN`` bytes more (the kernel often reads
        the next page next), kept in a few per-handle fragments instead of the block cache.
        A whole block per 4 KiB read cost 60 times the bytes (~42 ms at 50 Mbit/s)."""
        for start, data in self._fragments:
            if start <= off and end <= start + len(data):
                return memoryview(data)[off - start:end - start]
        start = off - off % RANDOM_ALIGN
        stop = min(self.size, start + _fragment_size(off, end))
        data, = await self._timed_get(start, stop)
        if len(data) != stop - start:
            raise NetworkError(f"{self.key}: short ranged GET {start}-{stop - 1} "
                               f"({len(data)} bytes)")
        self._fragments.append((start, data))
        del self._fragments[:-RANDOM_FRAGMENTS]
        return memoryview(data)[off - start:end - start]

    async def _timed_get(self, start: int, stop: int, *, in_blocks: bool = False) -> list[bytes]:
        """Ciphertext [start, stop) in one ranged GET, its time recorded (``fetchcost``), as
        one piece, or ``in_blocks`` as cache blocks when ``start`` is a block's (each read as
        it arrives, ``read_cipher_blocks``, where the reader has it); NetworkError after
        ``FETCH_TIMEOUT`` seconds."""
        began = time.monotonic()
        by_block = getattr(self.reader, "read_cipher_blocks", None) if in_blocks else None
        try:
            with trio.fail_after(FETCH_TIMEOUT):
                if by_block is not None:
                    blocks = await by_block(start, stop - start, self._bs)
                else:
                    data = await self.reader.read_cipher(start, stop - start)
                    blocks = [data[i:i + self._bs] for i in range(0, len(data), self._bs)] \
                        if in_blocks else [data]
        except trio.TooSlowError:
            raise NetworkError(f"{self.key}: ranged GET {start}-{stop - 1} timed out") from None
        self.cache.fetch_cost.record(sum(map(len, blocks)), time.monotonic() - began)
        return blocks

    # ------------------------------------------------------------------ read-ahead
    def _advance_window(self, off: int, end: int) -> None:
        """Sequential reads grow the window (after a few steps, since the kernel's own
        read-ahead turns even a tiny random read into two or three sequential requests); a
        seek resets. A step is a read, or ``SEQUENTIAL_STEP`` bytes of a larger one: the ramp
        per byte read is then the same whether the kernel sends 128 KiB or 1 MiB requests
        (with 1 MiB ones counted as one step each, a stream over a slow link waited for the
        window eight times as long)."""
        steps = max(1, (end - off) // SEQUENTIAL_STEP)
        if 0 <= self._last_end <= off <= self._last_end + SEQUENTIAL_GAP:
            self._sequential += steps   # (the kernel skips pages it has cached)
        else:
            self._sequential = steps - 1
            self._prefetched_to = -1
            self._run_start = off
            self._released_to = off // self._bs
            self._seeking = off != 0 or self._last_end != -1
            self.cache.streams.note_ahead(self, 0)
        self._last_end = end
        if self._sequential < 3:
            self._window = 0
            return
        streams = self.cache.streams
        slow = self.cache.fetch_cost.slow_connection()
        cap = min(self._max_window, streams.share(self) // self._bs)
        if not slow:
            cap = min(cap, FAST_WINDOW // self._bs)
        cap = max(self._fetch_blocks, cap)
        self._window = min(1 << min(self._sequential - 3, 30), cap)
        self._seeking = False
        last_needed = (end - 1) // self._bs
        start = max(last_needed + 1, self._prefetched_to + 1)
        stop = min(last_needed + self._window, self._last_block)
        chunk = min(self._fetch_blocks, self._window)
        if slow:
            chunk = min(chunk, max(1, SLOW_FETCH_SIZE // self._bs))
            if self._window < 2 * chunk:
                chunk = max(1, self._window // 2)   # two GETs under way, on two connections
        while start <= stop:
            n = min(chunk, stop - start + 1)
            if n < chunk and stop < self._last_block:
                break               # wait until a whole chunk of the window is unfetched
            ahead = (start - last_needed - 1) * self._bs
            if ahead > 0 and not streams.may_fetch(self, ahead + n * self._bs):
                break               # the others hold the budget: the next read tries again
            self._spawn(functools.partial(self._prefetch, start, start + n - 1))
            self._prefetched_to = start + n - 1
            start += n
        streams.note_ahead(self, max(0, self._prefetched_to - last_needed) * self._bs)

    async def _prefetch(self, first: int, last: int) -> None:
        todo = [i for i in range(first, last + 1)
                if not self.cache.in_memory(self.key, self.etag, i)
                and self.cache.pending(self.key, self.etag, i) is None]
        if not todo:
            return
        try:
            await self._load(todo, {})
        except Exception as exc:    # read-ahead is best effort; the real read reports errors
            log.debug("read-ahead of %s blocks %d-%d failed: %s", self.key, first, last, exc)


def _fragment_size(off: int, end: int) -> int:
    """Bytes a fragment of [off, end) fetches: whole ``RANDOM_ALIGN`` pages and the margin
    (clipped at EOF by the caller)."""
    return -(-end // RANDOM_ALIGN) * RANDOM_ALIGN + RANDOM_MARGIN - (off - off % RANDOM_ALIGN)


def _runs(indices: list[int], longest: int) -> list[tuple[int, int]]:
    """Sorted block indices grouped into (first, last) runs of adjacent blocks, each at most
    ``longest`` blocks long."""
    runs: list[tuple[int, int]] = []
    for i in sorted(indices):
        if runs and runs[-1][1] == i - 1 and i - runs[-1][0] < longest:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def mountinfo(path: str) -> list[tuple[str, str]]:
    """(major:minor, file-system type) of every mount at ``path``, oldest first, from
    /proc/self/mountinfo (proc(5): field 5 is the mount point with space, tab, newline and
    backslash octal-escaped; the type follows the " - " separator). OSError if unreadable.
    ``path`` must be resolved already (the kernel records the resolved mount point): resolving
    it here would stat the mount's root, which the mount process itself must never do (its
    own FUSE loop is the one that would answer: a deadlock)."""
    escaped = (path.replace("\\", "\\134").replace(" ", "\\040")
               .replace("\t", "\\011").replace("\n", "\\012"))
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4] == escaped and "-" in fields:
                out.append((fields[2], fields[fields.index("-", 5) + 1]))
    return out


def raise_kernel_readahead(mountpoint: str, kb: int = KERNEL_READAHEAD_KB) -> bool:
    """Let the kernel read ahead ``kb`` KiB on this mount (best effort; needs root). Returns
    whether the bdi's ``read_ahead_kb`` was written; never raises.

    FUSE starts every mount with a 128 KiB read-ahead, and FUSE_INIT can only lower it, so a
    streaming reader arrives as 128 KiB requests: per-request overhead then caps throughput.
    With a larger window the kernel sends up to 1 MiB per request (libfuse's max_pages).
    Call it only once FUSE_INIT has been *answered* (``Operations.init``): the kernel sets
    the bdi's read-ahead from that reply (``process_init_reply`` in fs/fuse/inode.c lowers
    it to the reply's ``max_readahead``, 128 KiB), so a value written right after mount(2)
    is undone (measured on kernel 6.18: 128 after the mount, and reads of 128 KiB).
    The mount is found through /proc/self/mountinfo, never by touching the mount point
    (this very process serves it, so a stat would deadlock).
    """
    try:
        found = mountinfo(mountpoint)
        dev = found[-1][0] if found else None    # major:minor; the last is the newest mount
        if dev is None:
            return False
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb", "w") as f:
            f.write(str(kb))
        return True
    except OSError as exc:              # not root, no sysfs: reads just come in smaller requests
        log.debug("cannot raise the kernel read-ahead of %s: %s", mountpoint, exc)
        return False
    except Exception:                   # (a caller in trio's run queue must not see it)
        log.exception("raising the kernel read-ahead of %s: unexpected error", mountpoint)
        return False
