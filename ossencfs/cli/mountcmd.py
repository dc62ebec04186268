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
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Protocol

from ..errors import OssEncError
from ..objects import COPY_LIMIT

from .options import add_connection_options, add_key_options
from .procs import StateDoc, pid_alive, read_state

if TYPE_CHECKING:
    from ..fs.mounter import MountConfig


def mount_config(args: argparse.Namespace) -> MountConfig:
    """``ossencfs mount``'s arguments as the typed ``fs.mounter.MountConfig``."""
    from ..fs.mounter import MountConfig
    from ..fs.mountoptions import parse_size
    from .options import parse_oss_url
    bucket, prefix = parse_oss_url(args.url)
    prefix = prefix.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return MountConfig(
        bucket=bucket, prefix=prefix, mountpoint=os.path.realpath(args.mountpoint),
        endpoint=args.endpoint, options=tuple(args.options or ()), cache_dir=args.cache_dir,
        cache_size=parse_size(args.cache_size), write_back=float(args.write_back or 0.0),
        part_size=args.part_size, multipart_threshold=args.multipart_threshold,
        upload_parallelism=args.upload_parallelism, upload_small_files=args.upload_small_files,
        copy_limit=args.copy_limit, foreground=args.foreground)


_HIDDEN_SECRET = "_OSSENCFS_HIDDEN_SECRET"


def _hide_secret_from_ps() -> None:
    """``--access-key-secret`` on the command line would show in ``ps`` for as long as the
    mount runs: the process re-executes itself without it, handing the value over in its
    environment (which only the same user and root can read), and removes it from there."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--access-key-secret" and i + 1 < len(argv):
            value, rest = argv[i + 1], argv[:i] + argv[i + 2:]
        elif arg.startswith("--access-key-secret="):
            value, rest = arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
        else:
            continue
        env = dict(os.environ)
        env[_HIDDEN_SECRET] = value
        os.execve(sys.executable, [sys.executable, "-m", "ossencfs", *rest], env)


def _mount(args: argparse.Namespace) -> int:
    from ..fs.daemon import run_mount
    from ..fs.mounter import Connectors
    from .configfile import apply_config
    from .options import build_esdk, build_keyring, build_store
    if args.access_key_secret:
        _hide_secret_from_ps()
    hidden = os.environ.pop(_HIDDEN_SECRET, None)
    if hidden:
        args.access_key_secret = hidden
    apply_config(args, args.config_defaults)
    _take_passwd_file(args)
    if not args.url or not args.mountpoint:
        raise OssEncError("mount needs oss://BUCKET[/PREFIX] and MOUNTPOINT (arguments or "
                          "url/mountpoint in --config)")
    config = mount_config(args)
    return run_mount(config, Connectors(keyring=lambda: build_keyring(args),
                                        store=lambda bucket: build_store(args, bucket),
                                        esdk=lambda store: build_esdk(args, store)))


def _take_passwd_file(args: argparse.Namespace) -> None:
    """ossfs's ``-o passwd_file=FILE`` is ours to read, not a FUSE option."""
    kept = []
    for item in args.options or []:
        rest = []
        for opt in item.split(","):
            if opt.startswith("passwd_file="):
                args.passwd_file = opt[len("passwd_file="):]
            else:
                rest.append(opt)
        if rest:
            kept.append(",".join(rest))
    args.options = kept


class _Bar(Protocol):
    """What ``_Progress`` uses of a ``tqdm.tqdm`` (tqdm ships no type information)."""
    total: float
    n: float

    def set_postfix(self, **kwargs: object) -> None: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...


class _Progress:
    """One line per second (or a tqdm bar on a terminal) while pending uploads finish."""

    def __init__(self) -> None:
        self.bar: _Bar | None = None
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def show(self, state: StateDoc | None) -> None:
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
    from ..fs.mountpaths import pidfile_for
    from ..fs.readahead import mountinfo
    from ..fs.state import state_path_for
    if args.mountpoint is None:
        from .configfile import load_config
        args.mountpoint = load_config(args.config).get("mountpoint") if args.config else None
        if not args.mountpoint:
            raise OssEncError("umount needs MOUNTPOINT (argument or mountpoint in --config)")
    mountpoint = os.path.realpath(args.mountpoint)   # as the kernel records it
    pidfile = pidfile_for(mountpoint)
    state_path = state_path_for(pidfile)
    pid = _read_pid(pidfile)
    before = read_state(state_path) if args.lazy else None
    if args.lazy and pid is not None:
        try:
            os.kill(pid, signal.SIGUSR1)       # do not wait for pending uploads at exit
        except OSError:
            pass
    if mountinfo(mountpoint):
        tool = shutil.which("fusermount3") or shutil.which("fusermount")
        cmd = [tool, "-u"] + (["-z"] if args.lazy else []) + [mountpoint] if tool else \
            ["umount"] + (["-l"] if args.lazy else []) + [mountpoint]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip() or f"{cmd[0]} failed"
            print(f"ossencfs: error: {msg}", file=sys.stderr)
            return 1
    elif pid is None or not pid_alive(pid):
        print(f"ossencfs: error: {mountpoint}: not mounted", file=sys.stderr)
        return 1
    # else: unmounted already, its process still uploading: wait for it as after fusermount
    if pid is None:
        return 0
    if args.lazy:
        state = before
        pending = (state or {}).get("pending") or []
        n = sum(1 for p in pending if p.get("journaled", True))
        if n:
            print(f"ossencfs: {n} pending upload(s) stay journaled in "
                  f"{(state or {}).get('cache_dir', 'the cache directory')}; they go up at the "
                  f"next mount with the same --cache-dir", file=sys.stderr)
        if len(pending) > n:
            print(f"ossencfs: {len(pending) - n} upload(s) at close or fsync still in flight "
                  f"(not journaled: the mount process finishes them before those calls return)",
                  file=sys.stderr)
        return 0
    return _wait_for_exit(pid, mountpoint, state_path, args.timeout)


