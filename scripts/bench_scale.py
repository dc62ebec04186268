"""Scale runs of ``scripts/bench.py --scale`` (slow; the figures of issue 17's "Scale" list).

Each function takes the running ``Bench`` (``b``) and the ``bench`` module (``m``: its helpers
``check``, ``log``, ``PatternReader``, ``CHUNK``) and returns {name: record}; the records go to
the JSON under ``profiles.<profile>.scale``. Sizes come from the ``--scale-*`` options; the
defaults are the issue's (100,000-object directory; 1,000 directories x 1,000 objects; a 20 GiB
file; 16 parallel streams of 256 MiB), which take hours and hundreds of GiB on a small machine:
pass smaller ones to run them at a reduced scale.

- ``big_dir``: one fresh mount; ``ls -f`` (readdir only), ``ls -l`` cold (first sight),
  ``ls -l`` again (warm: the mount's own attributes), ``find``; the mount's RSS before and
  after, and the bytes of RSS per known inode. Against the listing requests alone (oss2 pages).
- ``many_dirs``: ``find | wc -l`` over D directories of F objects each, and the RSS; against
  one flat listing of every key (oss2 pages, no delimiter).
- ``huge_file``: a file made sparse with ``truncate`` to ``--scale-file-size``, then 1 MiB
  written at its start, middle and end, closed (uploaded whole: an encrypted object has no
  holes); then ``stat``, a read of the written pieces and of a hole, and ``mv``. With
  ``--scale-part-size`` the mount's ``--part-size`` is set so that the file needs more than
  10,000 parts at that size (the part size must grow, ``objects.plan_part_size``).
- ``parallel``: 16 writers of different files through the mount (until in the bucket) and
  16 readers of them (fresh mount), against 16 CryptoBucket threads doing the same.
- ``ossfs``: recorded as absent unless an ``ossfs`` binary is on the PATH (this script does
  not drive ossfs yet; the issue's ossfs figures were measured by hand).

``--scale-only big_dir,parallel`` runs a subset (the others are neither seeded nor run).
Each selected run is repeated ``--runs`` times (the issue asks for medians of at least 3):
every number in its record is the median over the repetitions, and ``<name>_runs`` beside it
lists each repetition's value where they differ (``median_of_runs``).
"""
from __future__ import annotations

import json
import os
import statistics
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

PARALLEL = 16
RUNS = ("big_dir", "many_dirs", "huge_file", "parallel")


def add_options(p: Any, parse_size: Any) -> None:
    p.add_argument("--scale", action="store_true",
                   help="also run the scale workloads (slow; see scripts/bench_scale.py)")
    p.add_argument("--scale-entries", type=int, default=100_000, help="objects in the big directory")
    p.add_argument("--scale-dirs", type=int, default=1000, help="directories of the many_dirs tree")
    p.add_argument("--scale-per-dir", type=int, default=1000, help="objects per many_dirs directory")
    p.add_argument("--scale-file-size", type=parse_size, default=20 << 30, help="huge_file size")
    p.add_argument("--scale-part-size", type=parse_size, default=0,
                   help="mount --part-size for huge_file (0: the default)")
    p.add_argument("--scale-parallel-size", type=parse_size, default=256 << 20,
                   help="size of each of the 16 parallel files")
    p.add_argument("--scale-only", default=",".join(RUNS),
                   help=f"comma-separated scale runs to do (default: all of {','.join(RUNS)})")


def rss(proc: Any) -> int:
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def seed(args: Any, data_dir: Any, m: ModuleType) -> None:
    """Untimed, before the emulator process starts: plain 64-byte objects written into its data
    directory by an emulator in this process, straight through its storage layer
    (``ossencfs.emulator.storage``: the files and trailers a PutObject leaves, which the
    process indexes when it starts). Through HTTP, 100,000 took 877 s here, which put the
    1,000,000-object tree out of reach. The format does not matter to listing and stat costs
    (the mount reads them as plain objects)."""
    from ossencfs.emulator.server import Emulator
    from ossencfs.emulator.storage import Entry
    t0 = time.monotonic()
    only = selected(args)
    keys: list[str] = []
    if "big_dir" in only:
        keys += [f"scale-big/e{i:07d}" for i in range(args.scale_entries)]
    if "many_dirs" in only:
        keys += [f"scale-tree/d{d:04d}/o{i:05d}" for d in range(args.scale_dirs)
                 for i in range(args.scale_per_dir)]
    if not keys:
        return
    with Emulator(str(data_dir), credentials={m.AK: m.SK}, buckets=[m.BUCKET], fsync=False) as emu:
        store = emu.storage
        assert store is not None
        b = store.get_bucket(m.BUCKET)
        assert b is not None
        for key in keys:
            tmp = store.temp()
            tmp.write(b"s" * 64)
            store.commit(b, tmp, Entry(key, tmp.size, tmp.md5_hex, tmp.crc64, time.time()))
    m.log(f"scale: seeded {len(keys)} objects in {time.monotonic() - t0:.1f} s")


