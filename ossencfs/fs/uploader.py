"""Turns a staging into an object: single PUT or parallel multipart through
``EncryptedObjects.upload`` -- never blindly overwriting. Untouched old ranges (re-encrypted)
and holes (keystream) are produced while sending (``Staging.read_cipher``), not staged.

Conflicts: an upload replaces an object only if it is still the version the file was opened
from (real OSS has no If-Match on PutObject, SPEC D.13: ``EncryptedObjects.upload`` checks the
base ETag with a HEAD right before the PUT or CompleteMultipartUpload), and a new file is
created with ``x-oss-forbid-overwrite``. When another
client changed or created the object meanwhile, the local version goes beside it as
``NAME.conflict-<host>-<UTC yyyymmddThhmmssZ>`` (``-2``, ``-3``... if that name is taken) and
the other client's version stays at NAME.

A precondition failure can also be our own earlier attempt (a retried request whose reply was
lost, or a replay after a crash whose upload had landed): the wrapped data key is unique to
one staging, so an object carrying it *is* this upload, and that counts as success. A staging
is sealed (durably in its journal entry when it has one) *before* its bytes are sent, so a
key that may be in the bucket is never used again for other data. An object carrying the key
of an earlier staging of the same file (``prior_keys``: a write after an attempt whose reply
was lost) is our own older version: it is replaced (HEAD check on its ETag) rather than
treated as another client's change. A re-upload (``fs.reupload``: a metadata change) carries
the object's own wrapped key, so its landing is recognised by its POSIX headers, and when
another client changed the object first it is dropped, not made a conflict copy.

``pending`` (in-flight attempts with progress), ``failures`` and ``conflicts`` are what
``ossencfs status`` shows.
"""
from __future__ import annotations

import logging
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Mapping, TypedDict

import trio

from ..envelope import format as fmt
from ..errors import ConflictError, NetworkError, NotFoundError
from ..aio import first_error
from ..objects import EncryptedObjects, is_own_upload
from . import dirtystate
from .reupload import Reupload
from .staging import BaseGoneError, Staging

__all__ = ["BaseGoneError", "Uploader", "UploadResult"]

log = logging.getLogger(__name__)


def upload_timeout(size: int) -> float:
    """How long an upload may go without progress: 2 min + 1 s/MiB of the largest single
    request (one PUT, or one part). A stalled attempt is cut off, yet a large file on a slow
    link is not: each part sent (or MiB of old content fetched) restarts the clock."""
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
    started_wall: float            # time.time()
    journaled: bool = False        # a crash meanwhile replays it (else its close/fsync waits)
    sent: int = 0
    watchdog: trio.CancelScope | None = None    # its deadline moves on with each progress
    stall: float = 0.0

    def alive(self) -> None:
        if self.watchdog is not None:
            self.watchdog.deadline = trio.current_time() + self.stall


@dataclass
class UploadResult:
    etag: str
    conflict_key: str | None = None     # set when the local version went beside the object
    superseded: bool = False            # a re-upload dropped: another client changed it first


class Conflict(TypedDict):
    """One conflict as ``ossencfs status`` shows it (``Uploader.conflicts``)."""
    time: float                         # wall clock, seconds since the epoch
    key: str                            # the object another client changed
    copy: str | None                    # where the local version went (None: a dropped
                                        # metadata change, ``_superseded``)


@dataclass
class Uploader:
    objects: EncryptedObjects
    pending: dict[int, Pending] = field(default_factory=dict)
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    uploads: int = 0

    async def _send(self, key: str, staging: Staging, extra: Mapping[str, str], *,
                    forbid_overwrite: bool, if_match: str | None, entry: Pending) -> str:
        def progress(n: int) -> None:
            entry.sent += n
            entry.alive()
        entry.sent = 0
        try:
            if isinstance(staging, Reupload):   # the object's own bytes, new headers
                return await self.objects.relay(staging.source(), key,
                                                {**staging.kept, **extra},
                                                forbid_overwrite=forbid_overwrite,
                                                if_match=if_match, progress=progress)
            return await self.objects.upload(key, staging.size, staging.read_cipher,
                                             staging.crypto_headers, dict(extra),
                                             forbid_overwrite=forbid_overwrite, if_match=if_match,
                                             progress=progress,
                                             read_cipher_sync=staging.read_cipher_sync
                                             if staging.complete else None)
        except BaseGoneError:
            raise
        except ConflictError:
            info = await self.objects.store.head(key)
            found = info.headers.get(fmt.H_KEY) if info is not None else None
            if not found or info is None:
                raise
            # this very upload landed earlier (a re-upload keeps the object's own key: its
            # headers tell it apart)
            if is_own_upload(info, staging.wrapped_key, staging.size,
                             extra if staging.relay else None):
                return info.etag
            if staging.relay:
                raise
            if found in staging.prior_keys and info.etag != if_match:
                log.info("oss://%s/%s: replacing our own earlier upload (ETag %s)",
                         self.objects.store.name, key, info.etag)
                return await self._send(key, staging, extra, forbid_overwrite=False,
                                        if_match=info.etag, entry=entry)
            raise

    async def upload(self, staging: Staging, extra_headers: Mapping[str, str]) -> UploadResult:
        """Upload ``staging`` under ``staging.key`` (or beside it on a conflict); seals it."""
        key = staging.key
        token = id(staging)
        entry = Pending(key, staging.size, time.time(), staging.committed)
        self.pending[token] = entry
        result: UploadResult
        sending = False
        unit = self.objects.multipart_part_size(staging.size) or staging.size
        entry.stall = upload_timeout(min(unit, staging.size))
        try:
            with trio.CancelScope() as watchdog:
                entry.watchdog = watchdog
                entry.alive()
                # (untouched old ranges and holes are produced while sending: read_cipher)
                sending = True
                dirtystate.seal(staging)     # from here on its key may be in the bucket
                if staging.committed and not staging.entry_sealed:   # (sealed at commit: no)
                    await staging.save_manifest(durable=staging.synced)
                try:
                    etag = await self._send(key, staging, extra_headers,
                                            forbid_overwrite=staging.base_etag is None,
                                            if_match=staging.base_etag, entry=entry)
                    result = UploadResult(etag)
                except BaseGoneError:
                    raise
                except (ConflictError, NotFoundError) as exc:
                    if staging.relay:
                        result = self._superseded(key, exc)
                    elif isinstance(exc, ConflictError):
                        result = await self._conflict(key, staging, extra_headers, entry, exc)
                    else:
                        raise
            if watchdog.cancelled_caught:
                raise NetworkError(f"{key}: upload made no progress for {entry.stall:.0f} s")
        except Exception as exc:
            self._failed(key, first_error(exc))
            raise
        finally:
            self.pending.pop(token, None)
            if sending:
                # an attempt whose fate is unknown may have stored these bytes: the next
                # change must not reuse this key/IV for other plaintext (it re-keys)
                dirtystate.seal(staging)
        dirtystate.seal(staging)
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

    def _superseded(self, key: str, why: Exception) -> UploadResult:
        """A metadata change whose object another client changed or deleted first: dropped,
        since nothing local is lost (the content was never ours to keep)."""
        log.warning("oss://%s/%s: metadata change not stored: the object was changed or "
                    "deleted by another client first (%s)", self.objects.store.name, key, why)
        self.conflicts.append({"time": time.time(), "key": key, "copy": None})
        del self.conflicts[:-100]
        return UploadResult("", superseded=True)

    def _failed(self, key: str, exc: BaseException) -> None:
        self.failures.append((time.time(), key, str(exc) or type(exc).__name__))
        del self.failures[:-100]
