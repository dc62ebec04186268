"""POSIX attributes <-> OSS user metadata, following ossfs 1.x (s3fs) conventions.

ossfs 1.x stores ``x-oss-meta-mode`` (decimal st_mode incl. the file type bits),
``x-oss-meta-uid``/``-gid`` (decimal) and ``x-oss-meta-mtime`` (decimal seconds, optionally
with a fractional part). Keeping exactly that spelling means a bucket written through ossencfs
shows the same owners and modes when mounted by ossfs, and the other way round.

Symlinks use the ossfs 1.x default form: a regular object whose ``x-oss-meta-mode`` has
S_IFLNK and whose *body* is the link target. The body is written through the normal write
path, so the target is encrypted like any file content. Native OSS symlinks (object type
``Symlink``) are read too, never written.
"""
from __future__ import annotations

import stat
import time
from dataclasses import dataclass
from typing import Mapping

META_MODE = "x-oss-meta-mode"
META_UID = "x-oss-meta-uid"
META_GID = "x-oss-meta-gid"
META_MTIME = "x-oss-meta-mtime"
META_ATIME = "x-oss-meta-atime"      # ossfs 1.x writes these two as well (SPEC D.12)
META_CTIME = "x-oss-meta-ctime"
META_RDEV = "x-oss-meta-rdev"        # device number of a device node (ossfs 1.x, as s3fs)
POSIX_HEADERS = (META_MODE, META_UID, META_GID, META_MTIME, META_ATIME, META_CTIME, META_RDEV)
#: file types kept as an empty object whose x-oss-meta-mode carries the type (ossfs 1.x / s3fs)
SPECIAL_KINDS = (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK)


@dataclass
class MountPolicy:
    """What ``-o uid=,gid=,umask=,file_mode=,dir_mode=`` ask for (ossfs semantics).

    ``uid``/``gid`` (when given) override the owner shown for every entry, as in s3fs;
    ``umask`` masks every mode shown; ``file_mode``/``dir_mode`` are used for objects that
    carry no ``x-oss-meta-mode`` (written by other tools).
    """

    uid: int | None = None
    gid: int | None = None
    umask: int = 0
    file_mode: int = 0o644
    dir_mode: int = 0o755
    default_uid: int = 0
    default_gid: int = 0


@dataclass(slots=True)
class PosixMeta:
    mode: int                       # full st_mode, including the file type bits
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int | None = None     # None: shown as the mtime (objects of other tools)
    ctime_ns: int | None = None
    rdev: int = 0                   # device nodes only
    #: headers present but unusable (unparsable or out of range: written by another client),
    #: ignored field by field; the caller warns once per object version. A tuple: nearly
    #: always the one shared empty tuple, where a list was 56 bytes per known inode (issue 17)
    ignored: tuple[str, ...] = ()

    def touch_ctime(self) -> None:
        """An attribute or the content changed now (POSIX: ctime follows every change)."""
        self.ctime_ns = time.time_ns()

    @property
    def kind(self) -> int:
        return _shared_mode(stat.S_IFMT(self.mode))


#: one int object per st_mode value (at most 2**16 of them): the mode and file type of every
#: known inode refer to these instead of holding ints of their own (CPython shares only
#: -5..256; 28-32 bytes each per known inode, issue 17)
_MODES: dict[int, int] = {}


def _shared_mode(mode: int) -> int:
    """``mode`` as the one int object kept for its value (``_MODES``)."""
    if not 0 <= mode <= 0o177777:
        return mode
    return _MODES.setdefault(mode, mode)


def _int(value: str | None, lo: int = -(1 << 63), hi: int = (1 << 63) - 1) -> int | None:
    """The integer a header holds, None when absent, unparsable or outside [lo, hi]."""
    if value is None or len(value) > 40:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        return None
    return n if lo <= n <= hi else None


_ID_MAX = (1 << 32) - 2          # uid/gid: 32 bits, (uid_t)-1 means "no change"
_KINDS = (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, *SPECIAL_KINDS)