def selected(args: Any) -> list[str]:
    """The scale runs ``--scale-only`` names, in their order; SystemExit for an unknown one."""
    names = [n for n in args.scale_only.split(",") if n]
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        raise SystemExit(f"--scale-only: unknown {', '.join(unknown)} (known: {', '.join(RUNS)})")
    return [n for n in RUNS if n in names]


def _sh(cmd: str, m: ModuleType) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=36000)
    m.check(r.returncode == 0, f"{cmd}: {r.stderr[-300:]}")
    return time.perf_counter() - t0, r.stdout.strip()


def _listing_seconds(b: Any, prefix: str, delimiter: str) -> float:
    t0 = time.perf_counter()
    marker = ""
    while True:
        r = b.plain.list_objects(prefix=prefix, delimiter=delimiter, marker=marker, max_keys=1000)
        if not r.is_truncated:
            return time.perf_counter() - t0
        marker = r.next_marker


def big_dir(b: Any, m: ModuleType) -> dict[str, Any]:
    n = b.args.scale_entries
    mp = b.mount("scale_big_dir")
    d = mp.path / "scale-big"
    rss0 = rss(mp.proc)
    out: dict[str, Any] = {"entries": n, "rss_at_start": rss0}
    for name, cmd in (("ls", f"ls -f {d} | wc -l"), ("ls_l_cold", f"ls -l {d} | wc -l"),
                      ("ls_l_warm", f"ls -l {d} | wc -l"), ("find", f"find {d} | wc -l")):
        before = b.emu.stats()
        s, text = _sh(cmd, m)
        out[name] = {"seconds": s, "lines": int(text), **m.stats_delta(before, b.emu.stats())}
    out["rss_after"] = rss(mp.proc)
    out["rss_bytes_per_known_inode"] = (out["rss_after"] - rss0) / n
    b.unmount(mp)
    out["listing_requests_seconds"] = _listing_seconds(b, "scale-big/", "/")
    return out


def many_dirs(b: Any, m: ModuleType) -> dict[str, Any]:
    a = b.args
    mp = b.mount("scale_many_dirs")
    before = b.emu.stats()
    s, text = _sh(f"find {mp.path / 'scale-tree'} | wc -l", m)
    out = {"objects": a.scale_dirs * a.scale_per_dir, "dirs": a.scale_dirs, "seconds": s,
           "lines": int(text), "rss_after": rss(mp.proc), **m.stats_delta(before, b.emu.stats())}
    m.check(int(text) == 1 + a.scale_dirs * (1 + a.scale_per_dir), f"find listed {text}")
    b.unmount(mp)
    out["listing_requests_seconds"] = _listing_seconds(b, "scale-tree/", "")
    return out


def huge_file(b: Any, m: ModuleType) -> dict[str, Any]:
    size = b.args.scale_file_size
    extra = ["--part-size", str(b.args.scale_part_size)] if b.args.scale_part_size else []
    piece = m.CHUNK
    offsets = [0, size // 2 - size // 2 % piece, size - piece]
    out: dict[str, Any] = {"size": size, "part_size_option": b.args.scale_part_size or None}

    def write(mnt: Any) -> None:
        with open(mnt / "huge.bin", "wb") as f:
            f.truncate(size)
            for off in offsets:
                f.seek(off)
                f.write(b.pattern.at(off, piece))
    out["write"] = b._mount_write("scale_huge_write", write, extra=extra)
    mp = b.mount("scale_huge_read", extra=extra)
    p = mp.path / "huge.bin"
    t0 = time.perf_counter()
    m.check(os.stat(p).st_size == size, "huge file size")
    out["stat_seconds"] = time.perf_counter() - t0
    before = b.emu.stats()
    t0 = time.perf_counter()
    with open(p, "rb") as f:
        for off in offsets:
            f.seek(off)
            m.check(f.read(piece) == b.pattern.at(off, piece), f"huge file at {off}")
        f.seek(piece * 3)
        m.check(f.read(piece) == bytes(piece), "huge file hole")
    out["read"] = {"seconds": time.perf_counter() - t0, **m.stats_delta(before, b.emu.stats())}
    before = b.emu.stats()
    t0 = time.perf_counter()
    os.rename(p, mp.path / "huge-moved.bin")
    out["rename"] = {"seconds": time.perf_counter() - t0, **m.stats_delta(before, b.emu.stats())}
    b.unmount(mp)
    out["parts"] = out["write"]["requests"].get("UploadPart", 0)
    b.plain.delete_object("huge-moved.bin")
    return out


def parallel(b: Any, m: ModuleType) -> dict[str, Any]:
    size = b.args.scale_parallel_size
    total = size * PARALLEL
    out: dict[str, Any] = {"files": PARALLEL, "size": size}

    def write(mnt: Any) -> None:
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda i: b._stream_to_file(mnt / f"par-a-{i}.bin", size), range(PARALLEL)))
    w = b._mount_write("scale_par_write", write)
    mp = b.mount("scale_par_read")

    def read_one(i: int) -> None:
        with open(mp.path / f"par-a-{i}.bin", "rb", buffering=0) as f:
            b._verify_stream(f.read, size, f"parallel read {i}")
    s, d, _ = b.timed(lambda: list(ThreadPoolExecutor(PARALLEL).map(read_one, range(PARALLEL))))
    b.unmount(mp)
    out["mount"] = {"write": {**w, "rate": total / w["seconds"] / 1e6},
                    "read": {"seconds": s, **d, "rate": total / s / 1e6}}
    keys = [f"par-b-{i}.bin" for i in range(PARALLEL)]

    def sdk_write() -> None:
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda k: b.crypto.put_object(k, m.PatternReader(b.pattern, size)), keys))

    def sdk_read() -> None:
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda k: b._verify_stream(b.crypto.get_object(k).read, size, k), keys))
    sw, dw, _ = b.timed(sdk_write)
    sr, dr, _ = b.timed(sdk_read)
    out["crypto_bucket"] = {"write": {"seconds": sw, **dw, "rate": total / sw / 1e6},
                            "read": {"seconds": sr, **dr, "rate": total / sr / 1e6}}
    for k in (*keys, *(f"par-a-{i}.bin" for i in range(PARALLEL))):
        b.plain.delete_object(k)
    for x in ("write", "read"):
        out[f"{x}_ratio_vs_crypto_bucket"] = out["mount"][x]["rate"] / out["crypto_bucket"][x]["rate"]
    return out


