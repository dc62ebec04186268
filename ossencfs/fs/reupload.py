"""A pending metadata change of an object that CopyObject may not change: its re-upload.

Why it exists: real OSS refuses any CopyObject that adds or changes user metadata of a
client-side-encrypted object (EC 0005-00000421), refuses to copy appendable objects, and
refuses CopyObject above its size limit (SPEC D.13, A.10 item 8). chmod, chown and utimens of
such an object (POSIX attributes live in ``x-oss-meta-*``, ``fs.posix``) can therefore only be
stored by uploading the object again: its *unchanged* stored bytes (same data key, same IV,
same ciphertext: nothing is decrypted and no key material changes, DESIGN invariant 2) with
the new headers, relayed from the object itself (``EncryptedObjects.relay``).

A ``Reupload`` is a ``Staging`` without a data file, so that every rule of the dirty-file
life applies to it unchanged: it is journaled when the change is acknowledged (and replayed
after a crash), coalesced by the upload queue (a burst of chmod/chown/utimens on one file
costs one re-upload), folded into by later changes, moved along by a rename, flushed by
fsync and at unmount, and guarded against other clients like any upload (a HEAD right before
the PUT or CompleteMultipartUpload). What differs:

- Its bytes are the object's own, read at upload time from ``key`` pinned to ``base_etag``:
  a write to the file replaces it with an ordinary staging (``FsModel._ensure_staging``).
- Its wrapped key is the object's, so "did our earlier attempt land?" is answered by the
  headers: an object with that key, this size and our POSIX headers is this re-upload.
- When another client changed or deleted the object first, the metadata change is dropped
  (logged): there is no local content to keep, and a conflict copy of the old version would
  only confuse.
"""
from __future__ import annotations

import errno
from typing import Callable, Mapping

from ..store import ObjectInfo
from . import dirtystate
from .journal import JournalEntry, Manifest, Relay
from .staging import Staging
from .stagingarea import StagingArea


class Reupload(Staging):
    """The re-upload of the object at ``key`` (version ``base_etag``) with new headers."""

    relay = True

    def __init__(self, area: StagingArea, ident: str, key: str, size: int, base_etag: str,
                 object_type: str, kept: Mapping[str, str], crypto_headers: Mapping[str, str],
                 *, restore: bool = False) -> None:
        super().__init__(area, ident, key, None, crypto_headers, size, None, 0, base_etag)
        self._buf = None                      # no data of its own, in memory or on disk
        self.entry_written = restore
        self.kept = dict(kept)                # the headers to keep (``objects.kept_headers``)
        self.object_type = object_type

    def source(self) -> ObjectInfo:
        """The version whose stored bytes are sent."""
        return ObjectInfo(key=self.key, size=self.size, etag=self.base_etag or "", mtime=0.0,
                          object_type=self.object_type, headers=dict(self.kept))

    @property
    def complete(self) -> bool:
        return True

    @property
    def sealable(self) -> bool:
        return True

    async def materialize(self, alive: Callable[[], None] | None = None) -> None:
        return None

    async def write(self, off: int, data: bytes) -> None:
        raise OSError(errno.EINVAL, "internal: a re-upload has no data of its own")

    truncate = write                          # type: ignore[assignment]

    def manifest(self) -> Manifest:
        return {**super().manifest(), "extents": [],
                "relay": {"object_type": self.object_type, "kept": self.kept}}

    def _save_sync(self, entry: Manifest, durable: bool) -> None:
        self._write_entry(entry, durable)     # no data file to name


def restore_reupload(area: StagingArea, entry: JournalEntry, relay: Relay) -> Reupload:
    """A ``Reupload`` from a replayed journal entry (``relay``: its ``entry.relay``)."""
    st = Reupload(area, entry.id, entry.key, entry.size, entry.base_etag or "",
                  relay.object_type, relay.kept, entry.crypto_headers, restore=True)
    dirtystate.restored(st, sealed=entry.sealed)
    st.prior_keys = list(entry.prior_keys)
    st.synced = st.entry_committed = True
    st.entry_sealed = st.sealed
    st.posix = dict(entry.posix)
    area.active.add(st)
    return st
