"""Build the filesystem from command-line arguments and run pyfuse3 under trio.

Detaching: the process forks *before* trio (and any thread) starts. The child checks the
bucket (one listing request), mounts (pyfuse3.init), then writes "OK" into a pipe; the parent
exits 0 only when it reads that, and otherwise prints the child's error and exits 1. So
``ossencfs mount`` returning 0 means "mounted and the bucket answered".

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

import errno
import fcntl
import hashlib
import logging
import os
import re
import signal
import stat as stat_module
import sys
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import pyfuse3
import trio

from ..errors import OssEncError
from . import keymap, posix
from .privatedir import check_private_dir, open_private, private_dir
from .readahead import mountinfo

if TYPE_CHECKING:
    from ..envelope.keys import KeyRing
    from ..store import ObjectStore

log = logging.getLogger(__name__)

_IGNORED_OPTIONS = {"rw", "defaults", "auto", "noauto", "nofail", "_netdev", "user", "users",
                    "nouser", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime",
                    "noatime", "relatime", "nodiratime", "async", "sync"}


@dataclass
class MountOptions:
    allow_other: bool = False
    read_only: bool = False
    policy: posix.MountPolicy | None = None
    ttl: float = 2.0
    listing_attrs: bool = False


def _octal(name: str, value: str) -> int:
    try:
        return int(value, 8)
    except ValueError:
        raise OssEncError(f"-o {name}= wants an octal number, got {value!r}") from None


def _number(name: str, value: str, kind: Callable[[str], Any] = int) -> Any:
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
                policy.uid = _number(name, value)
            elif name == "gid" and eq:
                policy.gid = _number(name, value)
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


def parse_size(text: str) -> int:
    """"1G", "512M", "100KiB", "4096" -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise OssEncError(f"bad size {text!r}")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
                                    "t": 1 << 40}[m.group(2)])


class _Spawner:
    """Lets the model start background tasks (read-ahead) before the nursery exists."""

    def __init__(self) -> None:
        self.nursery: trio.Nursery | None = None

    def __call__(self, fn: Callable[[], Awaitable[Any]]) -> bool:
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
    esdk: Callable[[ObjectStore], Any] | None = None


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


class Mount:
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
        self.other_journals: list[dict[str, Any]] = []
        self.no_wait = False
        self._drain_scope: trio.CancelScope | None = None
        self._serving = False        # pyfuse3.main() is running (the FUSE session is open)
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

    def _build(self, spawn: _Spawner) -> Any:
        from ..objects import EncryptedObjects
        from .attrcache import AttrCache
        from .cache import BlockCache
        from .journal import Journal, MountIdentity
        from .model import FsModel
        from .operations import Operations
        from .stagingarea import StagingArea
        from .uploader import Uploader
        from .writeback import WriteBack
        staging_dir = os.path.join(self.base_dir, "staging")
        for d in (self.base_dir, staging_dir, os.path.join(self.base_dir, "blocks"), self.quarantine_dir):
            private_dir(d)
        # one live mount per cache/staging directory: a second one would see the first one's
        # staging entries as leftovers (and, with issue 6's journal, replay them)
        self._lock_fd = open_private(os.path.join(self.base_dir, "lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OssEncError(f"cache directory {self.base_dir} is in use by another mount of "
                              f"oss://{self.bucket}/{self.prefix}; use another --cache-dir") from None
        cfg = self.config
        objects = EncryptedObjects(self.store, self.keyring, part_size=cfg.part_size,
                                   multipart_threshold=cfg.multipart_threshold,
                                   upload_parallelism=cfg.upload_parallelism,
                                   copy_limit=cfg.copy_limit, esdk=self.esdk)
        self.journal = Journal(staging_dir, self.quarantine_dir,
                               MountIdentity(cfg.endpoint, self.bucket, self.prefix))
        staging = StagingArea(staging_dir, self.keyring, self.journal, limit=self.cache_size)
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
        return Operations(self.model)

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
        """Check the bucket, mount, report readiness, serve until unmounted, flush."""
        try:
            with trio.fail_after(60):
                await self.store.list_page(self.prefix, "/", None, 1)
        except trio.TooSlowError:
            raise OssEncError(f"oss://{self.bucket}: no answer within 60 s") from None
        spawn = _Spawner()
        ops = self._build(spawn)
        await self._replay()
        try:
            pyfuse3.init(ops, self.mountpoint, self.fuse_options())
        except RuntimeError as exc:
            raise OssEncError(f"cannot mount on {self.mountpoint}: {exc} "
                              f"(stale mount? try fusermount3 -u)") from None
        from .readahead import raise_kernel_readahead
        raise_kernel_readahead(self.mountpoint)
        from .state import publish, snapshot, state_path_for, write_state
        pidfile = self.pidfile
        state_path = state_path_for(pidfile)
        failed = 0
        closed = False
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)   # until _signals takes over
        try:
            with os.fdopen(open_private(pidfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
                f.write(f"{os.getpid()}\n")
            log.info("mounted oss://%s/%s on %s%s", self.bucket, self.prefix, self.mountpoint,
                        f" (write-back {self.write_back:g} s)" if self.write_back else "")
            write_state(state_path, snapshot(self))
            ready(None)
            wb = self.model.writeback
            assert wb is not None
            async with trio.open_nursery() as nursery:
                spawn.nursery = nursery
                nursery.start_soon(self._signals)
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
                closed = True
                self.model.kernel_forget = _no_kernel    # a drain's failure has no kernel to tell
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
                spawn.nursery = None
                nursery.cancel_scope.cancel()
        finally:
            self._serving = False
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):   # cleanup is short:
                signal.signal(signum, signal.SIG_IGN)                       # let it finish
            if not closed:
                pyfuse3.close(unmount=True)
            self.model.attr_cache.close()
            for path in (pidfile, state_path):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            log.info("unmounted %s", self.mountpoint)
        return 1 if failed and not self.no_wait else 0

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

    async def _signals(self) -> None:
        """SIGTERM/SIGINT/SIGHUP while mounted: unmount, then upload what is pending. Any later
        one, one after an external unmount (``fusermount3 -u``: the mount is gone, only the
        drain is left), and SIGUSR1: stop waiting; pending uploads stay journaled for the next
        mount. Every path ends in a clean exit with the journal intact."""
        terminated = False
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                       signal.SIGUSR1) as sigs:
            async for signum in sigs:
                if signum == signal.SIGUSR1 or terminated or not self._serving:
                    log.warning("not waiting for pending uploads: they stay journaled")
                    self.no_wait = True
                    if self._drain_scope is not None:
                        self._drain_scope.cancel()
                    continue
                log.info("signal received: unmounting %s", self.mountpoint)
                terminated = True
                pyfuse3.terminate()


