"""One request to OSS, run and retried: oss2 is blocking, so every call runs in a worker
thread behind a ``trio.CapacityLimiter``: one for requests that move data (GET, PUT, parts: their
number bounds memory and bandwidth shares) and a wider one for small metadata requests (HEAD,
listings, deletes), whose cost is one round trip each. Transient failures are retried with capped
exponential backoff and full jitter (``failures.classify`` says which); a request refused for
credentials that expired under way is retried once with fresh ones.

``StoreBase`` holds the state every request needs (bucket, limiters, counters, OSS's clock);
the operations (``reads``, ``listing``, ``writes``, ``multipart``) are built on it.
"""
from __future__ import annotations

import collections
import logging
import random
import time
from typing import Callable, TypeVar

import oss2
import oss2.exceptions
import trio

from ..credentials import CredentialSource, Credentials
from .failures import STALE_CREDENTIAL_CODES, LocalSourceError, classify
from .info import http_time
from .session import cache_environment, size_pool

log = logging.getLogger(__name__)

T = TypeVar("T")
META_CONCURRENCY = 64
_META_OPS = frozenset({"head", "get_head", "list", "delete", "delete_many", "get_symlink", "put_symlink",
                       "restore"})


class StoreBase:
    """One bucket, used concurrently from a trio loop: the request machinery."""

    def __init__(self, bucket: oss2.Bucket, *, concurrency: int = 16, retries: int = 5,
                 backoff_base: float = 0.1, backoff_max: float = 5.0,
                 meta_concurrency: int = META_CONCURRENCY,
                 credentials: CredentialSource | None = None) -> None:
        self.bucket = bucket
        #: where the bucket's auth takes its credentials (None: fixed ones inside the auth)
        self.credentials = credentials
        self.name: str = bucket.bucket_name
        self.concurrency = concurrency
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.limiter = trio.CapacityLimiter(concurrency)
        self.meta_limiter = trio.CapacityLimiter(meta_concurrency)
        #: attempts per operation, retries included (bench / tests)
        self.requests: collections.Counter[str] = collections.Counter()
        #: retried attempts per operation
        self.retried: collections.Counter[str] = collections.Counter()
        self.bytes_fetched = 0
        self.bytes_sent = 0
        self._clock_offset = 0.0          # OSS's clock minus ours, from the Date of replies
        size_pool(bucket, concurrency + meta_concurrency)
        cache_environment(bucket)
        bucket.enable_crc = False         # checked here, with a table built once (``crc64``)

    def _dated(self, result: T) -> T:
        """Learn OSS's clock from a reply's Date header (whole seconds: floored)."""
        when = http_time(getattr(result, "headers", {}).get("Date"))
        if when:
            self._clock_offset = when - time.time()
        return result

    def server_now(self) -> float:
        """An upper bound of OSS's clock now, for comparing with Last-Modified values."""
        return time.time() + self._clock_offset + 1.0

    async def _call(self, op: str, key: str, fn: Callable[[], T],
                    attempts: list[int] | None = None) -> T:
        """``fn()`` (blocking oss2 work for ``op`` on ``key``) in a worker thread, retried while
        ``failures.classify`` calls its failure transient, ``retries`` times at most; every
        other failure raised as its ``ossencfs.errors`` type. ``attempts`` collects the attempt
        numbers made (0 first)."""
        attempt = 0
        renewed = False
        while True:
            self.requests[op] += 1
            if attempts is not None:
                attempts.append(attempt)
            signed_with = self.credentials.current if self.credentials is not None else None
            try:
                limiter = self.meta_limiter if op in _META_OPS else self.limiter
                return await trio.to_thread.run_sync(fn, limiter=limiter)
            except LocalSourceError as exc:    # ours, not the network's: no retry here
                raise exc.error from None
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                if not renewed and await self._renewed_after(exc, signed_with):
                    renewed = True            # raced an expiry: once more, fresh credentials
                    self.retried[op] += 1
                    continue
                transient, mapped = classify(op, self.name, key, exc)
                if not transient or attempt >= self.retries:
                    raise mapped from exc
                delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
                delay = random.uniform(delay / 2, delay)
                log.info("%s %s: %s; retry %d in %.2fs", op, key, mapped, attempt + 1, delay)
                self.retried[op] += 1
                attempt += 1
                await trio.sleep(delay)

    async def _renewed_after(self, exc: Exception, signed_with: Credentials | None) -> bool:
        """Whether OSS refused the request's temporary credentials and new ones are in use now."""
        if (self.credentials is None or not isinstance(exc, oss2.exceptions.ServerError)
                or exc.status != 403 or getattr(exc, "code", "") not in STALE_CREDENTIAL_CODES
                or signed_with is None or signed_with.security_token is None):
            return False
        source = self.credentials
        return await trio.to_thread.run_sync(lambda: source.renew(signed_with))
