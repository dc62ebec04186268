"""``ossencfs mount`` and ``ossencfs umount``.

mount: ``ossencfs mount oss://BUCKET[/PREFIX] MOUNTPOINT --endpoint URL (--rsa-key PEM |
--kms-key CMK) [-f] [-o OPTIONS] [--cache-dir DIR]``; without ``-f`` it returns once mounted.
umount: ``fusermount3 -u`` and then wait until the mount process has uploaded whatever was
still pending and exited, showing progress (read from the mount's state file). With
``-z``/``--no-wait`` it detaches lazily and tells the mount process not to wait: pending
uploads stay journaled and go up at the next mount with the same cache directory.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from ..objects import COPY_LIMIT

from .options import add_connection_options, add_key_options


def _mount(args: argparse.Namespace) -> int:
    from ..fs.mounter import Connectors, run_mount
    from .options import build_keyring, build_store, parse_oss_url
    return run_mount(args, Connectors(parse_oss_url, build_keyring, build_store))


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


def _read_state(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class _Progress:
    """One line per second (or a tqdm bar on a terminal) while pending uploads finish."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def show(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        pending = state.get("pending") or []
        total = sum(p.get("size", 0) for p in pending)
        sent = sum(p.get("sent", 0) for p in pending)
        if self.tty:
            try:
                from tqdm import tqdm
            except ImportError:
                self.tty = False
            else:
                if self.bar is None:
                    self.bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr,
                                    desc="pending uploads")
                self.bar.total = max(total, 1)
                self.bar.n = sent
                self.bar.set_postfix(files=len(pending))
                self.bar.refresh()
                return
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            errors = [p for p in pending if p.get("last_error")]
            line = (f"ossencfs: waiting for {len(pending)} pending upload(s): "
                    f"{sent / 1048576:.1f} of {total / 1048576:.1f} MiB sent")
            if errors:
                line += f"; {len(errors)} retrying (last error: {errors[0]['last_error']})"
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _umount(args: argparse.Namespace) -> int:
    from ..fs.mounter import pidfile_for
    from ..fs.state import state_path_for
    mountpoint = os.path.abspath(args.mountpoint)
    pidfile = pidfile_for(mountpoint)
    state_path = state_path_for(pidfile)
    pid = None
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pass
    before = _read_state(state_path) if args.lazy else None
    if args.lazy and pid is not None:
        try:
            os.kill(pid, signal.SIGUSR1)       # do not wait for pending uploads at exit
        except OSError:
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
    if args.lazy:
        state = before
        n = len((state or {}).get("pending") or [])
        if n:
            print(f"ossencfs: {n} pending upload(s) stay journaled in "
                  f"{(state or {}).get('cache_dir', 'the cache directory')}; they go up at the "
                  f"next mount with the same --cache-dir", file=sys.stderr)
        return 0
    deadline = time.monotonic() + args.timeout
    progress = _Progress()
    started = time.monotonic()
    try:
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                print(f"ossencfs: error: mount process {pid} still uploading after "
                      f"{args.timeout:.0f} s; it keeps running in the background "
                      f"(`ossencfs status {mountpoint}` shows what is left)", file=sys.stderr)
                return 1
            if time.monotonic() - started > 0.5:
                progress.show(_read_state(state_path))
            time.sleep(0.1)
    finally:
        progress.close()
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
                   help="cap of the cache directory: clean blocks (evicted LRU) plus staged "
                        "data not yet uploaded (never evicted; writes get ENOSPC at the cap); "
                        "default 1G")
    p.add_argument("--part-size", type=int, default=8 << 20, metavar="BYTES",
                   help="multipart part size (multiple of 16, >= 102400; default 8 MiB)")
    p.add_argument("--multipart-threshold", type=int, default=16 << 20, metavar="BYTES",
                   help="files at least this big upload in parts (default 16 MiB)")
    p.add_argument("--copy-limit", type=int, default=COPY_LIMIT, metavar="BYTES",
                   help="largest object moved by CopyObject on rename; larger ones (and "
                        "appendable ones) are relayed through this machine, ciphertext only "
                        "(default 10^9: the 1 GB of OSS's older documentation)")
    p.add_argument("--upload-parallelism", type=int, default=4, metavar="N",
                   help="files of 1 MiB or more uploaded at once by the background queue "
                        "(default 4; a file's parts are read from its staging file as they "
                        "are sent, up to 16 at once)")
    p.add_argument("--upload-small-files", type=int, default=16, metavar="N",
                   help="files under 1 MiB uploaded at once by the background queue "
                        "(default 16)")
    p.add_argument("--write-back", type=float, default=0.0, metavar="SECONDS",
                   help="0 (default): close returns once the file is in the bucket. N > 0: "
                        "close returns once the file is staged and journaled on local disk; "
                        "the upload follows N seconds later in the background. fsync always "
                        "waits for the bucket")
    add_connection_options(p)
    add_key_options(p)
    p.set_defaults(func=_mount)

    u = subparsers.add_parser("umount", help="unmount after pending uploads are done")
    u.add_argument("mountpoint", metavar="MOUNTPOINT")
    u.add_argument("-z", "--lazy", "--no-wait", dest="lazy", action="store_true",
                   help="detach now (lazy) and do not wait for pending uploads: they stay "
                        "journaled and go up at the next mount with the same --cache-dir")
    u.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="how long to wait for pending uploads (default 3600)")
    u.set_defaults(func=_umount)
