"""The places a mount uses outside the bucket: its mount point, its cache directory, its
pid file, and the journals other mounts left under the same cache root.

Why it exists: ``ossencfs mount``, ``umount`` and ``status`` must agree on these names (a
``status`` finds a mount by its pid file, a mount finds its journal by its cache directory),
and the mount point is checked before the process detaches, so that a user reads the reason
in the terminal. Nothing here mounts or talks to the bucket.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat as stat_module
import tempfile
from typing import NotRequired, TypedDict

from ..errors import OssEncError
from .privatedir import check_private_dir
from .readahead import mountinfo


class OtherJournal(TypedDict):
    """Journal entries of another mount id under this cache root (``other_journals``), as
    shown by ``ossencfs status``."""
    dir: str                          # its staging directory
    entries: int                      # how many ``*.json`` entries
    url: NotRequired[str]             # ``oss://bucket/prefix``, when its first entry says


def mount_id(endpoint: str, bucket: str, prefix: str) -> str:
    """Cache/staging directory name: one per (endpoint, bucket, prefix), so a journal or a
    cache is never applied to another bucket."""
    return hashlib.sha256(f"{endpoint}\0{bucket}\0{prefix}".encode()).hexdigest()[:16]


def default_cache_dir() -> str:
    if os.getuid() == 0:
        return "/var/cache/ossencfs"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "ossencfs")


def pidfile_for(mountpoint: str) -> str:
    """Where the mount process records its pid, so ``ossencfs umount`` can wait for it."""
    name = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:16] + ".pid"
    for base in ("/run/ossencfs", os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), "ossencfs"),
                 os.path.join(tempfile.gettempdir(), f"ossencfs-{os.getuid()}")):
        if not base or base == "ossencfs":
            continue
        try:
            os.makedirs(base, mode=0o700, exist_ok=True)
            if check_private_dir(base) is None and os.access(base, os.W_OK):
                return os.path.join(base, name)    # never a directory another user controls
        except OSError:
            continue
    raise OssEncError("no private directory for the pid file (/run/ossencfs, $XDG_RUNTIME_DIR/ossencfs, "
                      f"{tempfile.gettempdir()}/ossencfs-{os.getuid()}): each is missing, not writable, or "
                      "writable by other users")


def check_mountpoint(path: str) -> None:
    """OssEncError, in words a user can act on, unless ``path`` can take a new mount: missing,
    not a directory, a dead FUSE mount (ENOTCONN: its process ended without unmounting), or
    a live FUSE mount (a second one would hide the first, and ``status`` would lose it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise OssEncError(f"mount point {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise OssEncError(f"mount point {path} is a dead mount (its process ended without "
                              f"unmounting): run `ossencfs umount {path}` first") from None
        raise OssEncError(f"mount point {path}: {exc.strerror}") from None
    if not stat_module.S_ISDIR(st.st_mode):
        raise OssEncError(f"mount point {path} is not a directory")
    try:
        fuse = any(kind.startswith("fuse") for _, kind in mountinfo(path))
    except OSError:
        fuse = False
    if fuse:
        raise OssEncError(f"{path} is already a FUSE mount point: unmount it first")


def other_journals(cache_root: str, own: str) -> list[OtherJournal]:
    """Journal entries left under *other* mount ids of this cache root: reported, not touched."""
    out: list[OtherJournal] = []
    try:
        names = os.listdir(cache_root)
    except OSError:
        return out
    for name in sorted(names):
        d = os.path.join(cache_root, name)
        if os.path.realpath(d) == os.path.realpath(own):
            continue
        sdir = os.path.join(d, "staging")
        try:
            entries = [n for n in os.listdir(sdir) if n.endswith(".json")]
        except OSError:
            continue
        if not entries:
            continue
        info: OtherJournal = {"dir": sdir, "entries": len(entries)}
        try:
            with open(os.path.join(sdir, entries[0]), "rb") as f:
                mount = json.loads(f.read()).get("mount") or {}
            info["url"] = f"oss://{mount.get('bucket')}/{mount.get('prefix', '')}"
        except (OSError, ValueError, AttributeError):
            pass
        out.append(info)
    return out
