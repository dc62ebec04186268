"""``ossencfs cp`` and ``ossencfs cat``: move data between local files and encrypted objects.

This is the interface scripts rely on, so failures are one line on stderr and a non-zero exit
status, downloads never leave a partial file behind (temp file in the target folder, then
rename), and the progress bar appears only on a terminal.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import stat
import sys
import tempfile
from typing import AsyncIterator, Callable

import trio

from ..errors import OssEncError
from .runner import run_command, size_argument
from .options import (add_connection_options, add_key_options, build_esdk, build_keyring,
                      build_store, is_oss_url, optional_keyring, parse_oss_url)

log = logging.getLogger(__name__)

_IO_CHUNK = 4 << 20
_PROGRESS_MIN = 4 << 20


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    cp = subparsers.add_parser(
        "cp", help="copy a file or folder to or from an encrypted bucket",
        description="Copy between a local path (or - for stdin/stdout) and oss://BUCKET/KEY. "
                    "Uploads are encrypted with the first master key; downloads are decrypted "
                    "with whichever configured key opens each object (plain objects are copied "
                    "as they are). With -r, a local folder's contents go under the prefix, "
                    "and every object under a prefix comes down into the folder.")
    cp.add_argument("src", help="local path, - (stdin), or oss://BUCKET/KEY")
    cp.add_argument("dst", help="local path, - (stdout), or oss://BUCKET/KEY (a trailing / "
                                "means: inside, under the source's name)")
    cp.add_argument("-r", "--recursive", action="store_true", help="copy a folder / prefix")
    cp.add_argument("-n", "--no-clobber", action="store_true",
                    help="never overwrite an existing object or file")
    _common(cp)
    cp.set_defaults(func=run_cp)

    cat = subparsers.add_parser(
        "cat", help="write an object's plaintext to stdout",
        description="Decrypt oss://BUCKET/KEY to standard output (plain objects as they are).")
    cat.add_argument("url", metavar="oss://BUCKET/KEY")
    cat.add_argument("--offset", type=int, default=0, help="start at this plaintext byte")
    cat.add_argument("--length", type=int, default=None, help="at most this many bytes")
    _common(cat)
    cat.set_defaults(func=run_cat)


def _common(p: argparse.ArgumentParser) -> None:
    add_connection_options(p)
    add_key_options(p)
    t = p.add_argument_group("transfer")
    t.add_argument("--parallel", type=int, default=4, metavar="N",
                   help="parts or ranges in flight per file (default 4)")
    t.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    # For tests and tuning: small values make multipart paths cheap to exercise.
    t.add_argument("--part-size", type=size_argument, default=8 << 20, help=argparse.SUPPRESS)
    t.add_argument("--multipart-threshold", type=size_argument, default=16 << 20, help=argparse.SUPPRESS)


# ------------------------------------------------------------------ entry points

def run_cp(args: argparse.Namespace) -> int:
    return run_command(_cp, args)


def run_cat(args: argparse.Namespace) -> int:
    return run_command(_cat, args)


def _objects(args: argparse.Namespace, bucket: str, *, writing: bool):
    from ..objects import EncryptedObjects
    keyring = build_keyring(args) if writing else optional_keyring(args)
    store = build_store(args, bucket)
    return EncryptedObjects(store, keyring, part_size=args.part_size,
                            multipart_threshold=args.multipart_threshold,
                            upload_parallelism=args.parallel, esdk=build_esdk(args, store))


class _Progress:
    """A tqdm bar on a terminal, nothing otherwise."""

    def __init__(self, args: argparse.Namespace, total: int | None, desc: str) -> None:
        self.bar = None
        show = (not args.no_progress and sys.stderr.isatty()
                and (total is None or total >= _PROGRESS_MIN))
        if show:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=desc[-40:], file=sys.stderr, leave=False, dynamic_ncols=True)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------- cat

async def _cat(args: argparse.Namespace) -> int:
    bucket, key = parse_oss_url(args.url)
    if not key or key.endswith("/"):
        raise OssEncError(f"{args.url}: not an object key")
    objects = _objects(args, bucket, writing=False)
    reader = await objects.open_reader(key)
    start = max(0, args.offset)
    end = reader.size if args.length is None else min(reader.size, start + max(0, args.length))
    out = sys.stdout.buffer
    pieces = reader.chunks(parallelism=args.parallel, start=start, stop=end)
    async with contextlib.aclosing(pieces) as it:
        async for piece in it:
            await trio.to_thread.run_sync(out.write, piece)
    await trio.to_thread.run_sync(out.flush)
    return 0


# ------------------------------------------------------------------------ cp

async def _cp(args: argparse.Namespace) -> int:
    src_oss, dst_oss = is_oss_url(args.src), is_oss_url(args.dst)
    if src_oss == dst_oss:
        raise OssEncError("cp needs exactly one oss://BUCKET/KEY side and one local path")
    if dst_oss:
        bucket, key = parse_oss_url(args.dst)
        objects = _objects(args, bucket, writing=True)
        if args.recursive:
            return await _upload_tree(args, objects, args.src, key)
        if args.src != "-" and (not key or key.endswith("/")):
            key += os.path.basename(os.path.abspath(args.src))
        if not key:
            raise OssEncError(f"{args.dst}: needs an object key")
        if args.src == "-":
            await _upload_stdin(args, objects, key)
        else:
            await _upload_file(args, objects, args.src, key)
        return 0
    bucket, key = parse_oss_url(args.src)
    objects = _objects(args, bucket, writing=False)
    if args.recursive:
        return await _download_tree(args, objects, key, args.dst)
    if not key or key.endswith("/"):
        raise OssEncError(f"{args.src}: not an object key (use -r for a prefix)")
    if args.dst == "-":
        await _download_stdout(args, objects, key)
    else:
        dst = args.dst
        if dst.endswith(os.sep) or os.path.isdir(dst):
            dst = os.path.join(dst, key.rsplit("/", 1)[-1])
        await _download_file(args, objects, key, dst)
    return 0


async def _file_chunks(f) -> AsyncIterator[bytes]:
    while True:
        piece = await trio.to_thread.run_sync(f.read, _IO_CHUNK)
        if not piece:
            return
        yield piece


async def _upload_file(args: argparse.Namespace, objects, path: str, key: str,
                       progress: Callable[[int], None] | None = None) -> None:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OssEncError(f"{path}: not a regular file")
        bar = None if progress else _Progress(args, size, key)
        try:
            await objects.write(key, _file_chunks(f), size, forbid_overwrite=args.no_clobber,
                                progress=progress or bar)
        finally:
            if bar:
                bar.close()
    log.info("uploaded %s -> oss://%s/%s (%d bytes)", path, objects.store.name, key, size)


async def _upload_stdin(args: argparse.Namespace, objects, key: str) -> None:
    """stdin of unknown length: encrypt into a spool of *ciphertext*, then upload.

    The data-size header of a multipart upload must be known before the first part, and
    plaintext must never rest on disk, so what spills over to a temp file is ciphertext.
    """
    src = sys.stdin.buffer
    st = os.fstat(src.fileno())
    if stat.S_ISREG(st.st_mode):
        size = st.st_size - src.tell() if src.seekable() else st.st_size
        bar = _Progress(args, size, key)
        try:
            await objects.write(key, _file_chunks(src), size, forbid_overwrite=args.no_clobber,
                                progress=bar)
        finally:
            bar.close()
        return
    from ..envelope.ctr import CtrStream
    material, crypto = await trio.to_thread.run_sync(objects.keyring.new_object)
    stream = CtrStream(material.key, material.counter0)
    spool = tempfile.SpooledTemporaryFile(max_size=objects.multipart_threshold)
    with spool:
        async for piece in _file_chunks(src):
            spool.write(stream.update(piece))
        size = spool.tell()

        async def read_cipher(offset: int, n: int) -> bytes:
            def run() -> bytes:
                spool.seek(offset)
                return spool.read(n)
            return await trio.to_thread.run_sync(run)

        bar = _Progress(args, size, key)
        try:
            await objects.upload(key, size, read_cipher, crypto,
                                 forbid_overwrite=args.no_clobber, progress=bar)
        finally:
            bar.close()


async def _download_stdout(args: argparse.Namespace, objects, key: str) -> None:
    reader = await objects.open_reader(key)
    out = sys.stdout.buffer
    async for piece in reader.chunks(parallelism=args.parallel):
        await trio.to_thread.run_sync(out.write, piece)
    await trio.to_thread.run_sync(out.flush)


async def _download_file(args: argparse.Namespace, objects, key: str, dst: str,
                         progress: Callable[[int], None] | None = None, info=None) -> None:
    if args.no_clobber and os.path.lexists(dst):
        raise OssEncError(f"{dst}: exists (--no-clobber)")
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise OssEncError(f"{dst}: folder {folder} does not exist")
    reader = await objects.open_reader(key, info)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(dst) + ".",
                               suffix=".ossencfs-part")
    bar = None if progress else _Progress(args, reader.size, key)
    tick = progress or bar
    assert tick is not None
    try:
        with os.fdopen(fd, "wb") as f:
            async for piece in reader.chunks(parallelism=args.parallel):
                await trio.to_thread.run_sync(f.write, piece)
                tick(len(piece))
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        if bar:
            bar.close()


def _safe_relpath(rel: str) -> str | None:
    """A key suffix as a local relative path, or None if it could escape the target."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\0" in rel:
        return None
    return os.path.join(*parts)


