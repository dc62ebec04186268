"""ossencfs against the other FUSE mounts of OSS, on the same emulator (issue 17's table of
ossfs figures, with the mounts that can be installed here).

Systems, a column each when its program is on the PATH (``apt-get install s3fs rclone``):

  ossencfs  this mount, default options (upload on close), client-side-encrypted objects (RSA)
  ossencfs-wb  the same with ``--write-back 1`` (close returns once the journal is on disk, the
            uploads follow), for the write rows only: rclone's mode below is of this kind
  s3fs      s3fs-fuse, the project ossfs 1.x is a fork of (same caches, same request pattern:
            a HEAD per entry, multipart writes), default options; plain objects
  rclone    ``rclone mount --vfs-cache-mode writes``, S3 backend (provider Other, path-style);
            plain objects. Its default mode (``off``) cannot run ``cp -a`` (EIO on "preserving
            permissions"), so this is the mode rclone's documentation advises for programs that
            use files as on a local disk: close returns at once and the upload follows 5 s later
            (``--vfs-write-back``, default). rclone exits on unmount with uploads still queued
            (they wait for its next start), so "until in the bucket" is when its remote-control
            ``vfs/stats`` shows no upload queued or in progress

s3fs and rclone speak S3: they reach the emulator through OSS's S3-compatible access
(``python -m ossencfs emulator --s3-compat``, ``ossencfs/emulator/s3compat.py``), as they
reach real OSS once that access is enabled for the account. ossfs 1.x and 2.0 are in no package
registry this machine can reach, so they have no column; ossfs 1.x sends OSS signatures to a
virtual-hosted bucket name, which the emulator's IP endpoint cannot give it.

Workloads (the rows of the issue's table), each timed on a freshly started mount of each system,
median of ``--runs``; "until in the bucket" stops the clock when the mount process has exited
after ``fusermount3 -u`` (ossencfs and s3fs upload what they hold before they exit; rclone: see
above); ``seconds_until_closed`` is when the writer was done:

  seq_write     one ``--size`` file written in 1 MiB pieces, until in the bucket
  seq_read      that file read whole, cold (a new mount)
  random_read   ``--random-reads`` 4 KiB preads at random offsets of it, cold
  small_create  ``--files`` 4 KiB files created one after another, until in the bucket
  small_read    those files read, cold
  ls_l          ``ls -l`` of a directory of ``--ls-entries`` objects the mount has never seen
                (written by the SDK: CryptoBucket objects for ossencfs, plain ones for the others)
  cp_a          ``cp -a`` of a source tree of ``--tree-files`` files, until in the bucket
  mv_dir        ``mv`` of a directory of ``--mv-files`` 4 KiB objects (seeded by the SDK)

and each system's peak RSS over all its mounts (and per workload in the JSON). Ratio = the other's time / ossencfs's time
(> 1: ossencfs is faster). Profiles as in ``bench.py`` (loopback; cloud: 20 ms before the first
response byte, 50 Mbit/s per connection).

Usage:
  .venv/bin/python scripts/bench_mounts.py --profile cloud --json out.json
  .venv/bin/python scripts/bench_mounts.py --quick                        # proves it works
Needs root, /dev/fuse and fusermount3.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as m  # noqa: E402  (scripts/bench.py: emulator process, mount process, helpers)

WORKLOADS = ("seq_write", "seq_read", "random_read", "small_create", "small_read", "ls_l", "cp_a",
             "mv_dir")
UNTIL_IN_BUCKET = ("seq_write", "small_create", "cp_a", "mv_dir")
NEW_FILES = ("seq_write", "small_create", "cp_a")   # rclone uploads these after close
WRITE_BACK = "ossencfs-wb"     # ossencfs --write-back 1: the write rows only
OTHERS = {"s3fs": "s3fs", "rclone": "rclone"}         # system -> program on the PATH


class Runner:
    """One profile: the emulator, the SDK clients, and a fresh mount of a system on demand.
    Has what ``bench.MountProc`` reads of its bench (``workdir``, ``emu``, ``args``)."""

    def __init__(self, args: argparse.Namespace, workdir: Path, profile: str) -> None:
        import oss2
        from oss2.crypto import RsaProvider
        self.args, self.workdir, self.profile = args, workdir, profile
        self.profile_dir = workdir
        self.pattern = m.Pattern()
        self.key_pem, pub_pem = m.make_rsa_key(workdir)
        pdir = workdir / f"profile-{profile}"
        pdir.mkdir()
        self.emu = m.EmulatorProc(pdir / "oss", pdir / "emulator.log", ("--s3-compat",)).start()
        auth = oss2.Auth(m.AK, m.SK)
        self.plain = oss2.Bucket(auth, self.emu.endpoint, m.BUCKET)
        pair = {"private_key": self.key_pem.read_text(), "public_key": pub_pem.read_text()}
        self.crypto = oss2.CryptoBucket(auth, self.emu.endpoint, m.BUCKET,
                                        crypto_provider=RsaProvider(key_pair=pair))
        self.password = workdir / "passwd-s3fs"
        self.password.write_text(f"{m.AK}:{m.SK}\n")
        self.password.chmod(0o600)
        self.seq = 0
        self.peak: dict[str, int] = {}
        with socket.socket() as sock:         # a free port for rclone's remote control
            sock.bind(("127.0.0.1", 0))
            self.rc_port = sock.getsockname()[1]

    def mount(self, system: str) -> m.MountProc:
        self.seq += 1
        name = f"{self.seq:03d}-{system}"
        path = self.workdir / f"mnt-{name}"
        argv: list[str] | None = None
        env: dict[str, str] | None = None
        if system == "s3fs":
            argv = ["s3fs", m.BUCKET, str(path), "-f", "-o", f"url={self.emu.endpoint}",
                    "-o", "use_path_request_style", "-o", f"passwd_file={self.password}"]
        elif system == "rclone":
            env = {k: v for k, v in m.child_env().items() if k != "AWS_CA_BUNDLE"}   # http here
            env.update({"RCLONE_CONFIG_OSS_TYPE": "s3", "RCLONE_CONFIG_OSS_PROVIDER": "Other",
                        "RCLONE_CONFIG_OSS_ACCESS_KEY_ID": m.AK,
                        "RCLONE_CONFIG_OSS_SECRET_ACCESS_KEY": m.SK,
                        "RCLONE_CONFIG_OSS_ENDPOINT": self.emu.endpoint,
                        "RCLONE_CONFIG_OSS_FORCE_PATH_STYLE": "true"})
            argv = ["rclone", "mount", f"oss:{m.BUCKET}", str(path), "--vfs-cache-mode", "writes",
                    "--cache-dir", str(self.workdir / f"cache-{name}"), "--config", "/dev/null",
                    "--rc", "--rc-no-auth", f"--rc-addr=127.0.0.1:{self.rc_port}"]
        extra = ["--write-back", "1"] if system == WRITE_BACK else []
        proc = m.MountProc(self, name, ["--rsa-key", str(self.key_pem), *extra], argv=argv, env=env)
        return proc.start()

    def unmount(self, system: str, proc: m.MountProc, uploads: bool = False) -> None:
        """Unmount ``proc`` (a mount of ``system``); with ``uploads``, once an rclone mount has
        sent the files written to it."""
        try:
            if uploads and system == "rclone" and proc.proc is not None:
                wait_for_rclone_uploads(self.rc_port)
        finally:
            proc.stop()
            self.peak[system] = max(self.peak.get(system, 0), proc.peak)

    def timed_on_mount(self, system: str, workload: str, action: Callable[[Path], Any],
                       prepare: Callable[[Path], Any] | None = None) -> dict[str, Any]:
        """Seconds of ``action(mountpoint)`` on a fresh mount of ``system`` (until its data is
        in the bucket for the workloads of ``UNTIL_IN_BUCKET``) and the emulator's request
        counts meanwhile."""
        proc = self.mount(system)
        try:
            rec = m.timed_write(self.emu, proc.path, action, prepare,
                                lambda: self.unmount(system, proc, workload in NEW_FILES)
                                if workload in UNTIL_IN_BUCKET else None)
        finally:
            self.unmount(system, proc)
        return {**rec, "peak_rss_bytes": proc.peak}

    def seed(self, system: str, prefix: str, n: int, size: Callable[[int], int]) -> None:
        """``n`` objects under ``prefix`` as the SDK writes them: CryptoBucket objects for
        ossencfs, plain ones for the others (no POSIX metadata)."""
        bucket = self.crypto if system.startswith("ossencfs") else self.plain

        def put(i: int) -> None:
            bucket.put_object(f"{prefix}f{i:05d}", self.pattern.at(i * 4099, size(i)))
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(n)))

    def count(self, prefix: str) -> int:
        import oss2
        return sum(1 for o in oss2.ObjectIterator(self.plain, prefix=prefix) if not o.key.endswith("/"))

    def stop(self) -> None:
        self.emu.stop()


def wait_for_rclone_uploads(port: int, timeout: float = 3600) -> None:
    """Until the rclone mount whose remote control is at ``port`` has no upload queued or in
    progress (polled every 20 ms); RuntimeError when an upload failed or it takes too long.
    rclone queues a file at its RELEASE, which the kernel sends after close() has returned:
    until an upload shows up, the polling goes on for at most 0.5 s (the uploads then wait
    5 s in its queue, so they are seen); the workloads check that every object is in the
    bucket."""
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = time.monotonic()
    seen = False
    while True:
        with opener.open(urllib.request.Request(f"http://127.0.0.1:{port}/vfs/stats",
                                                data=b"{}", method="POST"), timeout=30) as resp:
            cache = json.load(resp)["diskCache"]
        m.check(cache["erroredFiles"] == 0, f"rclone: {cache['erroredFiles']} uploads failed")
        if cache["uploadsQueued"] or cache["uploadsInProgress"]:
            seen = True
        elif seen or time.monotonic() - start > 0.5:
            return
        m.check(time.monotonic() - start < timeout, "rclone: uploads still queued")
        time.sleep(0.02)


def one_run(r: Runner, system: str, run: int, src_tree: Path) -> dict[str, dict[str, Any]]:
    """Every selected workload once on ``system``; {workload: record}."""
    a, pat, out = r.args, r.pattern, {}
    if system == WRITE_BACK:              # its reads are ossencfs's: only the write rows
        a = argparse.Namespace(**{**vars(a), "only": [w for w in a.only if w in UNTIL_IN_BUCKET]})
    d = f"{system}-{run}"
    big = f"{d}/seq.bin"

    def write_big(mnt: Path) -> None:
        with open(mnt / big, "wb", buffering=0) as f:
            for off in range(0, a.size, m.CHUNK):
                f.write(pat.at(off, min(m.CHUNK, a.size - off)))
    if "seq_write" in a.only:
        out["seq_write"] = r.timed_on_mount(system, "seq_write", write_big, lambda mnt: (mnt / d).mkdir())
        m.check(r.plain.head_object(big).content_length == a.size, f"{system}: seq.bin size")

    def read_big(mnt: Path) -> None:
        with open(mnt / big, "rb", buffering=0) as f:
            off = 0
            while chunk := f.read(m.CHUNK):
                m.check(chunk == pat.at(off, len(chunk)), f"{system}: seq read at {off}")
                off += len(chunk)
            m.check(off == a.size, f"{system}: seq read length {off}")
    if "seq_read" in a.only:
        out["seq_read"] = r.timed_on_mount(system, "seq_read", read_big)
    rnd = random.Random(run)
    offsets = [rnd.randrange(a.size // m.SMALL) * m.SMALL for _ in range(a.random_reads)]

    def random_reads(mnt: Path) -> None:
        fd = os.open(mnt / big, os.O_RDONLY)
        try:
            for o in offsets:
                m.check(os.pread(fd, m.SMALL, o) == pat.at(o, m.SMALL), f"{system}: random read at {o}")
        finally:
            os.close(fd)
    if "random_read" in a.only:
        out["random_read"] = r.timed_on_mount(system, "random_read", random_reads)
    small = f"{d}/small"

    def create(mnt: Path) -> None:
        for i in range(a.files):
            with open(mnt / small / f"f{i:05d}", "wb") as f:
                f.write(pat.at(i * m.SMALL, m.SMALL))
    if "small_create" in a.only:
        out["small_create"] = r.timed_on_mount(system, "small_create", create, lambda mnt: (mnt / small).mkdir(parents=True))
        m.check(r.count(small + "/") == a.files, f"{system}: small files in the bucket")

    def read_small(mnt: Path) -> None:
        for i in range(a.files):
            m.check((mnt / small / f"f{i:05d}").read_bytes() == pat.at(i * m.SMALL, m.SMALL),
                    f"{system}: small file {i}")
    if "small_read" in a.only:
        out["small_read"] = r.timed_on_mount(system, "small_read", read_small)
    if "ls_l" in a.only:
        r.seed(system, f"{d}/lsdir/", a.ls_entries, lambda i: 100 + i % 900)

        def ls(mnt: Path) -> None:
            p = subprocess.run(["ls", "-l", str(mnt / d / "lsdir")], capture_output=True, timeout=3600)
            m.check(p.returncode == 0 and len(p.stdout.splitlines()) - 1 == a.ls_entries,
                    f"{system}: ls -l: {p.stderr[-300:]!r}")
        out["ls_l"] = r.timed_on_mount(system, "ls_l", ls)
    if "cp_a" in a.only:
        failed: list[str] = []

        def cp(mnt: Path) -> None:
            p = subprocess.run(["cp", "-a", str(src_tree), str(mnt / d / "tree")], capture_output=True,
                               text=True, timeout=7200)
            failed.extend(p.stderr.splitlines())
            # rclone answers EIO to cp's ACL (system.posix_acl_access): cp exits 1, having copied
            # every file; counted, any other failure stops the benchmark
            m.check(p.returncode == 0 or all("preserving permissions" in x for x in failed),
                    f"{system}: cp -a: {p.stderr[-300:]!r}")
        out["cp_a"] = r.timed_on_mount(system, "cp_a", cp, lambda mnt: (mnt / d).mkdir(exist_ok=True))
        out["cp_a"]["cp_error_lines"] = len(failed)
        m.check(r.count(f"{d}/tree/") == a.tree_files, f"{system}: cp -a objects in the bucket")
    if "mv_dir" in a.only:
        r.seed(system, f"{d}/mv/", a.mv_files, lambda i: m.SMALL)

        def mv(mnt: Path) -> None:
            p = subprocess.run(["mv", str(mnt / d / "mv"), str(mnt / d / "moved")], capture_output=True,
                               timeout=3600)
            m.check(p.returncode == 0, f"{system}: mv: {p.stderr[-300:]!r}")
        out["mv_dir"] = r.timed_on_mount(system, "mv_dir", mv)
        m.check(r.count(f"{d}/moved/") == a.mv_files and r.count(f"{d}/mv/") == 0,
                f"{system}: mv moved every object")
    return out


def summarize(runs: dict[str, list[dict[str, dict[str, Any]]]], peak: dict[str, int]) -> dict[str, Any]:
    """{workload: {system: median record, "ratio_<system>": its seconds / ossencfs's,
    "ratio_<system>_vs_write_back": its seconds / ossencfs-wb's (the write rows)}}."""
    res: dict[str, Any] = {}
    for w in (w for w in WORKLOADS if w in runs["ossencfs"][0]):
        row: dict[str, Any] = {}
        for system, recs in runs.items():
            if w not in recs[0]:
                continue
            order = sorted(recs, key=lambda x: x[w]["seconds"])
            rec = dict(order[(len(order) - 1) // 2][w])
            rec["seconds_runs"] = [x[w]["seconds"] for x in recs]
            rec["seconds"] = statistics.median(rec["seconds_runs"])
            row[system] = rec
        for system in (s for s in runs if s in OTHERS):
            row[f"ratio_{system}"] = row[system]["seconds"] / row["ossencfs"]["seconds"]
            if WRITE_BACK in row:
                row[f"ratio_{system}_vs_write_back"] = row[system]["seconds"] / row[WRITE_BACK]["seconds"]
        res[w] = row
    res["peak_rss_bytes"] = dict(peak)
    return res


def print_table(profile: str, res: dict[str, Any], systems: list[str]) -> None:
    others = [s for s in systems if s in OTHERS]
    print(f"\n== profile {profile}: seconds (median); ratio = other's time / ossencfs's time "
          f"(vs {WRITE_BACK}: / {WRITE_BACK}'s time)")
    print(f"{'workload':14s}" + "".join(f"{s:>12s}" for s in systems) + "".join(f"{'x ' + s:>10s}" for s in others))
    for w in (w for w in WORKLOADS if w in res):
        row = res[w]
        print(f"{w:14s}" + "".join(f"{row[s]['seconds']:12.2f}" if s in row else f"{'-':>12s}" for s in systems)
              + "".join(f"{row['ratio_' + s]:10.2f}" for s in others))
        if w in UNTIL_IN_BUCKET:
            print(f"{'  (closed)':14s}" + "".join(f"{row[s]['seconds_until_closed']:12.2f}" for s in systems))
        if WRITE_BACK in row:
            print(f"{'  vs ' + WRITE_BACK:{14 + 12 * len(systems)}s}"
                  + "".join(f"{row[f'ratio_{s}_vs_write_back']:10.2f}" for s in others))
    if "rclone" in systems:
        print("rclone's write rows include the 5 s it waits after a close before it uploads "
              "(--vfs-write-back, its default)")
    print(f"{'peak RSS MiB':14s}" + "".join(f"{res['peak_rss_bytes'].get(s, 0) / 2**20:12.0f}" for s in systems))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=("loopback", "cloud", "both"), default="both")
    p.add_argument("--size", type=m.parse_size, default=256 << 20, help="sequential file (default 256MiB)")
    p.add_argument("--files", type=int, default=500, help="4 KiB files created and read (default 500)")
    p.add_argument("--random-reads", type=int, default=500, help="4 KiB random reads (default 500)")
    p.add_argument("--ls-entries", type=int, default=2000, help="entries of the ls -l directory (default 2000)")
    p.add_argument("--tree-files", type=int, default=500, help="files of the cp -a tree (default 500)")
    p.add_argument("--mv-files", type=int, default=200, help="files of the renamed directory (default 200)")
    p.add_argument("--runs", type=int, default=3, help="runs per system and profile (default 3)")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    p.add_argument("--systems", default=f"ossencfs,{WRITE_BACK},s3fs,rclone",
                   help="comma-separated systems; those whose program is missing are left out")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one run: proves the script works")
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--workdir", metavar="DIR")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (mount logs)")
    args = p.parse_args(argv)
    args.only = [w for w in WORKLOADS if w in {x.strip() for x in args.only.split(",")}]
    args.mount_option, args.py_spy = [], None          # what bench.MountProc reads
    if {"seq_read", "random_read"} & set(args.only):
        args.only = sorted(set(args.only) | {"seq_write"}, key=WORKLOADS.index)
    if "small_read" in args.only and "small_create" not in args.only:
        args.only = sorted(set(args.only) | {"small_create"}, key=WORKLOADS.index)
    if args.quick:
        args.size, args.files, args.random_reads, args.ls_entries = 4 << 20, 20, 20, 50
        args.tree_files, args.mv_files, args.runs = 30, 10, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in m._PROXY_VARS:
        os.environ.pop(name, None)
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
        print("bench_mounts.py: needs root, /dev/fuse and fusermount3", file=sys.stderr)
        return 2
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    systems = [s for s in wanted if s.startswith("ossencfs") or shutil.which(OTHERS.get(s, s))]
    if "ossencfs" not in systems:
        systems.insert(0, "ossencfs")
    missing = sorted(set(wanted) - set(systems))
    if missing:
        m.log(f"left out (program not on the PATH): {', '.join(missing)}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ossencfs-bench-mounts-"))
    workdir.mkdir(parents=True, exist_ok=True)
    src_tree = m.make_source_tree(workdir, args.tree_files)
    versions = {s: subprocess.run([OTHERS[s], "--version"], capture_output=True, text=True)
                .stdout.splitlines()[0] for s in systems if s in OTHERS}
    report: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [os.path.basename(sys.argv[0]), *(argv or sys.argv[1:])],
        "machine": m.machine_info(), "versions": versions,
        "parameters": {k: getattr(args, k) for k in ("size", "files", "random_reads", "ls_entries",
                                                     "tree_files", "mv_files", "runs", "only", "quick")},
        "systems": systems, "profiles": {}}
    try:
        for profile in (["loopback", "cloud"] if args.profile == "both" else [args.profile]):
            r = Runner(args, workdir, profile)
            try:
                faults = m.PROFILES[profile]
                r.emu.set_faults(faults["latency_ms"], faults["bandwidth_mbps"])
                runs: dict[str, list[dict[str, dict[str, Any]]]] = {s: [] for s in systems}
                for run in range(args.runs):            # systems take turns: drift hits all alike
                    for system in systems:
                        m.log(f"{profile} run {run + 1}: {system}")
                        runs[system].append(one_run(r, system, run, src_tree))
            finally:
                r.stop()
            res = summarize(runs, r.peak)
            report["profiles"][profile] = {"faults": faults, "workloads": res}
            print_table(profile, res, systems)
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=2))
    finally:
        if args.keep:
            m.log(f"scratch directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
