"""Run a mount in the foreground or as a daemon that reports "mounted" only once it is.

Why it exists: ``ossencfs mount`` returning 0 must mean "mounted and the bucket answered".
The process forks *before* trio (and any thread) starts. The child becomes the daemon (new
session, stdin from /dev/null, stdout and stderr into ``mount.log`` in its cache directory),
checks the bucket (one listing request), mounts (pyfuse3.init) and writes "OK" into a pipe;
the parent exits 0 only when it reads that, and otherwise prints the child's error (the line
after "ERR ") and exits 1. The mounting itself is ``fs.mounter.Mount``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from typing import NoReturn

import trio

from ..errors import OssEncError
from .mounter import Connectors, Mount, MountConfig
from .privatedir import open_private

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8             # <malloc.h>


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let glibc's malloc keep at most ``arenas`` arenas (mallopt M_ARENA_MAX; glibc only).

    By default each thread that allocates may get an arena of its own (up to 8 per core),
    and a freed buffer stays in the arena it came from: the mount's worker threads each held
    their own MiB-sized body and cipher buffers, so peak RSS during a 256 MiB copy was
    ~140 MiB; with two arenas ~95 MiB, and no slower (scripts/bench.py, loopback). Call it
    before any thread starts. False where there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def run_mount(config: MountConfig, connect: Connectors) -> int:
    """Mount ``config`` and serve until unmounted (foreground: the process then ends with the
    exit status, ``_exit``), or until mounted (detached: the daemon serves on; returns the
    exit status of ``ossencfs mount``)."""
    limit_malloc_arenas()
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
        _exit(trio.run(mount.run, lambda err: None))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                     # child: becomes the daemon
        os.close(r)
        _daemon(mount, w)            # (never returns)
    os.close(w)
    return _wait_ready(r, pid)


def _exit(code: int) -> NoReturn:
    """End the process once the mount has cleaned up (unmounted, uploads drained or journaled,
    attribute cache closed, pid and state files removed): log handlers flushed, then
    ``os._exit``. Interpreter finalization (tearing down oss2, cryptography, trio, ...) took
    0.11-0.16 s after the last upload, which ``fusermount3 -u`` followed by a wait for the
    process, a service manager's stop and ``scripts/bench.py``'s "in the bucket" figures
    all waited for; the detached daemon has always ended this way (``_daemon``)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _daemon(mount: Mount, w: int) -> NoReturn:
    """The child: detach, run the mount, report readiness (or the error) on ``w``; exits."""
    code = 1
    try:
        _detach(os.path.join(mount.base_dir, "mount.log"))
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


def _detach(log_path: str) -> None:
    """New session; stdin from /dev/null, stdout and stderr appended to ``log_path``; cwd /."""
    os.setsid()
    logfd = open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    os.close(devnull)
    os.close(logfd)
    os.chdir("/")


def _wait_ready(r: int, pid: int) -> int:
    """The parent: 0 once the child wrote "OK"; else print its error and return 1."""
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
