"""The background upload queue: delayed uploads (``--write-back``) and retries of failed ones.

Why it looks like this:
- A job is a dirty file whose content is already durable in the journal; the queue only
  decides *when* it goes up: ``delay`` seconds after its last close (write-back), at once for
  a replayed entry, or after a backoff when an attempt failed.
- Retries never give up (an acknowledged write must not be dropped) but are bounded in rate:
  exponential backoff per job from 1 s to ``backoff_max`` with jitter, at most ``parallel``
  uploads at a time. Each failure is logged once per attempt and kept for ``status``.
- Small files (below ``SMALL_FILE``) have their own, wider limit (``small_parallel``): their
  uploads are one round trip each, so latency, not bandwidth or memory, bounds a tree copy;
  many at once cost little memory (each holds at most ``SMALL_FILE`` bytes).
- A file that is open for writing is not uploaded under its writer's feet: its job waits for
  the last close (or an fsync, which uploads at once anyway).
- ``drain`` (unmount) makes every job due now and waits until the queue is empty.
- Due times sit in a heap (an entry per (re)scheduling; outdated ones are skipped when they
  come up): a stream of small files keeps hundreds of jobs waiting, and the runner wakes for
  each one, so it must not look at all of them every time.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Protocol, TypeVar

import trio

from ..aio import first_error

log = logging.getLogger(__name__)

SMALL_FILE = 1 << 20


class _Staged(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def committed(self) -> bool: ...


class QueuedFile(Protocol):
    """What the queue reads of a file (an ``fs.inodes.Node``)."""
    @property
    def dirty(self) -> bool: ...
    @property
    def size(self) -> int: ...
    @property
    def staging(self) -> _Staged | None: ...


N = TypeVar("N", bound=QueuedFile)


@dataclass(eq=False)
class Job(Generic[N]):
    node: N
    due_trio: float                   # trio.current_time()
    since_wall: float = field(default_factory=time.time)
    attempts: int = 0
    last_error: str | None = None
    running: bool = False


class WriteBack(Generic[N]):
    def __init__(self, *, upload: Callable[[N], Awaitable[None]],
                 writers: Callable[[N], int], where: Callable[[N], str], delay: float, parallel: int = 4,
                 small_parallel: int = 16, backoff_max: float = 60.0) -> None:
        #: the model's calls it needs, and no more: upload one pending file (under its lock),
        #: count its open writers, name it in log lines
        self.upload, self.writers, self.where = upload, writers, where
        self.delay = delay
        self.backoff_max = backoff_max
        self.limiter = trio.CapacityLimiter(max(1, parallel))
        self.small_limiter = trio.CapacityLimiter(max(1, small_parallel))
        self.jobs: dict[int, Job[N]] = {}
        self._heap: list[tuple[float, int, Job[N]]] = []    # (due, seq, job), outdated entries too
        self._seq = itertools.count()
        self._next_wake = float("inf")                    # when the runner wakes by itself
        self._wake = trio.Event()
        self.changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.draining = False

    # -- scheduling ---------------------------------------------------------------------------
    def schedule(self, node: N, delay: float | None = None) -> None:
        """(Re)schedule ``node``'s upload ``delay`` seconds from now (default: the write-back);
        a job in backoff is not pulled earlier."""
        when = trio.current_time() + (self.delay if delay is None else delay)
        job = self.jobs.get(id(node))
        if job is None:
            job = self.jobs[id(node)] = Job(node, when)
        elif not job.running:
            job.due_trio = when if not job.attempts else max(job.due_trio, when)
        if self.draining and not job.attempts:
            job.due_trio = min(job.due_trio, trio.current_time())
        if not job.running:
            self._due(job)
        self.notify()

    def failed(self, node: N, exc: BaseException) -> None:
        """An upload outside the queue (close, fsync) failed: retry it with backoff."""
        job = self.jobs.get(id(node))
        if job is None:
            job = self.jobs[id(node)] = Job(node, trio.current_time())
        job.attempts += 1
        job.last_error = str(first_error(exc)) or type(exc).__name__
        if not job.running:
            job.due_trio = trio.current_time() + self._backoff(job.attempts)
            self._due(job)
        self.notify()

    def _due(self, job: Job[N]) -> None:
        """Record ``job.due_trio`` (just set) for the runner; wake it if that is sooner."""
        heapq.heappush(self._heap, (job.due_trio, next(self._seq), job))
        if job.due_trio < self._next_wake:
            self._wake.set()

    def _backoff(self, attempts: int) -> float:
        base = min(self.backoff_max, 2.0 ** (attempts - 1))
        return random.uniform(base / 2, base)

    def job_for(self, node: N) -> Job[N] | None:
        return self.jobs.get(id(node))

    def forget(self, node: N) -> None:
        self.jobs.pop(id(node), None)
        self.notify()

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    # -- running ------------------------------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            heap = self._heap
            while True:
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    due, _, job = heapq.heappop(heap)
                    if job.running or job.due_trio != due or self.jobs.get(id(job.node)) is not job:
                        continue                 # outdated entry, or already on its way
                    job.running = True
                    nursery.start_soon(self._work, job)
                self._next_wake = heap[0][0] if heap else float("inf")
                self._wake = trio.Event()
                with trio.move_on_at(self._next_wake):
                    await self._wake.wait()
                self._next_wake = float("-inf")   # awake: every change wakes it again

    async def _work(self, job: Job[N]) -> None:
        node = job.node
        size = node.staging.size if node.staging is not None else node.size
        try:
            async with (self.small_limiter if size < SMALL_FILE else self.limiter):
                if self.writers(node) and not self.draining:
                    job.due_trio = trio.current_time() + max(self.delay, 1.0)   # wait for the close
                    return                       # (``finally`` files the new due time)
                await self.upload(node)
            if self.jobs.get(id(node)) is job:
                if node.dirty:          # written and closed again meanwhile: keep its due time
                    job.due_trio = max(job.due_trio, trio.current_time() + 1.0)
                else:
                    del self.jobs[id(node)]
        except Exception as raw:
            exc = first_error(raw)
            job.attempts += 1
            job.last_error = str(exc) or type(exc).__name__
            wait = self._backoff(job.attempts)
            job.due_trio = trio.current_time() + wait
            st = node.staging
            kept = "in the journal" if st is None or st.committed else \
                "in memory only: the journal could not be written"
            log.warning("%s: upload attempt %d failed, retrying in %.0f s (data kept %s): %s",
                        self.where(node), job.attempts, wait, kept, job.last_error)
        finally:
            job.running = False
            if self.jobs.get(id(node)) is job:
                self._due(job)
            self._wake.set()
            self.notify()

    async def drain(self) -> int:
        """Upload everything now (unmount); returns how many jobs are left (0 unless cancelled)."""
        self.draining = True
        now = trio.current_time()
        for job in self.jobs.values():
            if not job.attempts and job.due_trio > now:
                job.due_trio = now
                if not job.running:
                    self._due(job)
        self._wake.set()
        while self.jobs:
            changed = self.changed
            with trio.move_on_after(1.0):
                await changed.wait()
            now = trio.current_time()
            for job in self.jobs.values():     # retries go on with backoff, capped while draining
                if job.due_trio > now + 5.0:
                    job.due_trio = now + 5.0
                    if not job.running:
                        self._due(job)
            self._wake.set()
        return len(self.jobs)
