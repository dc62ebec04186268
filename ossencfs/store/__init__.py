"""Async object store: oss2.Bucket driven from trio, with retries and typed errors.

The only package that talks oss2. oss2 is blocking, so every call runs in a worker thread
behind a CapacityLimiter: one for requests that move data (GET, PUT, parts: their number bounds
memory and bandwidth shares) and a wider one for small metadata requests (HEAD, listings,
deletes), whose cost is one round trip each, so a stat walk over a directory seen for the first
time is not queued behind 16 at a time. The connection pool is as large as both limiters
together, so that no thread ever waits for a socket. Transient failures (network, 5xx,
throttling, truncated bodies) are retried with capped exponential backoff and full jitter;
everything else becomes an ``ossencfs.errors`` type at once, so the layers above never see an
oss2 or requests exception.

Modules, by job (``docs/layers.md``):

* ``objectstore``: ``ObjectStore`` (one bucket) and ``ObjectStore.connect``;
* ``calls``: the request machinery (limiters, retries with backoff, credential renewal,
  OSS's clock), ``StoreBase``;
* ``failures``: which failures are transient and the error type each becomes;
* ``reads``, ``listing``, ``writes``, ``multipart``: the requests, one room each;
* ``bodies``: CRC-64 checks, ``PartBody``, reading a GET's body;
* ``info``: ``ObjectInfo``, ``Listing``; ``session``: the oss2 bucket and its HTTP session.

Importers use this package (``from ossencfs.store import ObjectStore``), not its modules.
"""
from .bodies import PartBody, crc64
from .calls import META_CONCURRENCY
from .info import ARCHIVE_CLASSES, Listing, ObjectInfo
from .objectstore import ObjectStore

__all__ = ["ARCHIVE_CLASSES", "META_CONCURRENCY", "Listing", "ObjectInfo", "ObjectStore",
           "PartBody", "crc64"]
