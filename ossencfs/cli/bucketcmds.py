"""``ossencfs verify``, ``rotate`` and ``migrate``: whole-bucket tools (docs/bulk-tools.md).

Argument handling only; the work is in ``ossencfs.bulk``. Same connection and key options as
``cp``. Output: one line per failure on stderr naming the object and the reason (verify: one
line per object with a problem on stdout, or one JSON record per object with ``--json``), a
progress bar on a terminal (a line every few seconds otherwise) and a final summary on stderr.
Exit status: 0 when everything went well (verify: every object opens), 1 otherwise.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys

from .options import (add_connection_options, add_key_options, build_esdk, build_keyring,
                      build_masters, build_store, optional_keyring, parse_oss_url)
from ..logsafe import printable
from .runner import run_command, size_argument


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    v = subparsers.add_parser(
        "verify", help="classify every object of a bucket and check that it opens",
        description="For every object under oss://BUCKET[/PREFIX]: its kind (plain, CSE "
                    "current or legacy, wrap algorithm, KMS flavour; Encryption SDK: layout, "
                    "algorithm, CMK ARN and region), which configured key or KMS opens it, "
                    "whether its sizes agree, and with --deep whether its content matches the "
                    "stored MD5 (Encryption SDK: its GCM tag). Exit status 0 only when every "
                    "object opens.")
    v.add_argument("--deep", action="store_true",
                   help="read and decrypt every object and compare with unencrypted-content-md5 "
                        "(Encryption SDK objects: a whole decryption, GCM tag checked)")
    v.add_argument("--json", action="store_true", help="one JSON record per object on stdout")
    _common(v, writes=False)
    v.set_defaults(func=run_verify)

    r = subparsers.add_parser(
        "rotate", help="re-wrap data keys under a new master key (content untouched)",
        description="Every object a configured key opens gets its data key wrapped under the "
                    "new master key; the ciphertext is re-uploaded unchanged with the new key "
                    "headers and every other header kept. Keep the old key until it is done.")
    to = r.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-rsa-key", metavar="PEM", help="new RSA key (public is enough)")
    to.add_argument("--to-kms-key", metavar="CMK_ID", help="new KMS CMK (uses --kms-region, "
                                                          "--kms-endpoint, --kms-flavour)")
    _common(r, writes=True)
    r.set_defaults(func=run_rotate)

    m = subparsers.add_parser(
        "migrate", help="encrypt plain objects in place",
        description="Every plain object becomes an SDK-format encrypted object under the first "
                    "configured key (a fresh data key each), its user and POSIX metadata kept; "
                    "encrypted objects, directory markers and symlinks are left alone.")
    _common(m, writes=True)
    m.set_defaults(func=run_migrate)


def _common(p: argparse.ArgumentParser, *, writes: bool) -> None:
    p.add_argument("url", metavar="oss://BUCKET[/PREFIX]")
    add_connection_options(p)
    add_key_options(p)
    b = p.add_argument_group("bulk")
    b.add_argument("--jobs", type=_positive, default=8, metavar="N",
                   help="objects in flight (default 8)")
    b.add_argument("--parallel", type=_positive, default=4, metavar="N",
                   help="parts or ranges in flight per object (default 4)")
    b.add_argument("--shard", metavar="I/N", default="1/1",
                   help="only the I-th of N deterministic parts of the key space (1 <= I <= N)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    if writes:
        b.add_argument("--dry-run", action="store_true", help="show what would change")
        b.add_argument("--checkpoint", metavar="FILE",
                       help="record finished objects here; a second run continues from it")
    b.add_argument("--part-size", type=size_argument, default=8 << 20, help=argparse.SUPPRESS)
    b.add_argument("--multipart-threshold", type=size_argument, default=16 << 20, help=argparse.SUPPRESS)


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def run_verify(args: argparse.Namespace) -> int:
    return run_command(_verify, args)


def run_rotate(args: argparse.Namespace) -> int:
    return run_command(_rotate, args)


def run_migrate(args: argparse.Namespace) -> int:
    return run_command(_migrate, args)


def _objects(args: argparse.Namespace, keyring):
    from ..objects import EncryptedObjects
    bucket, _ = parse_oss_url(args.url)
    return EncryptedObjects(build_store(args, bucket), keyring, part_size=args.part_size,
                            multipart_threshold=args.multipart_threshold,
                            upload_parallelism=args.parallel)


def _progress(args: argparse.Namespace, desc: str):
    from ..bulk.progress import BulkProgress
    return BulkProgress(desc, enabled=not args.no_progress)


async def _walk(args: argparse.Namespace, objects, action, desc: str, report, progress,
                run_id: dict[str, str] | None = None):
    from ..bulk.checkpoint import Checkpoint
    from ..bulk.shard import parse_shard
    from ..bulk.walk import walk
    shard = parse_shard(args.shard)
    _, prefix = parse_oss_url(args.url)
    cp = None
    if getattr(args, "checkpoint", None) and not getattr(args, "dry_run", False):
        cp = Checkpoint(args.checkpoint, {"command": desc, "url": args.url,
                                          "shard": str(shard), **(run_id or {})}).open()
    try:
        totals = await walk(objects.store, prefix, action, jobs=args.jobs, shard=shard,
                            checkpoint=cp, progress=progress, report=report)
    finally:
        progress.close()
        if cp is not None:
            cp.close()
    return totals


def _failure_line(cmd: str, bucket: str, out) -> None:
    why = f"{out.reason}: {out.detail}" if out.detail else out.reason
    print(printable(f"ossencfs: {cmd}: oss://{bucket}/{out.key}: {why}"), file=sys.stderr,
          flush=True)


async def _verify(args: argparse.Namespace) -> int:
    from ..bulk.verify import Tally, Verification
    objects = _objects(args, optional_keyring(args))
    bucket = objects.store.name
    tally = Tally()
    action = Verification(objects.store, objects.keyring, deep=args.deep,
                          parallel=args.parallel, esdk=build_esdk(args, objects.store))

    def report(out) -> None:
        rec = out.record
        if rec is None:             # the action itself failed (e.g. HEAD refused)
            _failure_line("verify", bucket, out)
            tally.by_problem[out.reason] += 1
            tally.unreadable += 1
            return
        tally.add(rec)
        if args.json:
            print(json.dumps(rec.as_json(), ensure_ascii=False), flush=True)
        elif rec.problems:
            why = ", ".join(rec.problems) + (f" ({rec.detail})" if rec.detail else "")
            print(printable(f"oss://{bucket}/{rec.key}: {why}"), flush=True)

    progress = _progress(args, "verify")
    action.on_bytes = progress.add_bytes
    totals = await _walk(args, objects, action, "verify", report, progress)
    print(tally.table(), file=sys.stderr)
    print(f"ossencfs: verify: {totals.objects} objects, {tally.unreadable} do not open"
          + (f", {tally.md5_checked} MD5-checked" if args.deep else ""), file=sys.stderr)
    return 1 if tally.unreadable else 0


def _target(args: argparse.Namespace):
    if args.to_rsa_key:
        from ..envelope.keys import RsaMasterKey
        return RsaMasterKey.from_pem_file(args.to_rsa_key)
    target_args = copy.copy(args)
    target_args.key_order = [("kms_key", args.to_kms_key, None)]
    return build_masters(target_args)[0]


async def _rotate(args: argparse.Namespace) -> int:
    from ..bulk.rotate import Rotation, target_identity
    target = _target(args)
    objects = _objects(args, build_keyring(args))
    action = Rotation(objects, target, dry_run=args.dry_run,
                      esdk=build_esdk(args, objects.store))
    return await _write_run(args, objects, action, "rotate",
                            {"target": target_identity(target)})


async def _migrate(args: argparse.Namespace) -> int:
    from ..bulk.migrate import Migration
    objects = _objects(args, build_keyring(args))
    action = Migration(objects, dry_run=args.dry_run, parallel=args.parallel,
                       esdk=build_esdk(args, objects.store))
    return await _write_run(args, objects, action, "migrate",
                            {"writer": objects.keyring.writer.name})


async def _write_run(args: argparse.Namespace, objects, action, cmd: str,
                     run_id: dict[str, str]) -> int:
    bucket = objects.store.name

    def report(out) -> None:
        if out.status == "failed":
            _failure_line(cmd, bucket, out)
        elif out.status == "would":
            print(printable(f"would {cmd}: oss://{bucket}/{out.key}: {out.reason}"), flush=True)

    totals = await _walk(args, objects, action, cmd, report, _progress(args, cmd), run_id)
    _summary(cmd, totals, args.dry_run)
    return 1 if totals.statuses["failed"] else 0


def _summary(cmd: str, totals, dry_run: bool) -> None:
    from ..bulk.progress import human_bytes
    counts = ", ".join(f"{n} {s}" for s, n in sorted(totals.statuses.items())) or "nothing to do"
    resumed = ""
    if totals.resumed or totals.resumed_after:
        after = printable(totals.resumed_after)
        resumed = (f"; continued after {after!r} and {totals.resumed} other objects"
                   " finished earlier (checkpoint)")
    verb = "would be re-uploaded" if dry_run else "re-uploaded"
    print(f"ossencfs: {cmd}: {totals.objects} objects ({counts}){resumed}; "
          f"{human_bytes(totals.bytes)} {verb}", file=sys.stderr)
    for reason, n in sorted(totals.reasons.items()):
        print(f"  {reason}: {n}", file=sys.stderr)

