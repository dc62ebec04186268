"""Build the filesystem from command-line arguments and run pyfuse3 under trio.

Detaching: the process forks *before* trio (and any thread) starts. The child checks the
bucket (one listing request), mounts (pyfuse3.init), then writes "OK" into a pipe; the parent
exits 0 only when it reads that, and otherwise prints the child's error and exits 1. So
``ossencfs mount`` returning 0 means "mounted and the bucket answered".

Unmount: ``fusermount3 -u`` (or SIGTERM/SIGINT) ends pyfuse3.main; then every file still dirty
is uploaded before the process exits, and ``ossencfs umount`` waits for that exit.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import os
import re
import signal
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import pyfuse3
import trio

from ..errors import OssEncError
from . import posix

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
    attr_timeout= (seconds; also the listing/HEAD cache lifetime)."""
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
            if os.access(base, os.W_OK):
                return os.path.join(base, name)
        except OSError:
            continue
    return os.path.join(tempfile.gettempdir(), name)


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

    def __call__(self, fn: Callable[[], Awaitable[Any]]) -> None:
        if self.nursery is not None:
            self.nursery.start_soon(fn)


class Mount:
    def __init__(self, args: argparse.Namespace) -> None:
        from ..cli.options import build_keyring, build_store, parse_oss_url
        self.args = args
        bucket, prefix = parse_oss_url(args.url)
        prefix = prefix.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket, self.prefix = bucket, prefix
        self.mountpoint = os.path.abspath(args.mountpoint)
        if not os.path.isdir(self.mountpoint):
            raise OssEncError(f"mount point {self.mountpoint} is not a directory")
        self.opts = parse_mount_options(args.options)
        self.keyring = build_keyring(args)
        self.store = build_store(args, bucket)
        root = args.cache_dir or default_cache_dir()
        self.base_dir = os.path.join(root, mount_id(args.endpoint, bucket, prefix))
        self.cache_size = parse_size(args.cache_size)
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
        from .cache import BlockCache
        from .model import FsModel
        from .operations import Operations
        from .staging import StagingArea
        from .uploader import Uploader
        os.makedirs(self.base_dir, mode=0o700, exist_ok=True)
        # one live mount per cache/staging directory: a second one would see the first one's
        # staging entries as leftovers (and, with issue 6's journal, replay them)
        self._lock_fd = os.open(os.path.join(self.base_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OssEncError(f"cache directory {self.base_dir} is in use by another mount of "
                              f"oss://{self.bucket}/{self.prefix}; use another --cache-dir") from None
        objects = EncryptedObjects(self.store, self.keyring, part_size=self.args.part_size,
                                   multipart_threshold=self.args.multipart_threshold,
                                   upload_parallelism=self.args.upload_parallelism)
        cache = BlockCache(os.path.join(self.base_dir, "blocks"), max_bytes=self.cache_size)
        staging = StagingArea(os.path.join(self.base_dir, "staging"), self.keyring)
        assert self.opts.policy is not None
        self.model = FsModel(self.store, objects, cache, staging, Uploader(objects),
                             prefix=self.prefix, policy=self.opts.policy, ttl=self.opts.ttl,
                             read_only=self.opts.read_only, spawn=spawn)
        return Operations(self.model)

    async def run(self, ready: Callable[[str | None], None]) -> int:
        """Check the bucket, mount, report readiness, serve until unmounted, flush."""
        try:
            with trio.fail_after(60):
                await self.store.list_page(self.prefix, "/", None, 1)
        except trio.TooSlowError:
            raise OssEncError(f"oss://{self.bucket}: no answer within 60 s") from None
        spawn = _Spawner()
        ops = self._build(spawn)
        try:
            pyfuse3.init(ops, self.mountpoint, self.fuse_options())
        except RuntimeError as exc:
            raise OssEncError(f"cannot mount on {self.mountpoint}: {exc} "
                              f"(stale mount? try fusermount3 -u)") from None
        pidfile = self.pidfile
        failed = 0
        try:
            with open(pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
            log.warning("mounted oss://%s/%s on %s", self.bucket, self.prefix, self.mountpoint)
            ready(None)
            async with trio.open_nursery() as nursery:
                spawn.nursery = nursery
                nursery.start_soon(self._signals)
                await pyfuse3.main()
                spawn.nursery = None
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                failed = await self.model.flush_all()
            pyfuse3.close(unmount=True)
            try:
                os.unlink(pidfile)
            except OSError:
                pass
            log.warning("unmounted %s", self.mountpoint)
        return 1 if failed else 0

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for _ in sigs:
                log.warning("signal received: unmounting %s", self.mountpoint)
                pyfuse3.terminate()
                return


def run_mount(args: argparse.Namespace) -> int:
    # oss2 warns on every raw GET of an encrypted object; reading ciphertext is the point here
    logging.getLogger("oss2").setLevel(logging.ERROR)
    mount = Mount(args)              # argument, key and credential errors surface here
    if args.foreground:
        return trio.run(mount.run, lambda err: None)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                     # child: becomes the daemon
        os.close(r)
        code = 1
        try:
            os.setsid()
            os.makedirs(mount.base_dir, mode=0o700, exist_ok=True)
            logfd = os.open(os.path.join(mount.base_dir, "mount.log"),
                            os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
