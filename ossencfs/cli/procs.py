"""The mount process as other commands see it: is it alive, what does its state file say.

``umount`` (waits for the exit) and ``status`` (lists mounts) used to have a copy each, and
the copies disagreed on a zombie: a zombie has exited (it is only waiting to be reaped), so
it counts as gone for both now.
"""
from __future__ import annotations

import json
import os
from typing import Any

#: A state file read back (``fs.state.snapshot`` as JSON): written by a mount process that may
#: run another version, and not validated, so its fields are read with ``.get`` and defaults
#: and their values are ``Any``.
StateDoc = dict[str, Any]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a process of another user does; a zombie does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def read_state(path: str) -> StateDoc | None:
    """The state file a mount publishes (``fs.state``), or None if missing or unreadable."""
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None
