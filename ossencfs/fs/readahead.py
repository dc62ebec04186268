"""Plaintext reads of one object version through the ciphertext block cache, with read-ahead.

A read costs what it reads: only the blocks that cover the request are fetched (ranged GETs,
16-byte aligned because blocks are), and only the requested slice is decrypted. Sequential
access doubles a read-ahead window (up to ``max_window`` blocks) whose blocks are fetched in
parallel in the background; a seek resets it.
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Protocol

import trio

from ..errors import NetworkError
from .cache import BlockCache

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 120.0


class CipherReader(Protocol):
    encrypted: bool

    async def read_cipher(self, start: int, end: int) -> bytes: ...
    def decrypt(self, offset: int, cipher: bytes) -> bytes: ...


class BlockSource:
    def __init__(self, cache: BlockCache, reader: CipherReader, key: str, etag: str, size: int,
                 spawn: Callable[[Callable[[], Awaitable[Any]]], None], *,
                 max_window: int = 16) -> None:
        self.cache = cache
        self.reader = reader
        self.key = key
        self.etag = etag
        self.size = size
        self._spawn = spawn
        self._bs = cache.block_size
        self._max_window = max_window
        self._window = 0
        self._sequential = 0
        self._last_end = -1
        self._prefetched_to = -1

    async def _fetch(self, index: int) -> bytes:
        start = index * self._bs
        end = min(start + self._bs, self.size) - 1
        try:
            with trio.fail_after(FETCH_TIMEOUT):
                data = await self.reader.read_cipher(start, end)
        except trio.TooSlowError:
            raise NetworkError(f"{self.key}: ranged GET {start}-{end} timed out") from None
        if len(data) != end - start + 1:
            raise NetworkError(f"{self.key}: short ranged GET {start}-{end} ({len(data)} bytes)")
        return data

    async def block(self, index: int) -> bytes:
        return await self.cache.get_or_fetch(self.key, self.etag, index,
                                             lambda: self._fetch(index),
                                             on_disk=self.reader.encrypted)

    async def cipher_range(self, off: int, n: int) -> bytes:
        """Ciphertext of [off, off+n) (clipped at EOF), fetching missing blocks in parallel."""
        end = min(off + n, self.size)
        if end <= off:
            return b""
        first, last = off // self._bs, (end - 1) // self._bs
        blocks: dict[int, bytes] = {}
        if first == last:
            blocks[first] = await self.block(first)
        else:
            async def one(i: int) -> None:
                blocks[i] = await self.block(i)
            async with trio.open_nursery() as nursery:
                for i in range(first, last + 1):
                    nursery.start_soon(one, i)
        joined = b"".join(blocks[i] for i in range(first, last + 1))
        rel = off - first * self._bs
        return joined[rel:rel + (end - off)]

    async def read(self, off: int, n: int) -> bytes:
        """Plaintext of [off, off+n) clipped at EOF."""
        end = min(off + n, self.size)
        if end <= off:
            return b""
        self._advance_window(off, end)
        log.debug("read %s [%d, %d) window %d", self.key, off, end, self._window)
        cipher = await self.cipher_range(off, end - off)
        if not self.reader.encrypted:
            return cipher
        if len(cipher) > (1 << 20):
            return await trio.to_thread.run_sync(self.reader.decrypt, off, cipher)
        return self.reader.decrypt(off, cipher)

    def _advance_window(self, off: int, end: int) -> None:
        """Sequential reads grow the window (after a few, since the kernel's own read-ahead
        turns even a tiny random read into two or three sequential requests); a seek resets."""
        if off == self._last_end:
            self._sequential += 1
        elif self._last_end != -1:
            self._sequential = 0
            self._prefetched_to = -1
        self._last_end = end
        self._window = 0 if self._sequential < 3 else \
            min(1 << (self._sequential - 3), self._max_window)
        if self._window == 0:
            return
        last_needed = (end - 1) // self._bs
        last_block = (self.size - 1) // self._bs
        start = max(last_needed + 1, self._prefetched_to + 1)
        stop = min(last_needed + self._window, last_block)
        for i in range(start, stop + 1):
            self._spawn(lambda i=i: self._prefetch(i))
        if stop >= start:
            self._prefetched_to = stop

    async def _prefetch(self, index: int) -> None:
        try:
            await self.block(index)
        except Exception as exc:    # read-ahead is best effort; the real read reports errors
            log.debug("read-ahead of %s block %d failed: %s", self.key, index, exc)