def median_of_runs(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for several repetitions of a scale run (same shape as each): a number is
    the median of its values (``statistics.median``: the mean of the middle two for an even
    count), with ``<key>_runs`` listing them when they differ; a nested record is merged
    the same way; anything else (names, flags) is taken from the first repetition. A ratio
    is the median of the per-repetition ratios, each measured side by side in its run."""
    first = records[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        values: list[Any] = [r.get(key) for r in records]
        if isinstance(value, dict) and all(isinstance(v, dict) for v in values):
            out[key] = median_of_runs(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = statistics.median(values)
            if len(set(values)) > 1:
                out[f"{key}_runs"] = values
        else:
            out[key] = value
    return out


def run(b: Any, m: ModuleType) -> dict[str, Any]:
    res: dict[str, Any] = {"ossfs": shutil.which("ossfs") or "not on PATH: no ossfs column",
                           "runs": b.args.runs}
    runs = {"big_dir": big_dir, "many_dirs": many_dirs, "huge_file": huge_file, "parallel": parallel}
    for name in selected(b.args):
        fn = runs[name]
        records = []
        for i in range(b.args.runs):
            m.log(f"scale: {name}, run {i + 1} of {b.args.runs}")
            records.append(fn(b, m))
            m.log(f"scale: {name}: {json.dumps(records[-1])}")     # kept if a later one fails
        res[name] = median_of_runs(records)
    return res


def print_summary(res: dict[str, Any]) -> None:
    if "big_dir" in res:
        bd = res["big_dir"]
        print(f"\n  scale: directory of {bd['entries']:,} objects: ls {bd['ls']['seconds']:.2f} s, "
              f"ls -l cold {bd['ls_l_cold']['seconds']:.2f} s ({bd['ls_l_cold']['total_requests']} requests), "
              f"warm {bd['ls_l_warm']['seconds']:.2f} s, find {bd['find']['seconds']:.2f} s; listing alone "
              f"{bd['listing_requests_seconds']:.2f} s; RSS {bd['rss_after'] / 2**20:.0f} MiB, "
              f"{bd['rss_bytes_per_known_inode']:.0f} bytes per known inode")
    if "many_dirs" in res:
        md = res["many_dirs"]
        print(f"  scale: find over {md['objects']:,} objects in {md['dirs']} directories: {md['seconds']:.2f} s "
              f"(flat listing alone {md['listing_requests_seconds']:.2f} s), RSS {md['rss_after'] / 2**20:.0f} MiB")
    if "huge_file" in res:
        hf = res["huge_file"]
        print(f"  scale: huge file {hf['size'] / 2**30:.1f} GiB: written in {hf['write']['seconds']:.1f} s "
              f"({hf['parts']} parts), stat {hf['stat_seconds'] * 1e3:.0f} ms, read of 4 pieces "
              f"{hf['read']['seconds']:.2f} s, mv {hf['rename']['seconds']:.2f} s")
    if "parallel" in res:
        par = res["parallel"]
        print(f"  scale: 16 parallel streams of {par['size'] / 2**20:.0f} MiB: write "
              f"{par['mount']['write']['rate']:.1f} MB/s ({par['write_ratio_vs_crypto_bucket']:.2f}x 16 CryptoBucket "
              f"threads), read {par['mount']['read']['rate']:.1f} MB/s ({par['read_ratio_vs_crypto_bucket']:.2f}x)")
    print(f"  ({res['runs']} run(s) each; medians)  ossfs: {res['ossfs']}")
