"""What ``-o`` and ``--cache-size`` say: ossfs-style mount options and sizes, parsed.

Why it exists: the option grammar (names, octal modes, numbers, the fstab options that are
accepted and ignored) is plain text handling that the mounter and the mount command share;
it is kept apart from the code that mounts, so it can be read and tested alone
(``tests/mount/test_units.py``). Errors are ``OssEncError`` with the offending option named.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, TypeVar

from ..errors import OssEncError
from . import posix

N = TypeVar("N", int, float)

#: fstab/mount(8) options that mean nothing to this file system: accepted, ignored
_IGNORED_OPTIONS = {"rw", "defaults", "auto", "noauto", "nofail", "_netdev", "user", "users",
                    "nouser", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime",
                    "noatime", "relatime", "nodiratime", "async", "sync"}


@dataclass
class MountOptions:
    allow_other: bool = False
    read_only: bool = False
    policy: posix.MountPolicy | None = None
    ttl: float = 2.0                  # seconds
    listing_attrs: bool = False


def _octal(name: str, value: str) -> int:
    try:
        return int(value, 8)
    except ValueError:
        raise OssEncError(f"-o {name}= wants an octal number, got {value!r}") from None


def _number(name: str, value: str, kind: Callable[[str], N]) -> N:
    try:
        return kind(value)
    except ValueError:
        raise OssEncError(f"-o {name}= wants a number, got {value!r}") from None


def parse_mount_options(items: list[str] | None) -> MountOptions:
    """ossfs-style ``-o`` options: allow_other, ro, uid=, gid=, umask=, file_mode=, dir_mode=,
    attr_timeout= (seconds; also the listing/HEAD cache lifetime), listing_attrs (objects whose
    attributes are not cached locally get theirs from the listing: no HEAD per entry)."""
    opts = MountOptions(policy=posix.MountPolicy(default_uid=os.getuid(), default_gid=os.getgid()))
    policy = opts.policy
    assert policy is not None
    for group in items or []:
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            name, eq, value = item.partition("=")
            if name == "allow_other" and not eq:
                opts.allow_other = True
            elif name == "ro" and not eq:
                opts.read_only = True
            elif name == "listing_attrs" and not eq:
                opts.listing_attrs = True
            elif name == "uid" and eq:
                policy.uid = _number(name, value, int)
            elif name == "gid" and eq:
                policy.gid = _number(name, value, int)
            elif name == "umask" and eq:
                policy.umask = _octal(name, value)
            elif name == "file_mode" and eq:
                policy.file_mode = _octal(name, value) & 0o7777
            elif name == "dir_mode" and eq:
                policy.dir_mode = _octal(name, value) & 0o7777
            elif name in ("attr_timeout", "entry_timeout") and eq:
                opts.ttl = max(0.0, _number(name, value, float))
            elif name in _IGNORED_OPTIONS or name.startswith("x-systemd.") or name.startswith("comment="):
                continue
            else:
                raise OssEncError(f"unknown mount option -o {item}")
    return opts


def parse_size(text: str) -> int:
    """"1G", "512M", "100KiB", "4096" -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise OssEncError(f"bad size {text!r}")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
                                    "t": 1 << 40}[m.group(2)])