async def _upload_tree(args: argparse.Namespace, objects, root: str, prefix: str) -> int:
    if not os.path.isdir(root):
        raise OssEncError(f"{root}: not a folder")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    jobs: list[tuple[str, str, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path) or os.path.islink(path):
                log.warning("skipping %s: not a regular file", path)
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            jobs.append((path, prefix + rel, os.path.getsize(path)))
    bar = _Progress(args, sum(j[2] for j in jobs), prefix or "/")
    slots = trio.Semaphore(max(1, args.parallel))

    async def one(path: str, key: str) -> None:
        async with slots:
            await _upload_file(args, objects, path, key, progress=bar)

    try:
        async with trio.open_nursery() as nursery:
            for path, key, _ in jobs:
                nursery.start_soon(one, path, key)
    finally:
        bar.close()
    return 0


async def _download_tree(args: argparse.Namespace, objects, prefix: str, root: str) -> int:
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    infos = []
    async for info in objects.store.iter_objects(prefix):
        infos.append(info)
    if not infos:
        raise OssEncError(f"oss://{objects.store.name}/{prefix}: no objects under this prefix")
    os.makedirs(root, exist_ok=True)
    bar = _Progress(args, sum(i.size for i in infos), prefix or "/")
    slots = trio.Semaphore(max(1, args.parallel))
    skipped = 0

    async def one(info, dst: str) -> None:
        async with slots:
            await _download_file(args, objects, info.key, dst, progress=bar)

    try:
        async with trio.open_nursery() as nursery:
            for info in infos:
                rel = info.key[len(prefix):]
                if rel.endswith("/"):
                    local = _safe_relpath(rel.rstrip("/")) if rel.rstrip("/") else ""
                    if local is not None:
                        os.makedirs(os.path.join(root, local), exist_ok=True)
                    continue
                local = _safe_relpath(rel)
                if local is None:
                    log.warning("skipping oss://%s/%s: name is unsafe as a local path",
                                objects.store.name, info.key)
                    skipped += 1
                    continue
                dst = os.path.join(root, local)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                nursery.start_soon(one, info, dst)
    finally:
        bar.close()
    if skipped:
        print(f"ossencfs: warning: {skipped} object(s) skipped (unsafe names)", file=sys.stderr)
    return 0