def _read_pid(pidfile: str) -> int | None:
    """The mount process's pid from its pid file (None: no such file, or not a number)."""
    try:
        with open(pidfile) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _wait_for_exit(pid: int, mountpoint: str, state_path: str, timeout: float) -> int:
    """Wait (``timeout`` seconds at most) for the unmounted mount's process to finish its
    uploads and exit, showing progress from its state file; the exit status of umount."""
    deadline = time.monotonic() + timeout
    progress = _Progress()
    started = time.monotonic()
    try:
        while pid_alive(pid):
            if time.monotonic() > deadline:
                print(f"ossencfs: error: mount process {pid} still uploading after "
                      f"{timeout:.0f} s; it keeps running in the background "
                      f"(`ossencfs status {mountpoint}` shows what is left)", file=sys.stderr)
                return 1
            if time.monotonic() - started > 0.5:
                progress.show(read_state(state_path))
            time.sleep(0.1)
    finally:
        progress.close()
    return 0


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The mount and umount commands."""
    p = subparsers.add_parser(
        "mount", help="mount a bucket (or a prefix of it) as an encrypted folder",
        description="Mount oss://BUCKET[/PREFIX] on MOUNTPOINT. Files are stored as OSS "
                    "client-side-encrypted objects that the official SDKs read; directories "
                    "use ossfs conventions (dir/ markers, x-oss-meta-mode/uid/gid/mtime).")
    p.add_argument("url", metavar="oss://BUCKET[/PREFIX]", nargs="?")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?")
    p.add_argument("--config", metavar="FILE",
                   help="TOML file with url, mountpoint, endpoint, region, credentials, [[key]] "
                        "tables (rsa/kms, matdesc), options and any long option; the command "
                        "line wins (README: Configuration file)")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground (default: detach once mounted)")
    p.add_argument("-o", dest="options", action="append", metavar="OPTIONS",
                   help="comma-separated: allow_other, ro, uid=N, gid=N, umask=OCT, "
                        "file_mode=OCT, dir_mode=OCT, attr_timeout=SECONDS (default 2), "
                        "passwd_file=FILE (ossfs's bucket:id:secret lines, mode 600)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="block cache and staging area (ciphertext only); default "
                        "/var/cache/ossencfs as root, else ~/.cache/ossencfs")
    p.add_argument("--cache-size", default="1G", metavar="SIZE",
                   help="cap of the cache directory: clean blocks (evicted LRU) plus staged "
                        "data not yet uploaded (never evicted; writes get ENOSPC at the cap); "
                        "default 1G")
    _add_upload_options(p)
    add_connection_options(p)
    add_key_options(p)
    p.set_defaults(func=_mount, passwd_file=None, security_token=None)
    fields = {a.dest: a.default for a in p._actions
              if a.dest not in ("help", "config", "key_order")}
    fields.update(passwd_file=None, security_token=None)       # config-file-only fields
    p.set_defaults(config_defaults=fields)
    _register_umount(subparsers)


def _add_upload_options(p: argparse.ArgumentParser) -> None:
    """Part size, multipart threshold, copy limit, upload queue widths, write-back."""
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
                        "are sent, up to 32 at once)")
    p.add_argument("--upload-small-files", type=int, default=16, metavar="N",
                   help="files under 1 MiB uploaded at once by the background queue "
                        "(default 16)")
    p.add_argument("--write-back", type=float, default=0.0, metavar="SECONDS",
                   help="0 (default): close returns once the file is in the bucket. N > 0: "
                        "close returns once the file is staged and journaled on local disk; "
                        "the upload follows N seconds later in the background. fsync always "
                        "waits for the bucket")


def _register_umount(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The umount command: waits for pending uploads unless --lazy."""
    u = subparsers.add_parser("umount", help="unmount after pending uploads are done")
    u.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?")
    u.add_argument("--config", metavar="FILE", help="take MOUNTPOINT from this mount config file")
    u.add_argument("-z", "--lazy", "--no-wait", dest="lazy", action="store_true",
                   help="detach now (lazy) and do not wait for pending uploads: they stay "
                        "journaled and go up at the next mount with the same --cache-dir")
    u.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="how long to wait for pending uploads (default 3600)")
    u.set_defaults(func=_umount)