def parse_mtime_ns(value: str | None) -> int | None:
    """Accept "SECONDS" and "SECONDS.FRACTION" (s3fs writes both forms over its history)."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > 40:
        return None
    try:
        if "." in value:
            sec, frac = value.split(".", 1)
            if not frac.isdigit():
                return None
            frac = (frac + "000000000")[:9]
            ns = int(sec) * 1_000_000_000 + int(frac)
        else:
            ns = int(value) * 1_000_000_000
    except ValueError:
        return None
    return ns if -(1 << 63) < ns < (1 << 63) else None    # what st_*time_ns can hold


def format_mtime(mtime_ns: int) -> str:
    sec, nsec = divmod(mtime_ns, 1_000_000_000)
    return str(sec) if nsec == 0 else f"{sec}.{nsec:09d}"


def from_headers(headers: Mapping[str, str], *, is_dir: bool, fallback_mtime: float,
                 policy: MountPolicy) -> PosixMeta:
    """Attributes of an object from its (lower-case) headers; defaults where absent."""
    h = {k.lower(): v for k, v in headers.items()}
    mode = _int(h.get(META_MODE), 0, 0o177777)
    if mode is not None and stat.S_IFMT(mode) not in _KINDS:
        mode = None
    stored_mode = mode
    if mode is not None and stat.S_IFMT(mode) == 0:
        mode |= stat.S_IFDIR if is_dir else stat.S_IFREG
    if mode is None or (is_dir and not stat.S_ISDIR(mode)):
        mode = (stat.S_IFDIR | policy.dir_mode) if is_dir else (stat.S_IFREG | policy.file_mode)
    if not is_dir and stat.S_ISDIR(mode):
        mode = stat.S_IFREG | stat.S_IMODE(mode)
    uid = _int(h.get(META_UID), 0, _ID_MAX)
    gid = _int(h.get(META_GID), 0, _ID_MAX)
    mtime_ns = parse_mtime_ns(h.get(META_MTIME))
    rdev = _int(h.get(META_RDEV), 0, (1 << 32) - 1)
    parsed = {META_MODE: stored_mode, META_UID: uid, META_GID: gid, META_MTIME: mtime_ns,
              META_ATIME: parse_mtime_ns(h.get(META_ATIME)),
              META_CTIME: parse_mtime_ns(h.get(META_CTIME)), META_RDEV: rdev}
    return PosixMeta(
        mode=_shared_mode(mode),
        uid=policy.default_uid if uid is None else uid,
        gid=policy.default_gid if gid is None else gid,
        mtime_ns=int(fallback_mtime * 1e9) if mtime_ns is None else mtime_ns,
        atime_ns=parsed[META_ATIME],
        ctime_ns=parsed[META_CTIME],
        rdev=rdev or 0,
        ignored=tuple(sorted(n for n, v in parsed.items() if v is None and n in h)),
    )


def default_meta(*, is_dir: bool, mtime: float, policy: MountPolicy) -> PosixMeta:
    """For entries only seen in a listing (no headers yet)."""
    return from_headers({}, is_dir=is_dir, fallback_mtime=mtime, policy=policy)


def new_meta(kind: int, perm: int, uid: int, gid: int) -> PosixMeta:
    """For things created through the mount: every field is set and will be persisted."""
    now = time.time_ns()
    return PosixMeta(mode=kind | stat.S_IMODE(perm), uid=uid, gid=gid, mtime_ns=now,
                     atime_ns=now, ctime_ns=now)


def to_headers(meta: PosixMeta) -> dict[str, str]:
    """The ossfs 1.x header set for ``meta``: mode, uid, gid and mtime always (so ossfs sees
    what we see), atime and ctime once they are known."""
    out = {
        META_MODE: str(meta.mode),
        META_UID: str(meta.uid),
        META_GID: str(meta.gid),
        META_MTIME: format_mtime(meta.mtime_ns),
    }
    if meta.atime_ns is not None:
        out[META_ATIME] = format_mtime(meta.atime_ns)
    if meta.ctime_ns is not None:
        out[META_CTIME] = format_mtime(meta.ctime_ns)
    if meta.kind in (stat.S_IFCHR, stat.S_IFBLK):
        out[META_RDEV] = str(meta.rdev)
    return out


def stores(headers: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether an object's ``headers`` already carry every POSIX value of ``wanted``
    (``to_headers``) but its ctime, which each change sets anew (it is not worth a
    re-upload when nothing else changes)."""
    have = {k.lower(): v for k, v in headers.items()}
    return all(have.get(k) == v for k, v in wanted.items() if k != META_CTIME)


def shown_mode(meta: PosixMeta, policy: MountPolicy) -> int:
    return meta.mode & ~(policy.umask & 0o7777)


def shown_uid(meta: PosixMeta, policy: MountPolicy) -> int:
    return meta.uid if policy.uid is None else policy.uid


def shown_gid(meta: PosixMeta, policy: MountPolicy) -> int:
    return meta.gid if policy.gid is None else policy.gid


def is_symlink_headers(headers: Mapping[str, str]) -> bool:
    return kind_of_headers(headers) == stat.S_IFLNK


def kind_of_headers(headers: Mapping[str, str]) -> int:
    """The file type an object's ``x-oss-meta-mode`` gives it: a symlink or a special file
    (fifo, socket, device) of ossfs 1.x, else a regular file."""
    mode = _int({k.lower(): v for k, v in headers.items()}.get(META_MODE))
    kind = stat.S_IFMT(mode) if mode is not None else 0
    return kind if kind == stat.S_IFLNK or kind in SPECIAL_KINDS else stat.S_IFREG
