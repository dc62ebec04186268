"""The source side of a relay: one object version's stored bytes, fetched ahead in parallel.

Why it exists: a move of an object above the CopyObject size limit, a metadata change of a
client-side-encrypted or appendable object, and a key rotation all upload an object's stored
bytes again (``objects.EncryptedObjects.relay``: OSS refuses CopyObject for them and
UploadPartCopy from a CSE source, SPEC D.13, A.10 item 8). The GETs are sized for the
network, not for the upload's parts: a 1 GiB object written with 200 KiB parts used to be
fetched with 5,243 ranged GETs, four at a time (1,296 s for a ``mv``); now ``RELAY_PIECE``
ranges, several in flight, feed however many parts the upload sends at once.
"""
from __future__ import annotations

import trio

from .multipart import BLOCK, BUFFER_PART, parts_at_once
from .store import ObjectInfo, ObjectStore

#: bytes per ranged GET of a relay (a multiple of 16), whatever the part size
RELAY_PIECE = 4 << 20


def relay_window(unit: int, parallelism: int, piece: int = RELAY_PIECE) -> int:
    """GETs of ``piece`` bytes kept in flight ahead of the reader, for an upload in parts of
    ``unit`` bytes: as many bytes as the parts sent at once (``multipart.parts_at_once``),
    and at least ``parallelism`` x 8 MiB, so that small parts do not starve on GETs. Memory:
    about 2 x parallelism x max(unit, 8 MiB)."""
    ahead = max(parts_at_once(unit, parallelism) * unit, parallelism * BUFFER_PART)
    return max(2, -(-ahead // piece))


class RelaySource:
    """Sequential ``read(offset, n)`` answers from ranged GETs of one object version.

    The object is cut into ``piece``-sized ranges; up to ``window`` of them beyond what was
    read are fetched in parallel in ``nursery``, so the GETs of the next parts run while the
    current ones upload. Every GET is pinned to ``info.etag`` (If-Match): a source changed
    meanwhile is a ConflictError, never a mix of versions. A failed fetch is raised by the
    read that needs it."""

    def __init__(self, store: ObjectStore, info: ObjectInfo, piece: int, window: int,
                 nursery: trio.Nursery) -> None:
        self._store, self._info, self._piece = store, info, max(BLOCK, piece - piece % BLOCK)
        self._window, self._nursery = max(1, window), nursery
        self._count = (info.size + self._piece - 1) // self._piece
        self._started = 0
        self._done: dict[int, trio.Event] = {}
        self._data: dict[int, bytes | BaseException] = {}

    def _ahead(self, first: int) -> None:
        while self._started < min(self._count, first + self._window):
            i = self._started
            self._started += 1
            self._done[i] = trio.Event()
            self._nursery.start_soon(self._fetch, i)

    async def _fetch(self, i: int) -> None:
        start = i * self._piece
        end = min(self._info.size, start + self._piece) - 1
        try:
            self._data[i] = await self._store.get_range(self._info.key, start, end,
                                                        if_match=self._info.etag or None)
        except Exception as exc:            # noqa: BLE001 - handed to the reader below
            self._data[i] = exc
        self._done[i].set()

    async def read(self, offset: int, n: int) -> bytes:
        first, last = offset // self._piece, (offset + n - 1) // self._piece
        self._ahead(first)
        out = bytearray()
        for i in range(first, last + 1):
            self._ahead(i)
            await self._done[i].wait()
            got = self._data[i]
            if isinstance(got, BaseException):
                raise got
            lo = max(offset, i * self._piece) - i * self._piece
            hi = min(offset + n, (i + 1) * self._piece) - i * self._piece
            out += got[lo:hi]
            if hi == len(got):               # read to its end: never needed again
                del self._data[i], self._done[i]
        return bytes(out)
