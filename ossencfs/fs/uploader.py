"""Turns a staging into an object: assemble (re-encrypt untouched ranges), then single PUT or
parallel multipart through ``EncryptedObjects.upload`` -- never blindly overwriting.

Conflicts: an upload replaces an object only if it is still the version the file was opened
from (``If-Match: base ETag``; for multipart, the HEAD check ``EncryptedObjects.upload`` makes
before completing), and a new file is created with ``x-oss-forbid-overwrite``. When another
client changed or created the object meanwhile, the local version goes beside it as
``NAME.conflict-<host>-<UTC yyyymmddThhmmssZ>`` (``-2``, ``-3``... if that name is taken) and
the other client's version stays at NAME.

A precondition failure can also be our own earlier attempt (a retried request whose reply was
lost, or a replay after a crash whose upload had landed): the wrapped data key is unique to
one staging, so an object carrying it *is* this upload, and that counts as success.

``pending`` (in-flight attempts with progress), ``failures`` and ``conflicts`` are what
``ossencfs status`` shows.
"""
from __future__ import annotations

import logging
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import trio

from ..envelope import format as fmt
from ..errors import ConflictError, NetworkError
from ..objects import first_error
from .staging import Staging

log = logging.getLogger(__name__)


class BaseGoneError(ConflictError):
    """The version a partly rewritten file was opened from is gone before its untouched
    ranges were fetched: the local version cannot be completed."""


def upload_timeout(size: int) -> float:
    """Nothing waits forever, yet a large file on a slow link is not cut off: 2 min + 1 s/MiB."""
    return 120.0 + size / (1 << 20)


def host_tag() -> str:
    """The host part of conflict names: safe in an object key and a file name."""
    name = socket.gethostname().split(".")[0] or "host"
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:40]


def conflict_key(key: str, when: float, n: int = 1) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    return f"{key}.conflict-{host_tag()}-{stamp}" + (f"-{n}" if n > 1 else "")


@dataclass
class Pending:
    key: str
    size: int
    started: float
    sent: int = 0


@dataclass
class UploadResult:
    etag: str
    conflict_key: str | None = None     # set when the local version went beside the object


@dataclass
class Uploader:
    objects: Any                       # ossencfs.objects.EncryptedObjects
    pending: dict[int, Pending] = field(default_factory=dict)
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    uploads: int = 0

    async def _ours(self, key: str, staging: Staging) -> str | None:
        """The ETag of ``key`` if the object there is this very staging's upload."""
        info = await self.objects.store.head(key)
        wrapped = {k.lower(): v for k, v in staging.crypto_headers.items()}.get(fmt.H_KEY)
        if info is not None and wrapped and info.size == staging.size and \
                info.headers.get(fmt.H_KEY) == wrapped:
            return info.etag
        return None

    async def _send(self, key: str, staging: Staging, extra: Mapping[str, str], *,
                    forbid_overwrite: bool, if_match: str | None, entry: Pending) -> str:
        def progress(n: int) -> None:
            entry.sent += n
        entry.sent = 0
        try:
            return await self.objects.upload(key, staging.size, staging.read_cipher,
                                             staging.crypto_headers, dict(extra),
                                             forbid_overwrite=forbid_overwrite, if_match=if_match,
                                             progress=progress)
        except ConflictError:
            etag = await self._ours(key, staging)
            if etag is None:
                raise
            return etag

    async def upload(self, staging: Staging, extra_headers: Mapping[str, str]) -> UploadResult:
        """Upload ``staging`` under ``staging.key`` (or beside it on a conflict); seals it."""
        key = staging.key
        token = id(staging)
        entry = Pending(key, staging.size, time.time())
        self.pending[token] = entry
        result: UploadResult
        sending = False
        try:
            with trio.fail_after(upload_timeout(staging.size)):
                try:
                    await staging.materialize()
                except BaseException as raw:
                    exc = first_error(raw)
                    if isinstance(exc, ConflictError):
                        raise BaseGoneError(str(exc)) from None
                    if exc is not raw and not isinstance(exc, trio.Cancelled):
                        raise exc from None
                    raise
                sending = True
                try:
                    etag = await self._send(key, staging, extra_headers,
                                            forbid_overwrite=staging.base_etag is None,
                                            if_match=staging.base_etag, entry=entry)
                    result = UploadResult(etag)
                except ConflictError as exc:
                    result = await self._conflict(key, staging, extra_headers, entry, exc)
        except trio.TooSlowError:
            exc2 = NetworkError(f"{key}: upload timed out")
            self._failed(key, exc2)
            raise exc2 from None
        except Exception as exc:
            self._failed(key, first_error(exc))
            raise
        finally:
            self.pending.pop(token, None)
            if sending:
                # an attempt whose fate is unknown may have stored these bytes: the next
                # change must not reuse this key/IV for other plaintext (it re-keys)
                staging.sealed = True
        staging.sealed = True
        self.uploads += 1
        return result

    async def _conflict(self, key: str, staging: Staging, extra: Mapping[str, str],
                        entry: Pending, why: Exception) -> UploadResult:
        when = time.time()
        for n in range(1, 100):
            target = conflict_key(key, when, n)
            entry.key = target
            try:
                etag = await self._send(target, staging, extra, forbid_overwrite=True,
                                        if_match=None, entry=entry)
            except ConflictError:
                continue                 # that name is taken by someone else: next one
            log.error("conflict: oss://%s/%s was changed by another client since this file was "
                      "opened (%s); the other version stays, the local one was uploaded as %s",
                      self.objects.store.name, key, why, target)
            self.conflicts.append({"time": when, "key": key, "copy": target})
            del self.conflicts[:-100]
            return UploadResult(etag, target)
        raise ConflictError(f"{key}: no free conflict name")

    def _failed(self, key: str, exc: BaseException) -> None:
        self.failures.append((time.time(), key, str(exc) or type(exc).__name__))
        del self.failures[:-100]
