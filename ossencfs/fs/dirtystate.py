"""The states of a dirty file, and the only calls that change them.

Why it exists: the life of a file written here used to be spread over booleans (``dirty`` and
``upload_busy`` on the ``Node``, ``sealed`` and ``committed`` on its ``Staging``) set in a dozen
places. Each pair is now one enum, read through properties of the old names (``node.dirty``,
``node.upload_busy``, ``staging.sealed``, ``staging.committed``: read-only), and changed only by
the named transitions below, so that a grep for a transition finds every place the state moves.
``docs/write-path.md`` describes who calls each one, under which lock, and the crash windows.

Two enums, because they describe two things with different lifetimes: a node's ``DirtyState``
(is there local content the bucket lacks, and is it being sent right now?) outlives its
stagings (a sealed staging is replaced by a successor); a staging's ``KeyState`` (may its data
key already be in the bucket, and is its journal entry an acknowledgement to replay?) is what
its journal entry records.
"""
from __future__ import annotations

import enum
from typing import Protocol


class DirtyState(enum.Enum):
    """A node's content relative to the bucket."""

    CLEAN = "clean"          # nothing local the bucket lacks (a sealed staging may stay for readers)
    DIRTY = "dirty"          # local content or metadata not in the bucket yet
    UPLOADING = "uploading"  # dirty, and an upload holds ``node.lock``: the staging is frozen

    @property
    def dirty(self) -> bool:
        return self is not DirtyState.CLEAN


class KeyState(enum.Enum):
    """A staging's data key and journal entry.

    ``sealed``: its key/IV may be in the bucket, so it must never encrypt other plaintext (the
    next change builds a successor under a fresh key). ``committed``: a close/fsync/setattr was
    acknowledged on it, so its journal entry is replayed after a crash."""

    OPEN = "open"                          # takes writes; nothing acknowledged
    COMMITTED = "committed"                # acknowledged, key never sent
    SEALED_COMMITTED = "sealed+committed"  # acknowledged, key may be in the bucket (sending,
    #                                        sent with its fate unknown, or sealed at commit)
    SEALED = "sealed"                      # key may be in the bucket; nothing to replay

    @property
    def sealed(self) -> bool:
        return self in (KeyState.SEALED, KeyState.SEALED_COMMITTED)

    @property
    def committed(self) -> bool:
        return self in (KeyState.COMMITTED, KeyState.SEALED_COMMITTED)

    @staticmethod
    def of(*, sealed: bool, committed: bool) -> "KeyState":
        if sealed:
            return KeyState.SEALED_COMMITTED if committed else KeyState.SEALED
        return KeyState.COMMITTED if committed else KeyState.OPEN


class HasDirtyState(Protocol):
    dirty_state: DirtyState


class HasKeyState(Protocol):
    key_state: KeyState


# -- a node's transitions (caller holds node.lock, except where said) ---------------------------

def mark_dirty(node: HasDirtyState) -> None:
    """Local content or metadata changed (write, truncate, create, setattr re-upload, replay).
    Left as it is while an upload runs (it cannot: the upload holds the lock)."""
    if node.dirty_state is DirtyState.CLEAN:
        node.dirty_state = DirtyState.DIRTY


def mark_clean(node: HasDirtyState) -> None:
    """Nothing local to send any more: uploaded, unlinked, renamed over, quarantined."""
    node.dirty_state = DirtyState.CLEAN


def begin_upload(node: HasDirtyState) -> None:
    """``Uploader.upload`` is about to run with the lock held: readers skip the lock."""
    node.dirty_state = DirtyState.UPLOADING


def end_upload(node: HasDirtyState) -> None:
    """The upload returned or failed (in ``finally``); still dirty until ``mark_clean``."""
    if node.dirty_state is DirtyState.UPLOADING:
        node.dirty_state = DirtyState.DIRTY


# -- a staging's transitions -------------------------------------------------------------------

def commit(st: HasKeyState) -> None:
    """Acknowledged (``Lifecycle.commit_locked``, a successor taking over an acknowledged
    entry): replay it after a crash."""
    st.key_state = KeyState.of(sealed=st.key_state.sealed, committed=True)


def seal(st: HasKeyState) -> None:
    """Its key may reach the bucket from now on: set right before the first byte is sent
    (``Uploader.upload``), or at commit for a small complete staging whose upload follows."""
    st.key_state = KeyState.of(sealed=True, committed=st.key_state.committed)


def uncommit(st: HasKeyState) -> None:
    """Its journal entry is removed: the upload landed, or the name went away (unlink, rename
    over it) while the file stays open for its readers and writers."""
    st.key_state = KeyState.of(sealed=st.key_state.sealed, committed=False)


def restored(st: HasKeyState, *, sealed: bool) -> None:
    """A staging rebuilt from a committed journal entry (``sealed`` as the entry says)."""
    st.key_state = KeyState.of(sealed=sealed, committed=True)
