"""``ossencfs emulator``: run the local OSS (and optionally KMS) emulator in the foreground.

It prints ``OSS endpoint: http://HOST:PORT`` (and ``KMS endpoint: ...``) once listening, so
scripts can wait for that line, and stops cleanly on SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser(
        "emulator", help="run a local OSS emulator (for tests and benchmarks)",
        description="Local OSS server with real V1/V4 signatures and on-disk data. Faults can be changed "
                    "at run time with POST /-/admin/faults?latency_ms=&bandwidth_mbps=&fail_rate=&drop_rate="
                    "&fail_code=&copy_limit=&restore_seconds=&deny_writes= "
                    "(loopback only, with the header X-Admin-Token: <the token in DATA/admin-token, mode 0600>); "
                    "GET /-/admin/stats returns request counters.")
    p.add_argument("--data", required=True, metavar="DIR", help="data directory (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="listen port (0 = any free port)")
    p.add_argument("--access-key-id", required=True, metavar="AK")
    p.add_argument("--access-key-secret", required=True, metavar="SK")
    p.add_argument("--security-token", default=None, metavar="TOKEN",
                   help="treat the key as an STS key: requests must carry this x-oss-security-token")
    p.add_argument("--bucket", action="append", default=[], metavar="NAME", help="pre-create a bucket (repeatable)")
    p.add_argument("--kms-port", type=int, default=None, metavar="PORT",
                   help="also run the KMS emulator on this port (0 = any free port)")
    p.add_argument("--region", default="oss-cn-hangzhou", help="region reported by GetBucketLocation")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before the first response byte")
    p.add_argument("--bandwidth-mbps", type=float, default=0.0, help="per-connection cap in Mbit/s, both directions")
    p.add_argument("--fail-rate", type=float, default=0.0, help="fraction of requests answered 503 before any effect")
    p.add_argument("--drop-rate", type=float, default=0.0, help="fraction of connections dropped mid-response")
    p.add_argument("--fail-code", default="ServiceUnavailable", metavar="CODE",
                   help="what injected failures answer: ServiceUnavailable (default), TotalQpsLimitExceeded, "
                        "MetaOperationQpsLimitExceeded, DownloadTrafficRateLimitExceeded, "
                        "UploadTrafficRateLimitExceeded, ActiveRequestLimitExceeded (503), QpsLimitExceeded "
                        "(429), or 'mixed'")
    p.add_argument("--copy-limit", type=int, default=10 ** 9, metavar="BYTES",
                   help="CopyObject refuses sources larger than this (default 1000000000, OSS's 1 GB)")
    p.add_argument("--restore-seconds", type=float, default=1.0, metavar="S",
                   help="RestoreObject of Archive/Cold Archive objects completes after S seconds (default 1)")
    p.add_argument("--max-connections", type=int, default=None, metavar="N",
                   help="open connections at most (default: what the file limit allows, up to 1024); at the "
                        "cap the connection idle longest is closed for a new one")
    p.add_argument("--sts-lifetime", type=_seconds, default=None, metavar="SECONDS",
                   help="issue temporary (STS) credentials valid this long (e.g. 30 or 30s); OSS "
                        "and KMS accept them until then and refuse them afterwards with "
                        "SecurityTokenExpired / InvalidSecurityToken.Expired")
    p.add_argument("--credentials-port", type=int, default=None, metavar="PORT",
                   help="with --sts-lifetime: serve a credentials URI (/credentials) and the ECS "
                        "metadata paths (for OSSENCFS_ECS_METADATA_ENDPOINT) on this port (0 = any)")
    p.add_argument("--no-fsync", action="store_true", help="skip fsync (faster, not crash-safe)")
    p.add_argument("--no-crc", action="store_true",
                   help="do not compute CRC-64 of new objects (faster PUT; responses then omit "
                        "x-oss-hash-crc64ecma, which SDKs accept)")
    p.add_argument("--s3-compat", action="store_true",
                   help="also accept Amazon S3 (AWS Signature V4) requests, as OSS does once its "
                        "S3-compatible access is enabled for the account (for benchmarks of S3 "
                        "tools: scripts/bench_mounts.py)")
    p.set_defaults(func=run)


def _seconds(text: str) -> float:
    value = float(text[:-1] if text.endswith("s") else text)
    if value <= 0:
        raise argparse.ArgumentTypeError("wants a positive number of seconds")
    return value


def run(args: argparse.Namespace) -> int:
    from ..emulator.server import Emulator

    tokens = {args.access_key_id: args.security_token} if args.security_token else None
    emu = Emulator(args.data, host=args.host, port=args.port,
                   credentials={args.access_key_id: args.access_key_secret}, sts_tokens=tokens,
                   buckets=args.bucket, latency_ms=args.latency_ms, bandwidth_mbps=args.bandwidth_mbps,
                   fail_rate=args.fail_rate, drop_rate=args.drop_rate, kms_port=args.kms_port,
                   fsync=not args.no_fsync, crc=not args.no_crc, region=args.region,
                   fail_code=args.fail_code, copy_limit=args.copy_limit, restore_seconds=args.restore_seconds,
                   max_connections=args.max_connections,
                   sts_lifetime=args.sts_lifetime, credentials_port=args.credentials_port,
                   s3_compat=args.s3_compat)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        emu.start()
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"ossencfs: error: emulator: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"OSS endpoint: {emu.endpoint}", flush=True)
        if emu.kms_endpoint:
            print(f"KMS endpoint: {emu.kms_endpoint}", flush=True)
        ends = emu.credential_endpoints
        if ends is not None:
            print(f"Credentials URI: {ends.uri}", flush=True)
            print(f"ECS metadata endpoint: {ends.metadata_host}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
    return 0
