#!/usr/bin/env python3
"""Requests, bytes and time of the bulk tools (``ossencfs rotate``, ``verify --deep``) against
the local OSS emulator (its own process, like scripts/bench.py, whose helpers this reuses).

Workloads:
  rotate_small  ``--count`` objects of ``--small`` bytes under RSA key A, rotated to key B
  migrate_large one plain ``--large`` object encrypted in place under A
  rotate_large  it, rotated to B (multipart fed by ranged GETs)
  verify_deep   ``verify --deep`` of the large object (after its rotation) against a plain
                download of the same stored bytes (oss2.Bucket.get_object, streamed, no
                decryption) and ``ossencfs cat`` of it

Each command runs as a child process; its wall time, peak RSS (wait4) and the emulator's
request and byte counters for it are reported.

Usage:
  .venv/bin/python scripts/bench_bulk.py --count 1000 --large 1GiB --json /tmp/bulk.json
  .venv/bin/python scripts/bench_bulk.py --count 50 --large 64MiB           # quick look
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from bench import (AK, BUCKET, SK, EmulatorProc, child_env, human, parse_size,  # noqa: E402
                   stats_delta)

URL = f"oss://{BUCKET}/"


def rsa_key(path: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return str(path)


def run(emu: EmulatorProc, argv: list[str], what: str) -> dict[str, Any]:
    """One ``ossencfs`` child: seconds, peak RSS, and the emulator's counters for it."""
    before = emu.stats()
    full = [sys.executable, "-m", "ossencfs", *argv, "--endpoint", emu.endpoint]
    t0 = time.monotonic()
    proc = subprocess.Popen(full, env=child_env(), cwd=str(ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - t0
    if proc.returncode not in (0,):
        raise SystemExit(f"{what} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    out = {"seconds": round(seconds, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
           **stats_delta(before, emu.stats())}
    print(f"{what}: {seconds:.2f} s, {out['total_requests']} requests {out['requests']}, "
          f"{human(out['bytes_from_oss'])} from OSS, {human(out['bytes_to_oss'])} to OSS, "
          f"peak RSS {out['peak_rss_mib']} MiB", flush=True)
    return out


def seed_small(work: Path, emu: EmulatorProc, key_a: str, count: int, size: int) -> None:
    folder = work / "small"
    folder.mkdir()
    for i in range(count):
        (folder / f"f{i:06d}").write_bytes(os.urandom(size))
    run(emu, ["cp", "-r", str(folder), URL + "small/", "--rsa-key", key_a, "--parallel", "16",
              "--no-progress"], f"seed {count} x {human(size)}")


def seed_large(emu: EmulatorProc, key_a: str, size: int) -> dict[str, Any]:
    """A plain object (its ETag is its MD5), then ``migrate``: encrypted, with the
    unencrypted-content-md5 that ``verify --deep`` checks. Returns migrate's figures."""
    import oss2
    bucket = oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, BUCKET)
    block = os.urandom(1 << 20)

    def body():
        for _ in range(size >> 20):
            yield block
        if size % (1 << 20):
            yield block[:size % (1 << 20)]
    bucket.put_object("large.bin", body())
    return run(emu, ["migrate", URL + "large.bin", "--rsa-key", key_a, "--no-progress"],
               f"migrate 1 x {human(size)}")


def startup(emu: EmulatorProc) -> dict[str, Any]:
    """A command with nothing to do: the fixed cost in every figure below."""
    return run(emu, ["verify", URL + "nothing-here/", "--no-progress"], "start-up (empty verify)")


def plain_download(emu: EmulatorProc, size: int) -> dict[str, Any]:
    """The stored bytes through oss2.Bucket, streamed and dropped: what the network can give."""
    import oss2
    bucket = oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, BUCKET)
    before = emu.stats()
    t0 = time.monotonic()
    got = 0
    with bucket.get_object("large.bin") as body:
        while True:
            piece = body.read(1 << 20)
            if not piece:
                break
            got += len(piece)
    seconds = time.monotonic() - t0
    assert got == size
    out = {"seconds": round(seconds, 3), **stats_delta(before, emu.stats())}
    print(f"plain download (oss2.Bucket, no decryption): {seconds:.2f} s, "
          f"{human(size / seconds)}/s", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--small", type=parse_size, default=4096)
    ap.add_argument("--large", type=parse_size, default=1 << 30)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    results: dict[str, Any] = {"count": args.count, "small": args.small, "large": args.large}
    with tempfile.TemporaryDirectory(prefix="ossencfs-bulk-bench-") as tmp:
        work = Path(tmp)
        emu = EmulatorProc(work / "oss", work / "emulator.log").start()
        try:
            key_a, key_b = rsa_key(work / "a.pem"), rsa_key(work / "b.pem")
            results["startup"] = startup(emu)
            seed_small(work, emu, key_a, args.count, args.small)
            results["migrate_large"] = seed_large(emu, key_a, args.large)
            rot = ["--rsa-key", key_a, "--to-rsa-key", key_b, "--jobs", str(args.jobs),
                   "--no-progress"]
            results["rotate_small"] = run(emu, ["rotate", URL + "small/", *rot],
                                          f"rotate {args.count} x {human(args.small)}")
            results["rotate_large"] = run(emu, ["rotate", URL + "large.bin", *rot],
                                          f"rotate 1 x {human(args.large)}")
            results["plain_download"] = plain_download(emu, args.large)
            results["verify_deep"] = run(emu, ["verify", URL + "large.bin", "--rsa-key", key_b,
                                               "--deep", "--no-progress"], "verify --deep")
            results["cat"] = run(emu, ["cat", URL + "large.bin", "--rsa-key", key_b], "cat")
            for name in ("plain_download", "verify_deep", "cat"):
                r = results[name]
                r["mib_per_s"] = round(args.large / r["seconds"] / (1 << 20), 1)
            print(f"verify --deep {results['verify_deep']['mib_per_s']} MiB/s, "
                  f"cat {results['cat']['mib_per_s']} MiB/s, plain download "
                  f"{results['plain_download']['mib_per_s']} MiB/s", flush=True)
        finally:
            emu.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
