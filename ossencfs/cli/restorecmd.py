"""``ossencfs restore PATH... [--days N] [--tier TIER] [-r]``: make archived objects readable.

Objects in the Archive, Cold Archive and Deep Cold Archive classes answer GetObject with 403
InvalidObjectState until a RestoreObject made a readable copy (SPEC D.13); through the mount
their reads fail with ENODATA and a log line that names this command. A PATH is either
``oss://BUCKET/KEY`` (``oss://BUCKET/PREFIX/`` with ``-r``: every object under it) or a file
or folder inside a running ossencfs mount, which names the bucket, prefix and endpoint (its
state file, ``fs.state``); credentials come from the same options and variables as
``ossencfs cp``. Objects that are not archived are skipped; a restore already running is
reported, not repeated. Nothing is read or decrypted: no master key is needed.
"""
from __future__ import annotations

import argparse
import os
import sys

import trio

from ..errors import OssEncError
from ..store import ARCHIVE_CLASSES, ObjectInfo, ObjectStore
from .options import add_connection_options, build_store, is_oss_url, parse_oss_url

def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser(
        "restore", help="restore archived (Archive / Cold Archive) objects so they can be read",
        description="Send RestoreObject for every archived object named: oss://BUCKET/KEY, "
                    "oss://BUCKET/PREFIX/ with -r, or files and folders inside a running "
                    "ossencfs mount. Reading works once OSS finishes the restore (minutes for "
                    "Archive, hours for Cold Archive, depending on the tier).")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="folders and prefixes: every object under them")
    p.add_argument("--days", type=int, default=1, metavar="N",
                   help="days the restored copy stays readable (default 1)")
    p.add_argument("--tier", choices=("Expedited", "Standard", "Bulk"), default=None,
                   help="Cold Archive restore priority (default: OSS's, Standard)")
    add_connection_options(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    targets = [_target(path, args) for path in args.paths]
    return trio.run(_restore_all, args, targets)


def _target(path: str, args: argparse.Namespace) -> tuple[str, str, bool]:
    """(bucket, key or prefix, is a prefix) for one PATH; sets ``args.endpoint`` from the
    mount's state for a local path when none was given."""
    if is_oss_url(path):
        bucket, key = parse_oss_url(path)
        return bucket, key, key == "" or key.endswith("/")
    from .statuscmd import running_mounts
    real = os.path.realpath(path)
    for state in running_mounts():
        mp = os.path.realpath(state["mountpoint"])
        if real != mp and not real.startswith(mp + os.sep):
            continue
        bucket, prefix = parse_oss_url(state["url"])
        rel = os.path.relpath(real, mp)
        rel = "" if rel == "." else rel
        if not args.endpoint:
            args.endpoint = state.get("endpoint")
        is_dir = os.path.isdir(path)
        return bucket, prefix + rel + ("/" if is_dir and rel else ""), is_dir
    raise OssEncError(f"{path}: not an oss:// URL and not inside a running ossencfs mount")


async def _restore_all(args: argparse.Namespace, targets: list[tuple[str, str, bool]]) -> int:
    failed = 0
    for bucket, key, is_prefix in targets:
        store = build_store(args, bucket)
        if is_prefix and not args.recursive:
            print(f"ossencfs: oss://{bucket}/{key} is a folder: use -r", file=sys.stderr)
            failed += 1
            continue
        if is_prefix:
            infos = [o async for o in store.iter_objects(key)]
        else:
            info = await store.head(key)
            if info is None:
                print(f"ossencfs: oss://{bucket}/{key}: no such object", file=sys.stderr)
                failed += 1
                continue
            infos = [info]
        for info in infos:
            failed += await _restore_one(store, info, args)
    return 1 if failed else 0


async def _restore_one(store: ObjectStore, info: ObjectInfo, args: argparse.Namespace) -> int:
    where = f"oss://{store.name}/{info.key}"
    if info.storage_class not in ARCHIVE_CLASSES:
        if not info.key.endswith("/"):
            print(f"{where}: not archived ({info.storage_class or 'Standard'}), skipped")
        return 0
    tier = args.tier if info.storage_class != "Archive" else None
    try:
        started = await store.restore(info.key, days=args.days, tier=tier)
    except OssEncError as exc:
        print(f"ossencfs: {exc}", file=sys.stderr)
        return 1
    if started:
        print(f"{where}: restore started ({info.storage_class}"
              f"{', ' + tier + ' tier' if tier else ''}, readable for {args.days} day(s) "
              f"once done)")
    else:
        print(f"{where}: restore already in progress or done")
    return 0
