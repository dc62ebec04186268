"""The dirty-file state machines (``fs.dirtystate``): each transition, and that the old
boolean names are read-only views of the enums."""
from __future__ import annotations

import stat
from types import SimpleNamespace

import pytest

from ossencfs.fs import dirtystate
from ossencfs.fs.dirtystate import DirtyState, KeyState
from ossencfs.fs.inodes import Node
from ossencfs.fs.posix import PosixMeta


def _node() -> Node:
    return Node(2, "f", stat.S_IFREG, PosixMeta(mode=stat.S_IFREG | 0o644, uid=0, gid=0,
                                                 mtime_ns=0))


def test_node_life():
    node = _node()
    assert node.dirty_state is DirtyState.CLEAN and not node.dirty and not node.busy
    dirtystate.mark_dirty(node)
    assert node.dirty and not node.upload_busy and node.busy
    dirtystate.begin_upload(node)
    assert node.dirty and node.upload_busy
    dirtystate.mark_dirty(node)                  # a change cannot end an upload
    assert node.upload_busy
    dirtystate.end_upload(node)
    assert node.dirty_state is DirtyState.DIRTY
    dirtystate.mark_clean(node)
    assert node.dirty_state is DirtyState.CLEAN
    dirtystate.end_upload(node)                  # (finally after a clean: stays clean)
    assert node.dirty_state is DirtyState.CLEAN
    with pytest.raises(AttributeError):
        node.dirty = True                        # type: ignore[misc]


@pytest.mark.parametrize("steps, want", [
    ([], KeyState.OPEN),
    (["commit"], KeyState.COMMITTED),
    (["seal"], KeyState.SEALED),
    (["commit", "seal"], KeyState.SEALED_COMMITTED),
    (["seal", "commit"], KeyState.SEALED_COMMITTED),
    (["commit", "seal", "uncommit"], KeyState.SEALED),       # uploaded: entry removed
    (["commit", "uncommit"], KeyState.OPEN),                 # unlinked while open
    (["seal", "seal", "uncommit"], KeyState.SEALED),         # nothing unseals
])
def test_key_state(steps, want):
    st = SimpleNamespace(key_state=KeyState.OPEN)
    for step in steps:
        getattr(dirtystate, step)(st)
    assert st.key_state is want
    assert st.key_state.sealed == ("seal" in steps)
    assert KeyState.of(sealed=want.sealed, committed=want.committed) is want


def test_restored_entry():
    st = SimpleNamespace(key_state=KeyState.OPEN)
    dirtystate.restored(st, sealed=True)
    assert st.key_state is KeyState.SEALED_COMMITTED
    dirtystate.restored(st, sealed=False)
    assert st.key_state is KeyState.COMMITTED
