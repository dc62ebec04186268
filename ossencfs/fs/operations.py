"""pyfuse3.Operations: FUSE call -> model call -> errno.

An exception escaping a handler kills the pyfuse3 main loop, so every handler goes through
``_guard``: FUSEError passes, ossencfs errors become their ``errno`` with one log line naming
the object, OSError keeps its errno (ENOSPC from a full staging disk), anything else is EIO
with a traceback in the log. Each handler also runs under a deadline so nothing waits forever.
"""
from __future__ import annotations

import errno
import functools
import logging
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Concatenate, Coroutine, ParamSpec, Sequence, TypeVar

import pyfuse3
import trio

from ..errors import ConflictError, OssEncError
from .inodes import Entry
from . import keymap
from .context import NAME_MAX
from .model import FsModel

log = logging.getLogger(__name__)

REPEAT_QUIET = 60.0     # seconds: a repeated failure of one object is logged once per this

T = TypeVar("T")
P = ParamSpec("P")
META_TIMEOUT = 120.0       # lookups, listings, metadata changes (the store retries inside)
LONG_TIMEOUT = 3600.0      # directory renames, and everything that may wait for a file's lock
                           # while an upload holds it (uploads carry their own stall timeout)


def _name(raw: bytes, *, lookup: bool = False) -> str:
    """The name as the model knows it (``fs.keymap``: bytes that are not UTF-8 survive); one
    that could not list back as the same bytes cannot exist (lookup) or be created."""
    if len(raw) > NAME_MAX:
        raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
    name = keymap.from_bytes(raw)
    if not keymap.usable(name):
        raise pyfuse3.FUSEError(errno.ENOENT if lookup else errno.EINVAL)
    return name


