"""Turns a staging into an object: assemble (re-encrypt untouched ranges), then single PUT or
parallel multipart through ``EncryptedObjects.upload``.

Uploads run when the caller asks (flush/fsync/release/unmount); issue 6 adds a delayed,
journaled queue on top of the same ``upload`` coroutine. ``pending`` and ``failures`` are
what ``ossencfs status`` will show.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import trio

from ..errors import NetworkError
from .staging import Staging

log = logging.getLogger(__name__)


def upload_timeout(size: int) -> float:
    """Nothing waits forever, yet a large file on a slow link is not cut off: 2 min + 1 s/MiB."""
    return 120.0 + size / (1 << 20)


@dataclass
class Pending:
    key: str
    size: int
    started: float
    sent: int = 0


@dataclass
class Uploader:
    objects: Any                       # ossencfs.objects.EncryptedObjects
    pending: dict[int, Pending] = field(default_factory=dict)
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    uploads: int = 0

    async def upload(self, staging: Staging, extra_headers: Mapping[str, str]) -> str:
        """Upload ``staging`` under ``staging.key``; returns the new ETag and seals the staging."""
        key = staging.key
        token = id(staging)
        entry = Pending(key, staging.size, time.time())
        self.pending[token] = entry

        def progress(n: int) -> None:
            entry.sent += n
        try:
            with trio.fail_after(upload_timeout(staging.size)):
                await staging.materialize()
                await staging.save_manifest(extra_headers)
                etag = await self.objects.upload(key, staging.size, staging.read_cipher,
                                                 staging.crypto_headers, dict(extra_headers),
                                                 progress=progress)
        except trio.TooSlowError:
            exc = NetworkError(f"{key}: upload timed out")
            self._failed(key, exc)
            raise exc from None
        except Exception as exc:
            self._failed(key, exc)
            raise
        finally:
            self.pending.pop(token, None)
        staging.sealed = True
        self.uploads += 1
        return etag

    def _failed(self, key: str, exc: BaseException) -> None:
        self.failures.append((time.time(), key, str(exc)))
        del self.failures[:-100]
