"""Directories and files the mount keeps its state in, safe from other local users.

A mount running as root with ``--cache-dir`` pointing at a directory another user controls
would follow that user's symlinks (``mount.log`` -> a root-only file: appended to) and let them
read or swap cached ciphertext, journal entries and the attribute database. So every directory
the mount keeps state in must be a real directory (not a symlink), owned by the mount's user and
not writable by group or others; a directory it creates is made 0700, and every file 0600
(``open_private``, which never follows a symlink). Anything else is refused with one error that
names the directory and says why.
"""
from __future__ import annotations

import os
import stat

from ..errors import OssEncError


def check_private_dir(path: str, st: os.stat_result | None = None) -> str | None:
    """Why ``path`` is not a private directory of this user, or None when it is."""
    st = st or os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by the mount's user (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"is writable by {'group and others' if st.st_mode & 0o022 == 0o022 else 'group' if st.st_mode & 0o020 else 'others'} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def private_dir(path: str, what: str = "cache directory") -> str:
    """Make ``path`` (0700; its missing parents too) or accept it as it is when private;
    OssEncError naming the directory and the reason otherwise. Returns ``path``."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    why = check_private_dir(path)
    if why is not None:
        raise OssEncError(f"{what} {path} {why}: refusing to keep mount state there (use a directory "
                          f"only this user can write, e.g. chown it and chmod 0700, or another --cache-dir)")
    return path


def open_private(path: str, flags: int) -> int:
    """``os.open`` of a state or log file: never through a symbolic link (ELOOP), created 0600."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