def _first(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def _guard(timeout: float) -> Callable[[Callable[Concatenate["Operations", P], Awaitable[T]]],
                                       Callable[Concatenate["Operations", P], Coroutine[Any, Any, T]]]:
    """The handler's own signature is kept (``ParamSpec``): mypy checks each against
    ``pyfuse3.Operations``. (``Coroutine[Any, Any, T]`` is what mypy makes of ``async def``:
    its send and yield types are trio's business.)"""
    def deco(fn: Callable[Concatenate["Operations", P], Awaitable[T]]
             ) -> Callable[Concatenate["Operations", P], Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def wrapper(self: "Operations", *args: P.args, **kwargs: P.kwargs) -> T:
            try:
                with trio.fail_after(timeout):
                    return await fn(self, *args, **kwargs)
            except BaseException as raw:
                exc = _first(raw)
                if isinstance(exc, pyfuse3.FUSEError):
                    raise exc from None
                if isinstance(exc, trio.Cancelled):
                    raise
                code = self._errno_for(fn.__name__, args, exc)
                raise pyfuse3.FUSEError(code) from None
        return wrapper
    return deco


#: operations whose first argument is a file handle / a directory handle, not an inode
_FILE_HANDLE_OPS = frozenset({"read", "write", "flush", "release", "fsync"})
_DIR_HANDLE_OPS = frozenset({"readdir", "releasedir", "fsyncdir"})


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, model: FsModel, after_init: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.model = model
        self._after_init = after_init
        self._dirs: dict[int, tuple[int, list[tuple[str, Entry]] | None]] = {}
        self._next_dh = 0
        # when each object's last failure was logged: a repeated one (``OssEncError.repeat``,
        # e.g. a remembered KMS outage) is named once per REPEAT_QUIET seconds per object
        self._repeats_mono: OrderedDict[str, float] = OrderedDict()

    def init(self) -> None:
        """FUSE_INIT, called by pyfuse3 in the trio loop *before* the reply goes out.
        ``after_init`` must see the kernel's state after that reply (the kernel sets the
        mount's read-ahead from it: ``readahead.raise_kernel_readahead``), so it runs once the
        loop gets back to its queue, which is after this request has been answered."""
        if self._after_init is not None:
            trio.lowlevel.current_trio_token().run_sync_soon(self._after_init)

    # ``args``: a handler's positional arguments (inodes, handles, names, attributes, a
    # request context, ...): heterogeneous, so ``object``, narrowed by ``isinstance`` where read
    def _errno_for(self, op: str, args: Sequence[object], exc: BaseException) -> int:
        what = self._describe(op, args)
        if isinstance(exc, trio.TooSlowError):
            log.error("%s %s: timed out", op, what)
            return errno.EIO
        if isinstance(exc, ConflictError):
            # the object changed under an open file (ETag pinned reads, If-Match copies);
            # EEXIST would mislead callers of read/close (uploads make conflict copies)
            log.error("%s %s: object changed by another client: %s", op, what, exc)
            return errno.EIO
        if isinstance(exc, OssEncError):
            (log.debug if self._logged_before(exc, what) else log.error)("%s %s: %s", op, what, exc)
            return exc.errno or errno.EIO
        if isinstance(exc, OSError) and exc.errno:
            log.error("%s %s: %s", op, what, exc)
            return exc.errno
        log.error("%s %s: unexpected %s", op, what, type(exc).__name__, exc_info=exc)
        return errno.EIO

    def _logged_before(self, exc: OssEncError, what: str) -> bool:
        """Whether a repeated failure of ``what`` was logged within REPEAT_QUIET seconds: a
        burst of reads of one file logs one line, while every other object that meets the same
        remembered failure is still named once (issue 13: every failure once, by its name)."""
        now = time.monotonic()
        seen = self._repeats_mono.get(what)
        if exc.repeat and seen is not None and now - seen < REPEAT_QUIET:
            return True
        self._repeats_mono[what] = now
        self._repeats_mono.move_to_end(what)
        while len(self._repeats_mono) > 1024:
            self._repeats_mono.popitem(last=False)
        return False

    def _describe(self, op: str, args: Sequence[object]) -> str:
        """Name the object a failing call was about. The first int argument is a file handle
        (read, write, ...), a directory handle (readdir, ...) or an inode (everything else):
        each is looked up in its own table, never one as another."""
        try:
            first = args[0] if args else None
            node = None
            if not isinstance(first, int):
                pass
            elif op in _FILE_HANDLE_OPS:
                h = self.model.handles.get(first)
                node = h.node if h is not None else None
            elif op in _DIR_HANDLE_OPS:
                dh = self._dirs.get(first)
                node = self.model.inodes.get(dh[0]) if dh is not None else None
            else:
                node = self.model.inodes.get(first)
            if node is not None:
                where = self.model.where(node)
                if len(args) > 1 and isinstance(args[1], bytes) and node.is_dir:
                    where = where.rstrip("/") + "/" + keymap.from_bytes(args[1])
                return where
        except Exception:   # describing must never fail the error path
            pass
        return "?"

    # -- names ------------------------------------------------------------------------------
    @_guard(META_TIMEOUT)
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        return await self.model.lookup(parent_inode, _name(name, lookup=True))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            try:
                self.model.forget(ino, n)
            except Exception:
                log.exception("forget %d", ino)

    @_guard(META_TIMEOUT)
    async def getattr(self, inode: int,
                      ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        return await self.model.getattr(inode)

    @_guard(LONG_TIMEOUT)
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self.model.setattr(inode, attr, fields, fh)

    @_guard(META_TIMEOUT)
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return keymap.to_bytes(await self.model.readlink(inode))

    @_guard(META_TIMEOUT)
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self.model.mknod(parent_inode, _name(name), mode, rdev, ctx)

    @_guard(META_TIMEOUT)
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self.model.mkdir(parent_inode, _name(name), mode, ctx)

    @_guard(LONG_TIMEOUT)
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.model.unlink(parent_inode, _name(name, lookup=True))

    @_guard(META_TIMEOUT)
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.model.rmdir(parent_inode, _name(name, lookup=True))

    @_guard(META_TIMEOUT)
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self.model.symlink(parent_inode, _name(name), keymap.from_bytes(target), ctx)

    @_guard(LONG_TIMEOUT)
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        await self.model.rename(parent_inode_old, _name(name_old, lookup=True), parent_inode_new,
                                _name(name_new), flags)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)      # objects cannot share content

    # -- files ------------------------------------------------------------------------------
    @_guard(LONG_TIMEOUT)
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return await self.model.open(inode, flags)

    @_guard(LONG_TIMEOUT)
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        return await self.model.create(parent_inode, _name(name), mode, flags, ctx)

    @_guard(LONG_TIMEOUT)
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.model.read(fh, off, size)

    @_guard(LONG_TIMEOUT)
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.model.write(fh, off, buf)

    @_guard(LONG_TIMEOUT)
    async def flush(self, fh: int) -> None:
        await self.model.flush(fh)

    @_guard(LONG_TIMEOUT)
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.model.fsync(fh)

    @_guard(LONG_TIMEOUT)
    async def release(self, fh: int) -> None:
        await self.model.release(fh)

    # -- directories ------------------------------------------------------------------------
    @_guard(META_TIMEOUT)
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.model.node(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        self._next_dh += 1
        self._dirs[self._next_dh] = (inode, None)
        return self._next_dh

    @_guard(META_TIMEOUT)
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        inode, snapshot = self._dirs.get(fh, (None, None))
        if inode is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if snapshot is None or start_id == 0:
            # one snapshot per opendir, so offsets stay valid while the bucket changes, and a
            # long walk (`ls -l` of 10,000 entries) never lists the directory again midway
            entries = await self.model.list_dir(self.model.node(inode))
            snapshot = [(name, entries[name]) for name in sorted(entries)]
            self._dirs[fh] = (inode, snapshot)
        parent = self.model.node(inode)
        for i in range(start_id, len(snapshot)):
            name, entry = snapshot[i]
            node = self.model.node_from_entry(parent, entry)
            if not pyfuse3.readdir_reply(token, keymap.to_bytes(name), self.model.attrs(node), i + 1):
                return
            node.nlookup += 1

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    @_guard(META_TIMEOUT)
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return self.model.statfs()

    # -- extended attributes: not stored (header names/values are too restricted to keep
    # -- arbitrary user.* data safely). ENOSYS, not ENOTSUP: the kernel then remembers that
    # -- this file system has none and answers EOPNOTSUPP itself, so `ls -l` (which asks for
    # -- ACLs and security labels of every entry) costs no round trip per file; cp -a and
    # -- rsync -X treat EOPNOTSUPP as "no extended attributes".
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)
