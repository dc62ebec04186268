"""``ossencfs mount`` and ``ossencfs umount``.

mount: ``ossencfs mount oss://BUCKET[/PREFIX] MOUNTPOINT --endpoint URL (--rsa-key PEM |
--kms-key CMK) [-f] [-o OPTIONS] [--cache-dir DIR]``; without ``-f`` it returns once mounted.
umount: ``fusermount3 -u`` and then wait until the mount process has uploaded whatever was
still dirty and exited.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from .options import add_connection_options, add_key_options


def _mount(args: argparse.Namespace) -> int:
    from ..fs.mounter import run_mount
    return run_mount(args)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:                               # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _umount(args: argparse.Namespace) -> int:
    from ..fs.mounter import pidfile_for
    mountpoint = os.path.abspath(args.mountpoint)
    pidfile = pidfile_for(mountpoint)
    pid = None
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pass
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-u"] + (["-z"] if args.lazy else []) + [mountpoint] if tool else \
        ["umount"] + (["-l"] if args.lazy else []) + [mountpoint]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip() or f"{cmd[0]} failed"
        print(f"ossencfs: error: {msg}", file=sys.stderr)
        return 1
    if pid is None:
        return 0
    deadline = time.monotonic() + args.timeout
    told = False
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            print(f"ossencfs: error: mount process {pid} still uploading after {args.timeout:.0f} s;"
                  f" it keeps running in the background", file=sys.stderr)
            return 1
        if not told and time.monotonic() > deadline - args.timeout + 1:
            print("ossencfs: waiting for pending uploads to finish...", file=sys.stderr)
            told = True
        time.sleep(0.1)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "mount", help="mount a bucket (or a prefix of it) as an encrypted folder",
        description="Mount oss://BUCKET[/PREFIX] on MOUNTPOINT. Files are stored as OSS "
                    "client-side-encrypted objects that the official SDKs read; directories "
                    "use ossfs conventions (dir/ markers, x-oss-meta-mode/uid/gid/mtime).")
    p.add_argument("url", metavar="oss://BUCKET[/PREFIX]")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground (default: detach once mounted)")
    p.add_argument("-o", dest="options", action="append", metavar="OPTIONS",
                   help="comma-separated: allow_other, ro, uid=N, gid=N, umask=OCT, "
                        "file_mode=OCT, dir_mode=OCT, attr_timeout=SECONDS (default 2)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="block cache and staging area (ciphertext only); default "
                        "/var/cache/ossencfs as root, else ~/.cache/ossencfs")
    p.add_argument("--cache-size", default="1G", metavar="SIZE",
                   help="cap of the on-disk block cache (default 1G)")
    p.add_argument("--part-size", type=int, default=8 << 20, metavar="BYTES",
                   help="multipart part size (multiple of 16, >= 102400; default 8 MiB)")
    p.add_argument("--multipart-threshold", type=int, default=16 << 20, metavar="BYTES",
                   help="files at least this big upload in parts (default 16 MiB)")
    p.add_argument("--upload-parallelism", type=int, default=4, metavar="N",
                   help="parts uploaded at once (default 4)")
    add_connection_options(p)
    add_key_options(p)
    p.set_defaults(func=_mount)

    u = subparsers.add_parser("umount", help="unmount after pending uploads are done")
    u.add_argument("mountpoint", metavar="MOUNTPOINT")
    u.add_argument("-z", "--lazy", action="store_true", help="lazy unmount (detach now)")
    u.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="how long to wait for pending uploads (default 3600)")
    u.set_defaults(func=_umount)
