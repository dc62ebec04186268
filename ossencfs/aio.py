"""trio helpers shared by every layer (objects, fs, cli).

Why it exists: unwrapping a nursery's exception group to the one error a caller should see is
needed from the objects layer up to the command line; it lives at the bottom, beside
``errors``, so that nothing has to import a higher layer to get it.
"""
from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable, NoReturn

import trio

from .errors import OssEncError


def first_error(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, so callers see one cause."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        preferred = [e for e in inner if isinstance(e, OssEncError)]
        exc = (preferred or inner or list(exc.exceptions))[0]
    return exc


def raise_first(eg: BaseExceptionGroup) -> NoReturn:
    """Re-raise a nursery's first real error alone; a pure cancellation stays as it was."""
    exc = first_error(eg)
    if isinstance(exc, trio.Cancelled):
        raise eg
    raise exc from None


async def read_in_order(read: Callable[[int, int], Awaitable[bytes]], chunk_size: int,
                        parallelism: int, start: int, limit: int) -> AsyncIterator[bytes]:
    """``read(offset, n)`` over [start, limit) in ``chunk_size`` pieces, ``parallelism`` at a
    time, yielded in order. Memory stays at about parallelism x chunk_size. Fetches run in
    batches because an async generator must not yield from inside a nursery."""
    pos = start
    while pos < limit:
        spans = []
        for _ in range(parallelism):
            if pos >= limit:
                break
            n = min(chunk_size, limit - pos)
            spans.append((pos, n))
            pos += n
        results: list[bytes] = [b""] * len(spans)

        async def fetch(i: int, off: int, n: int) -> None:
            results[i] = await read(off, n)

        try:
            async with trio.open_nursery() as nursery:
                for i, (off, n) in enumerate(spans):
                    nursery.start_soon(fetch, i, off, n)
        except BaseExceptionGroup as eg:
            raise_first(eg)
        for piece in results:
            yield piece
