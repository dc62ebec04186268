"""The parallel walk of a bucket prefix that every bulk command runs.

The listing is streamed (one page at a time) into a channel of ``jobs`` slots that ``jobs``
workers drain, so memory does not grow with the bucket. Objects outside the shard, and those
an earlier run's checkpoint finished, are passed over; each outcome goes to ``report`` as it
happens, and to the checkpoint when it is final (failures are not: a second run retries them).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import trio

from ..errors import OssEncError
from ..store import ObjectInfo, ObjectStore
from .checkpoint import Checkpoint
from .classify import Record
from .progress import BulkProgress
from .shard import WHOLE, Shard

DONE, SKIPPED, FAILED, WOULD = "done", "skipped", "failed", "would"


@dataclass
class Outcome:
    """What happened to one object. ``status``: done | skipped | failed | would (dry run)."""

    key: str
    status: str
    reason: str = ""                # a category, summarised ("already under the target key")
    detail: str = ""                # this object's particulars (an error message)
    nbytes: int = 0
    record: Record | None = None


@dataclass
class Totals:
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    resumed: int = 0                # finished by an earlier run, above its watermark
    resumed_after: str = ""         # the listing started after this key (checkpoint)
    objects: int = 0
    bytes: int = 0


Action = Callable[[ObjectInfo], Awaitable[Outcome]]


class _Order:
    """Keys in listing order until finished, to move the checkpoint's watermark."""

    def __init__(self, checkpoint: Checkpoint | None) -> None:
        self.cp = checkpoint
        self.slots: collections.deque[list] = collections.deque()
        self.blocked = False        # a failure: the watermark stays before it for this run

    def add(self, key: str) -> list:
        slot = [key, False, False]  # key, finished, final
        self.slots.append(slot)
        return slot

    def finish(self, slot: list, final: bool) -> None:
        slot[1], slot[2] = True, final
        if self.cp is not None and final:
            self.cp.mark_done(slot[0])
        last = None
        while self.slots and self.slots[0][1]:
            head = self.slots.popleft()
            self.blocked = self.blocked or not head[2]
            if not self.blocked:
                last = head[0]
        if last is not None and self.cp is not None:
            self.cp.advance(last)


async def walk(store: ObjectStore, prefix: str, action: Action, *, jobs: int = 8,
               shard: Shard = WHOLE, checkpoint: Checkpoint | None = None,
               progress: BulkProgress | None = None,
               report: Callable[[Outcome], None] = lambda o: None) -> Totals:
    """Run ``action`` on every object under ``prefix`` in the shard; ``jobs`` at a time."""
    totals = Totals()
    order = _Order(checkpoint)
    send, recv = trio.open_memory_channel[tuple[ObjectInfo, list]](max(1, jobs))

    async def produce() -> None:
        async with send:
            start = checkpoint.below if checkpoint is not None else ""
            totals.resumed_after = start
            async for info in store.iter_objects(prefix, start_after=start):
                if not shard.owns(info.key):
                    continue
                if checkpoint is not None and checkpoint.finished(info.key):
                    totals.resumed += 1
                    continue
                await send.send((info, order.add(info.key)))

    async def work(recv: trio.MemoryReceiveChannel) -> None:
        async with recv:
            async for info, slot in recv:
                try:
                    out = await action(info)
                except OssEncError as exc:
                    out = Outcome(info.key, FAILED, type(exc).__name__, str(exc))
                totals.statuses[out.status] += 1
                if out.reason:
                    totals.reasons[f"{out.status}: {out.reason}"] += 1
                totals.objects += 1
                totals.bytes += out.nbytes
                order.finish(slot, out.status in (DONE, SKIPPED))
                report(out)
                if progress is not None:
                    progress.object_done()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        for _ in range(max(1, jobs)):
            nursery.start_soon(work, recv.clone())
        await recv.aclose()
    return totals