def other_journals(cache_root: str, own: str) -> list[dict[str, Any]]:
    """Journal entries left under *other* mount ids of this cache root: reported, not touched."""
    import json
    out: list[dict[str, Any]] = []
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
        info: dict[str, Any] = {"dir": sdir, "entries": len(entries)}
        try:
            with open(os.path.join(sdir, entries[0]), "rb") as f:
                mount = json.loads(f.read()).get("mount") or {}
            info["url"] = f"oss://{mount.get('bucket')}/{mount.get('prefix', '')}"
        except (OSError, ValueError, AttributeError):
            pass
        out.append(info)
    return out


def run_mount(config: MountConfig, connect: Connectors) -> int:
    # oss2 warns on every raw GET of an encrypted object; reading ciphertext is the point here
    logging.getLogger("oss2").setLevel(logging.ERROR)
    # a mount is a service: its log (journal, --log file, stderr with -f) shows lifecycle
    # events (mounted, journal replayed, unmounted) and retries at INFO, not only problems
    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))
    os.umask(0o077)                  # whatever creates a file here (sqlite's -wal/-shm too): 0600
    # (files made in the mounted file system get the modes their callers ask for: not affected)
    mount = Mount(config, connect)   # argument, key and credential errors surface here
    if config.foreground:
        return trio.run(mount.run, lambda err: None)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                     # child: becomes the daemon
        os.close(r)
        code = 1
        try:
            os.setsid()
            logfd = open_private(os.path.join(mount.base_dir, "mount.log"),
                                 os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            os.close(devnull)
            os.close(logfd)
            os.chdir("/")
            sent = False

            def ready(err: str | None) -> None:
                nonlocal sent
                if not sent:
                    os.write(w, b"OK\n" if err is None else f"ERR {err}\n".encode())
                    os.close(w)
                    sent = True
            try:
                code = trio.run(mount.run, ready)
            except BaseException as exc:       # report to the waiting parent, then log
                msg = str(exc) if isinstance(exc, OssEncError) else f"{type(exc).__name__}: {exc}"
                if not sent:
                    ready(msg)
                log.error("mount failed: %s", msg)
                code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 4096)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    msg = b"".join(chunks).decode(errors="replace").strip()
    if msg == "OK":
        return 0
    os.waitpid(pid, os.WNOHANG)
    err = msg[4:] if msg.startswith("ERR ") else "the mount process exited before the mount was ready"
    print(f"ossencfs: error: {err}", file=sys.stderr)
    return 1


def _no_kernel(parent_ino: int, name: str) -> None:
    """``kernel_forget`` once the FUSE session is closed (draining after unmount)."""


def _forget_entry(parent_ino: int, name: str) -> None:
    """Drop a name from the kernel's entry cache (in pyfuse3's invalidation thread)."""
    pyfuse3.invalidate_entry_async(parent_ino, keymap.to_bytes(name), ignore_enoent=True)
