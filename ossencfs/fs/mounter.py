"""Mount a bucket: build the file system, run pyfuse3 under trio, drain at unmount.

Why it exists: it is the one place that puts the file system together from a typed
``MountConfig`` (``_build``: store, objects, block cache, staging area, journal, model,
upload queue, FUSE operations) and owns its life: the bucket is checked (one listing
request) before mounting, the journal replayed, the pid and state files written, and the
FUSE session served until unmounted. Running it detached is ``fs.daemon``; the option
grammar is ``fs.mountoptions``; the mount point, cache directory and pid file are
``fs.mountpaths``.

Start: the write-back journal of this cache directory is replayed *before* the file system
is mounted (so files show their journaled content from the first lookup), and unusable
entries are quarantined and reported.

Unmount: ``fusermount3 -u`` (or SIGTERM/SIGINT) ends pyfuse3.main; then every pending upload
is done (delays skipped, retries with backoff) before the process exits, and ``ossencfs
umount`` waits for that exit. SIGUSR1 (``ossencfs umount --no-wait``) or a second
SIGTERM/SIGINT makes it exit without waiting: pending uploads stay journaled and go up at the
next mount with the same cache directory.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable

import pyfuse3
import trio

from ..errors import OssEncError
from . import keymap
from .mountoptions import parse_mount_options
from .mountpaths import OtherJournal, check_mountpoint, default_cache_dir, mount_id, \
    other_journals, pidfile_for
from .privatedir import open_private, private_dir
from .readahead import mountinfo

if TYPE_CHECKING:
    from ..envelope.keys import KeyRing
    from ..esdk_objects import EsdkObjects
    from ..store import ObjectStore
    from .inodes import Node
    from .operations import Operations
    from .writeback import WriteBack

log = logging.getLogger(__name__)


#: what ends a mount (``_signals``)
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


class _Spawner:
    """Lets the model start background tasks (read-ahead) before the nursery exists."""

    def __init__(self) -> None:
        self.nursery: trio.Nursery | None = None

    def __call__(self, fn: Callable[[], Awaitable[object]]) -> bool:
        """Start ``fn`` in the background; False when there is no nursery (yet, or any more)."""
        if self.nursery is None:
            return False
        self.nursery.start_soon(fn)
        return True


@dataclass(frozen=True)
class MountConfig:
    """What ``ossencfs mount`` was told, typed (built from its arguments by
    ``cli.mountcmd.mount_config``, the one module that knows both the command line and
    ``fs``). Sizes in bytes, times in seconds."""
    bucket: str
    prefix: str                       # "" or ending in "/"
    mountpoint: str                   # absolute
    endpoint: str                     # URL of OSS
    options: tuple[str, ...]          # ``-o`` groups (``parse_mount_options``)
    cache_dir: str | None             # None: ``default_cache_dir()``
    cache_size: int
    write_back: float                 # 0: upload at close
    part_size: int
    multipart_threshold: int
    upload_parallelism: int
    upload_small_files: int
    copy_limit: int
    foreground: bool


@dataclass(frozen=True)
class Connectors:
    """How a mount reaches its keys and its bucket, made by the mount command from the
    command line (``cli.options``): ``fs`` sits below ``cli`` and never imports it."""
    keyring: Callable[[], KeyRing]
    store: Callable[[str], ObjectStore]         # bucket name -> store
    #: readers of Encryption SDK objects on a store (None: such objects read as stored)
    esdk: Callable[[ObjectStore], EsdkObjects] | None = None


class Mount:
    """One mount: built from a ``MountConfig`` (checks that need no bucket run here, before
    the process detaches), then ``run`` under trio."""

    def __init__(self, config: MountConfig, connect: Connectors) -> None:
        self.config = config
        self.bucket, self.prefix = config.bucket, config.prefix
        self.mountpoint = config.mountpoint
        check_mountpoint(self.mountpoint)
        self.opts = parse_mount_options(list(config.options))
        self.keyring = connect.keyring()
        self.store = connect.store(config.bucket)
        self.esdk = connect.esdk(self.store) if connect.esdk else None
        root = config.cache_dir or default_cache_dir()
        self.base_dir = os.path.join(root, mount_id(config.endpoint, self.bucket, self.prefix))
        for d in (root, self.base_dir):     # refused now, before the mount detaches
            private_dir(d)
        self.cache_size = config.cache_size
        self.write_back = config.write_back
        if self.write_back < 0:
            raise OssEncError("--write-back wants 0 or more seconds")
        self.quarantine_dir = os.path.join(self.base_dir, "quarantine")
        self.cache_root = root
        self.other_journals: list[OtherJournal] = []
        self.no_wait = False
        self._drain_scope: trio.CancelScope | None = None
        self._serving = False        # pyfuse3.main() is running (the FUSE session is open)
        self._closed = False         # the FUSE session was closed (``pyfuse3.close``)
        # resolved now: once mounted, touching the mount point from this process would ask
        # this very process (which is busy) and deadlock
        self.pidfile = pidfile_for(self.mountpoint)

    def fuse_options(self) -> set[str]:
        o = set(pyfuse3.default_options)
        o.add(f"fsname=ossencfs:{self.bucket}/{self.prefix}".rstrip("/"))
        o.add("subtype=ossencfs")
        o.add("noatime")
        if self.opts.allow_other:
            o.add("allow_other")
        if self.opts.read_only:
            o.add("ro")
        return o

    def _build(self, spawn: _Spawner) -> Operations:
        """The file system: store, objects, caches, staging, journal, model, upload queue."""
        from ..objects import EncryptedObjects
        from .attrcache import AttrCache
        from .cache import BlockCache
        from .journal import Journal, MountIdentity
        from .keypool import KeyPool
        from .model import FsModel
        from .operations import Operations
        from .stagingarea import StagingArea
        from .uploader import Uploader
        from .writeback import WriteBack
        staging_dir = os.path.join(self.base_dir, "staging")
        for d in (self.base_dir, staging_dir, os.path.join(self.base_dir, "blocks"), self.quarantine_dir):
            private_dir(d)
        self._lock_cache_dir()
        cfg = self.config
        objects = EncryptedObjects(self.store, self.keyring, part_size=cfg.part_size,
                                   multipart_threshold=cfg.multipart_threshold,
                                   upload_parallelism=cfg.upload_parallelism,
                                   copy_limit=cfg.copy_limit, esdk=self.esdk)
        self.journal = Journal(staging_dir, self.quarantine_dir,
                               MountIdentity(cfg.endpoint, self.bucket, self.prefix))
        staging = StagingArea(staging_dir, self.keyring, self.journal, limit=self.cache_size,
                              keys=KeyPool(self.keyring, spawn))
        cache = BlockCache(os.path.join(self.base_dir, "blocks"), max_bytes=self.cache_size)
        cache.reserved = lambda: staging.used
        staging.make_room = cache.make_room
        if os.stat(staging_dir).st_dev == os.stat(cache.directory or staging_dir).st_dev:
            staging.make_disk_room = cache.make_disk_room   # blocks free room for staged data
        assert self.opts.policy is not None
        self.model = FsModel(self.store, objects, cache, staging, Uploader(objects),
                             prefix=self.prefix, policy=self.opts.policy, ttl=self.opts.ttl,
                             read_only=self.opts.read_only, spawn=spawn,
                             write_back=self.write_back,
                             attr_cache=AttrCache(os.path.join(self.base_dir, "attrs.sqlite")),
                             listing_attrs=self.opts.listing_attrs)
        self.model.kernel_forget = _forget_entry
        self.model.writeback = WriteBack(upload=self.model.upload_job,
                                         writers=self.model.writers, where=self.model.where,
                                         delay=self.write_back,
                                         parallel=max(2, cfg.upload_parallelism),
                                         small_parallel=cfg.upload_small_files)
        return Operations(self.model, after_init=self._raise_readahead)

    def _raise_readahead(self) -> None:
        """After FUSE_INIT's reply (``Operations.init``); never raises (a callback of trio's
        run queue that raised would end the loop)."""
        from .readahead import raise_kernel_readahead
        raise_kernel_readahead(self.mountpoint)

    def _lock_cache_dir(self) -> None:
        """One live mount per cache/staging directory: a second one would see the first one's
        staging entries as leftovers (and, with issue 6's journal, replay them)."""
        self._lock_fd = open_private(os.path.join(self.base_dir, "lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OssEncError(f"cache directory {self.base_dir} is in use by another mount of "
                              f"oss://{self.bucket}/{self.prefix}; use another --cache-dir") from None

    async def _replay(self) -> None:
        """Replay this cache directory's journal; quarantine (and report) what cannot be."""
        good, bad = await trio.to_thread.run_sync(self.journal.scan)
        for ident, reason in bad:
            self.journal.quarantine(ident, reason)
        if good:
            if self.opts.read_only:
                log.warning("journal: %d pending upload(s) in %s not replayed (read-only "
                            "mount); they go up at the next read-write mount", len(good),
                            self.journal.directory)
            else:
                n = await self.model.replay(good, self.journal.quarantine)
                log.info("journal: %d pending upload(s) replayed from %s", n,
                            self.journal.directory)
        self.other_journals = other_journals(self.cache_root, self.base_dir)
        for other in self.other_journals:
            log.warning("journal: %d pending entr%s of %s in %s (not this mount's: they go up "
                        "when that bucket/prefix is mounted with this --cache-dir)",
                        other["entries"], "y" if other["entries"] == 1 else "ies",
                        other.get("url", "another mount"), other["dir"])

    async def run(self, ready: Callable[[str | None], None]) -> int:
        """Check the bucket, mount, report readiness, serve until unmounted, flush; the exit
        status (1: uploads were left journaled although we waited for them)."""
        await self._check_bucket()
        spawn = _Spawner()
        ops = self._build(spawn)
        await self._replay()
        from .state import state_path_for
        state_path = state_path_for(self.pidfile)
        failed = 0
        # From the mount on, a signal is received, never acted on by default (which left a
        # dead FUSE mount and stale pid and state files when it came before ``_signals`` ran):
        # the receiver opens before the mount, and ``_signals`` acts on what came meanwhile.
        # When it closes it restores the handlers it found and redelivers to them a signal it
        # had not handed out (trio/_signals.py, _redeliver_remaining): found as SIG_DFL, one
        # at the end of the drain killed the process. Ignoring them first (no checkpoint
        # between) leaves no window, and after it the process only exits.
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        with trio.open_signal_receiver(*_SIGNALS) as signals:
            self._mount(ops)
            try:
                self._announce(state_path)
                ready(None)
                failed = await self._serve(spawn, state_path, signals)
            finally:
                self._clean_up(state_path)
        return 1 if failed and not self.no_wait else 0

    async def _check_bucket(self) -> None:
        """One listing request: the bucket answers (and our credentials work) before we mount."""
        try:
            with trio.fail_after(60):
                await self.store.list_page(self.prefix, "/", None, 1)
        except trio.TooSlowError:
            raise OssEncError(f"oss://{self.bucket}: no answer within 60 s") from None

    def _mount(self, ops: Operations) -> None:
        """Open the FUSE session on the mount point (``pyfuse3.init``)."""
        try:
            pyfuse3.init(ops, self.mountpoint, self.fuse_options())
        except RuntimeError as exc:
            raise OssEncError(f"cannot mount on {self.mountpoint}: {exc} "
                              f"(stale mount? try fusermount3 -u)") from None

    def _announce(self, state_path: str) -> None:
        """Mounted: the pid file (``ossencfs umount`` waits for it), a log line, the first
        state file (``ossencfs status``)."""
        from .state import snapshot, write_state
        with os.fdopen(open_private(self.pidfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
            f.write(f"{os.getpid()}\n")
        log.info("mounted oss://%s/%s on %s%s", self.bucket, self.prefix, self.mountpoint,
                    f" (write-back {self.write_back:g} s)" if self.write_back else "")
        write_state(state_path, snapshot(self))

    async def _serve(self, spawn: _Spawner, state_path: str,
                     signals: AsyncIterator[int]) -> int:
        """Serve FUSE requests until unmounted, with the upload queue, the state file, signal
        handling and credential renewal beside it; then unmount and drain (``_drain``).
        Returns how many uploads are left."""
        from .state import publish
        wb = self.model.writeback
        assert wb is not None
        async with trio.open_nursery() as nursery:
            spawn.nursery = nursery
            nursery.start_soon(self._signals, signals)
            nursery.start_soon(wb.run)
            nursery.start_soon(publish, self, state_path)
            nursery.start_soon(self._renew_credentials)
            self._serving = True
            await pyfuse3.main()
            # the session ends here (unmounted by a signal or by fusermount3 -u): from now on
            # a signal must not touch it (pyfuse3.terminate() on a closed session crashes)
            self._serving = False
            # unmount before draining: nothing may hang on a mount nobody serves
            pyfuse3.close(unmount=True)
            self._closed = True
            self.model.kernel_forget = _no_kernel    # a drain's failure has no kernel to tell
            failed = await self._drain(wb)
            spawn.nursery = None
            nursery.cancel_scope.cancel()
        return failed

    async def _drain(self, wb: WriteBack[Node]) -> int:
        """Upload what is pending unless told not to wait (SIGUSR1, a second signal: that
        cancels the drain); returns how many are left, journaled for the next mount."""
        if not self.no_wait:
            with trio.CancelScope() as self._drain_scope:
                failed = await self.model.flush_all()
            if self._drain_scope.cancelled_caught:
                failed = len(wb.jobs)
        else:
            failed = len(wb.jobs)
        if failed and (self.no_wait or self._drain_scope is not None):
            log.warning("%d pending upload(s) left journaled in %s; they go up at the "
                        "next mount with this --cache-dir", failed,
                        self.journal.directory)
        return failed

    def _clean_up(self, state_path: str) -> None:
        """Whatever happened: the session closed, the attribute cache closed, the pid and
        state files removed."""
        self._serving = False              # (signals are received, not acted on, until exit)
        if not self._closed:
            pyfuse3.close(unmount=True)
        self.model.attr_cache.close()
        for path in (self.pidfile, state_path):
            try:
                os.unlink(path)
            except OSError:
                pass
        log.info("unmounted %s", self.mountpoint)

    async def _renew_credentials(self) -> None:
        """Renew temporary credentials when due even while no request asks for them, so the
        first request after a quiet spell does not wait; failures are logged by the source."""
        source = getattr(self.store, "credentials", None)
        if source is None:
            return
        while True:
            await trio.sleep(source.seconds_to_renewal())
            try:
                await trio.to_thread.run_sync(source.get)
            except OssEncError:
                pass

    async def _signals(self, signals: AsyncIterator[int]) -> None:
        """SIGTERM/SIGINT/SIGHUP while mounted: unmount, then upload what is pending. Any later
        one, one after an external unmount (``fusermount3 -u``: the mount is gone, only the
        drain is left), and SIGUSR1: stop waiting; pending uploads stay journaled for the next
        mount. Every path ends in a clean exit with the journal intact."""
        terminated = False
        async for signum in signals:
            # after `fusermount3 -u` the kernel mount is gone at once, but pyfuse3.main()
            # returns only when it next reads /dev/fuse: the signal is then already one
            # "while draining", not a request to unmount
            if signum == signal.SIGUSR1 or terminated or not self._serving \
                    or not self._still_mounted():
                log.warning("not waiting for pending uploads: they stay journaled")
                self.no_wait = True
                if self._drain_scope is not None:
                    self._drain_scope.cancel()
                continue
            log.info("signal received: unmounting %s", self.mountpoint)
            terminated = True
            pyfuse3.terminate()

    def _still_mounted(self) -> bool:
        """Whether a FUSE file system is still mounted on the mount point (mountinfo)."""
        try:
            return any(kind.startswith("fuse") for _, kind in mountinfo(self.mountpoint))
        except OSError:
            return True


def _no_kernel(parent_ino: int, name: str) -> None:
    """``kernel_forget`` once the FUSE session is closed (draining after unmount)."""


def _forget_entry(parent_ino: int, name: str) -> None:
    """Drop a name from the kernel's entry cache (in pyfuse3's invalidation thread)."""
    pyfuse3.invalidate_entry_async(parent_ino, keymap.to_bytes(name), ignore_enoent=True)
