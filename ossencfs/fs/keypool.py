"""Fresh data keys for new files, made ahead while files are created in a burst.

Why it exists: with a KMS master key, every new file's data key costs two KMS round trips
before its first byte can be encrypted: GenerateDataKey, then Encrypt of the IV
(``kms.master.KmsMasterKey.wrap_new``). A CryptoBucket user pays the same per ``put_object``.
Over the cloud profile that was most of a small file's create-to-close. While files are
created one after another (``cp -r``, ``tar x``, a program writing many files), keys for the
next ones are now made in worker threads while the current one is written and uploaded,
several at once (up to the KMS client's concurrency).

What does not change: each key is made for one object and used once (nothing is reused or
derived); a key is asked for ahead only after keys for a second file within ``BURST_WINDOW``,
never by an idle mount, and at most as many as files took keys in that window (``echo x > f``
takes two for one file: bash closes a dup of the new file before it writes, the close uploads
the empty file, and the write needs a fresh key; that is no burst); keys made ahead and not
taken within ``KEEP`` seconds are dropped, also from the key ring's cache (they were never
written anywhere). An RSA writer wraps locally in microseconds (``KeyRing.local_writer``): no
pool, no thread.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Awaitable, Callable

import trio

from ..envelope.keys import KeyRing
from ..envelope.material import ContentMaterial

log = logging.getLogger(__name__)

#: seconds in which creates count as one burst (the number of keys made ahead follows them)
BURST_WINDOW = 2.0
#: seconds a key made ahead may wait to be taken
KEEP = 30.0
#: seconds without making keys ahead after a failure (the next create asks itself and reports it)
PAUSE_AFTER_FAILURE = 10.0

Fresh = tuple[ContentMaterial, dict[str, str]]


class KeyPool:
    def __init__(self, keyring: KeyRing,
                 spawn: Callable[[Callable[[], Awaitable[object]]], bool] | None = None, *,
                 ahead_max: int = 8, clock: Callable[[], float] = time.monotonic) -> None:
        """``spawn`` starts a background task (False: none can run now; None: never make keys
        ahead). ``ahead_max``: keys made ahead at most, also at once (the KMS master key's
        ``max_concurrency``, 8 by default: more would only queue there)."""
        self.keyring = keyring
        self.spawn = spawn
        self.ahead_max = ahead_max
        self.clock = clock
        self.made_ahead = 0               # keys made ahead (tests)
        self.dropped = 0                  # of those, dropped unused after ``KEEP``
        self._ready: collections.deque[tuple[float, ContentMaterial, dict[str, str]]] = \
            collections.deque()
        self._takes: collections.deque[tuple[float, str]] = collections.deque()  # (when, key)
        self._making = 0
        self._arrived = trio.Event()
        self._paused_until = 0.0
        self._expiring = False

    async def take(self, key: str) -> Fresh:
        """A fresh data key for the object ``key`` and the CSE headers that carry it
        (``KeyRing.new_object``): one made ahead if there is one (or is about to be), else
        made now. Raises what ``new_object`` raises (``KeyUnavailableError``,
        ``KeyServiceUnavailableError``)."""
        if self.keyring.local_writer:
            return self.keyring.new_object()          # CPU only: cheaper than a thread hop
        now = self.clock()
        self._takes.append((now, key))
        while self._takes[0][0] < now - BURST_WINDOW:
            self._takes.popleft()
        self._expire(now)
        while not self._ready and self._making:
            await self._arrived.wait()               # one is on its way: wait for it
        if self._ready:
            _, material, headers = self._ready.popleft()
        else:
            material, headers = await trio.to_thread.run_sync(self.keyring.new_object)
        self._top_up()
        return material, headers

    def _top_up(self) -> None:
        """Make keys ahead up to the number of files that took keys in the last
        ``BURST_WINDOW`` (minus the one just served): a lone file asks for nothing ahead."""
        if self.spawn is None or self.clock() < self._paused_until:
            return
        want = min(self.ahead_max, len({key for _, key in self._takes}) - 1)
        while len(self._ready) + self._making < want:
            if not self.spawn(self._make):
                return
            self._making += 1

    async def _make(self) -> None:
        try:
            material, headers = await trio.to_thread.run_sync(self.keyring.new_object)
        except Exception as exc:  # noqa: BLE001 - the next create asks itself and reports it
            log.info("a data key made ahead failed (%s); none made ahead for %g s",
                     exc, PAUSE_AFTER_FAILURE)
            self._paused_until = self.clock() + PAUSE_AFTER_FAILURE
        else:
            self._ready.append((self.clock(), material, headers))
            self.made_ahead += 1
            if not self._expiring and self.spawn is not None and self.spawn(self._expire_later):
                self._expiring = True
        finally:
            self._making -= 1
            arrived, self._arrived = self._arrived, trio.Event()
            arrived.set()

    def _expire(self, now: float) -> None:
        while self._ready and self._ready[0][0] < now - KEEP:
            _, _, headers = self._ready.popleft()
            self.keyring.forget(headers)        # not kept as a readable object's key either
            self.dropped += 1

    async def _expire_later(self) -> None:
        """Drop keys made ahead once they are ``KEEP`` old, also when no create comes again."""
        try:
            while self._ready:
                await trio.sleep(max(0.0, self._ready[0][0] + KEEP - self.clock()) + 0.01)
                self._expire(self.clock())
        finally:
            self._expiring = False
