#!/usr/bin/env python3
"""Benchmark the mount against what a user would otherwise script, in one run.

Three systems do the same workloads against the same local OSS emulator:

  (a) ``mount``          the ossencfs FUSE mount (a separate ``python -m ossencfs mount -f``
                         process, so its peak RSS can be read from /proc/PID/status);
  (b) ``crypto_bucket``  oss2.CryptoBucket (RsaProvider; AliKMSProvider for the KMS workload),
                         single-stream put_object/get_object, ranged get_object for random reads;
  (c) ``plain_bucket``   oss2.Bucket without encryption: the ceiling.

The emulator runs as its own process (``python -m ossencfs emulator``) so that serving requests
does not compete for this process's GIL while (b) and (c) run here; request and byte counts
come from its admin endpoint. The KMS server runs in this process (it is touched only by the
KMS workload) so its ``calls`` counter is read directly.

Profiles: ``loopback`` (no added latency) and ``cloud`` (20 ms before the first response byte
and 50 Mbit/s per connection, roughly one connection to a real OSS region).

Every read through the mount happens on a freshly started mount with an empty block cache:
unmounting a FUSE file system evicts its inodes and their page cache, so the reads reach OSS.
Write figures through the mount are "in the bucket": the clock stops when the mount process
has exited after ``fusermount3 -u`` (it uploads whatever is still dirty before it exits); the
time at which the writer's ``close`` returned is reported beside it.

The small-file and ``cp -a`` writes also run on a mount with ``--write-back SECONDS`` (close
returns once the journal is on disk; uploads happen in the background, several at once): shown
as an extra row, ``variants.mount_write_back`` in the JSON. ``cp -a`` also reports the requests
per file (``requests_per_file``: PutObject, CopyObject, GetObject, HeadObject and the rest).

``mv_dir`` renames a directory of ``--mv-files`` 4 KiB files (default 200) that is already in
the bucket (seeded untimed, CryptoBucket objects). OSS has no rename: (a) is ``mv`` on a fresh
mount (it lists the prefix, copies every object, deletes the originals); (b) and (c) are what an
SDK user scripts: list the prefix, ``copy_object`` each object (its metadata, the wrapped data
key included, goes along), then ``batch_delete_objects``, single stream.

``chmod_large`` changes the mode of one ``--chmod-size`` file (default 256 MiB) that is already
in the bucket. Real OSS lets no CopyObject change a client-side-encrypted object's metadata, so
(a) re-uploads the unchanged ciphertext with new headers, relayed from the object itself; the
clock runs from ``chmod`` until the new ``x-oss-meta-mode`` is visible to a HEAD from outside
(polled every 50 ms; those HEADs are not counted in the mount's requests), so the coalescing
delay of the mount's metadata changes is part of the figure. ``variants.mount_fsync`` is
``chmod`` + ``open`` + ``fsync`` on the same mount (fsync returns once the change is stored).
(b) is what a CryptoBucket user has to do: GetObject of the raw stored bytes streamed into a
PutObject of them with the new headers (plain oss2.Bucket, nothing decrypted); (c) is the
ceiling of an unencrypted object: CopyObject onto itself with REPLACE. The (b) and (c) objects
are seeded before the faults are set, like the ``ls -l`` directory. Its rate is 1/seconds, so
x(b) = seconds of (b) / seconds of (a).

Usage:
  .venv/bin/python scripts/bench.py --profile loopback --size 256MiB --runs 1 --json out.json
  .venv/bin/python scripts/bench.py --quick --profile loopback --json /tmp/q.json
  .venv/bin/python scripts/bench.py --only seq_read --size 1GiB          # one workload (+ what it needs)
  .venv/bin/python scripts/bench.py --only chmod_large --chmod-size 256MiB --profile cloud
  .venv/bin/python scripts/bench.py --only ls_l --py-spy /path/to/py-spy  # collapsed stacks per mount
Needs root, /dev/fuse and fusermount3 (real FUSE mounts).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import re
import select
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scale  # noqa: E402  (scripts/bench_scale.py: the --scale runs)

AK, SK = "bench-ak", "bench-sk"
BUCKET = "bench"
KMS_REGION = "local-1"
SYSTEMS = ("mount", "crypto_bucket", "plain_bucket")
PROFILES: dict[str, dict[str, float]] = {
    "loopback": {"latency_ms": 0.0, "bandwidth_mbps": 0.0},
    "cloud": {"latency_ms": 20.0, "bandwidth_mbps": 50.0},
}
WORKLOADS = ("seq_write", "seq_read", "random_read_4k", "small_create", "small_read", "ls_l", "cp_a", "mv_dir",
             "kms", "chmod_large")
UNITS = {"seq_write": "MB/s", "seq_read": "MB/s", "random_read_4k": "ops/s", "small_create": "files/s",
         "small_read": "files/s", "ls_l": "entries/s", "cp_a": "files/s", "mv_dir": "files/s", "kms": "ops/s", "chmod_large": "ops/s"}
CHUNK = 1 << 20
SMALL = 4096
CHMOD_POLL = 0.05          # seconds between HEADs while waiting for a new mode in the bucket
PER_FILE_OPS = (("PUT", "PutObject"), ("Copy", "CopyObject"), ("GET", "GetObject"), ("HEAD", "HeadObject"))
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


# ---- helpers ---------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    """``1GiB``, ``256MiB``, ``64M``, ``4096`` -> bytes (K/M/G are binary, like dd)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Pattern:
    """Deterministic pseudo-random content, so every read can be checked without keeping a copy
    (and without writing test data anywhere but the bucket)."""

    LENGTH = 8 << 20

    def __init__(self, seed: int = 20261122) -> None:
        self.buf = random.Random(seed).randbytes(self.LENGTH)

    def at(self, off: int, n: int) -> bytes:
        i = off % self.LENGTH
        if i + n <= self.LENGTH:
            return self.buf[i:i + n]
        out = bytearray()
        while n > 0:
            i = off % self.LENGTH
            k = min(n, self.LENGTH - i)
            out += self.buf[i:i + k]
            off += k
            n -= k
        return bytes(out)


class PatternReader:
    """A file-like view of ``size`` bytes of the pattern, what a user hands to put_object."""

    def __init__(self, pattern: Pattern, size: int) -> None:
        self.pattern, self.size, self.pos = pattern, size, 0

    def __len__(self) -> int:
        return self.size - self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        data = self.pattern.at(self.pos, n)
        self.pos += n
        return data


class _Sized:
    """A stream with a known length (a GetObject body), so put_object sends it as it comes."""

    def __init__(self, stream: Any, size: int) -> None:
        self.stream, self.left = stream, size

    def __len__(self) -> int:
        return self.left

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(data)
        return data


def check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"verification failed: {what}")


def cpu_probe() -> dict[str, float]:
    """How fast the CPU is *now*: seconds of a fixed pure-Python loop (2,000,000 additions) and
    the AES-256-CTR rate of one core in MB/s (64 MiB). This development machine is a VM on a
    shared host whose speed changes while its load average stays near 0 (2026-12-01, idle:
    the loop took 0.17-0.27 s and AES ran at 338-483 MB/s within one minute), and the mount
    spends more CPU than a CryptoBucket stream, so its ratios move with it (16 parallel
    readers, cloud profile: 127 MB/s in one run, 82-88 MB/s in three runs hours later, while
    16 CryptoBucket threads went from 97 to 91 MB/s). Taken before and after each profile's
    runs and printed beside its table, so that figures are compared at like probe values."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    t0 = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    loop = time.perf_counter() - t0
    data = bytes(64 << 20)
    enc = Cipher(algorithms.AES(bytes(32)), modes.CTR(bytes(16))).encryptor()
    t0 = time.perf_counter()
    enc.update(data)
    aes = len(data) / (time.perf_counter() - t0) / 1e6
    return {"python_loop_seconds": round(loop, 3), "aes_ctr_mb_per_s": round(aes)}


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    commit = ""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    import oss2
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "memory_bytes": mem, "memory": human(mem),
            "kernel": platform.release(), "python": platform.python_version(), "oss2": oss2.__version__,
            "git_commit": commit, "hostname": platform.node()}


def drop_page_cache() -> bool:
    """Drop the kernel page cache (root only); False when not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env.update({"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SK, "PYTHONPATH": str(ROOT)})
    env.pop("OSS_SESSION_TOKEN", None)
    return env


def is_mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


# ---- emulator (its own process) ----------------------------------------------------------------
class EmulatorProc:
    """``python -m ossencfs emulator`` in a child process, driven through its admin endpoint."""

    def __init__(self, data_dir: Path, log_path: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir, self.log_path, self.extra_args = data_dir, log_path, extra_args
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.admin_token = ""
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self) -> "EmulatorProc":
        argv = [sys.executable, "-m", "ossencfs", "emulator", "--data", str(self.data_dir),
                "--access-key-id", AK, "--access-key-secret", SK, "--bucket", BUCKET, "--no-fsync",
                *self.extra_args]
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=logf, env=child_env(), cwd=str(ROOT))
        logf.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 900     # a seeded scale bucket is indexed at start
        buf = b""
        while b"OSS endpoint:" not in buf:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not start: {self.log_path.read_text(errors='replace')[-2000:]}")
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                buf += os.read(self.proc.stdout.fileno(), 4096)
        m = re.search(rb"OSS endpoint: (\S+)", buf)
        assert m
        self.endpoint = m.group(1).decode()
        self.admin_token = (self.data_dir / "admin-token").read_text().strip()
        return self

    def admin(self, method: str, path: str) -> dict[str, Any]:
        req = urllib.request.Request(self.endpoint + path, method=method, data=b"" if method == "POST" else None,
                                     headers={"X-Admin-Token": self.admin_token})
        with self._opener.open(req, timeout=30) as resp:
            return json.loads(resp.read())

    def set_faults(self, latency_ms: float, bandwidth_mbps: float) -> dict[str, Any]:
        return self.admin("POST", f"/-/admin/faults?latency_ms={latency_ms}&bandwidth_mbps={bandwidth_mbps}")

    def stats(self) -> dict[str, Any]:
        """Counters once they have settled: the emulator adds a response's bytes after sending it,
        so a client can see its answer before the counters do."""
        prev = self.admin("GET", "/-/admin/stats")
        for _ in range(100):
            time.sleep(0.03)
            cur = self.admin("GET", "/-/admin/stats")
            if cur == prev:
                return cur
            prev = cur
        return prev

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None


def timed_write(emu: EmulatorProc, mountpoint: Path, action: Callable[[Path], Any],
                prepare: Callable[[Path], Any] | None, unmount: Callable[[], Any]) -> dict[str, Any]:
    """``prepare(mountpoint)`` (untimed), then the seconds of ``action(mountpoint)``
    ("seconds_until_closed") and of it and ``unmount()`` ("seconds": until the mount has
    uploaded everything and exited, the figure that counts), with the emulator's counters."""
    if prepare is not None:
        prepare(mountpoint)
    before = emu.stats()
    t0 = time.perf_counter()
    action(mountpoint)
    closed = time.perf_counter() - t0
    unmount()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "seconds_until_closed": closed, **stats_delta(before, emu.stats())}


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    reqs = {k: after["requests"].get(k, 0) - before["requests"].get(k, 0)
            for k in set(after["requests"]) | set(before["requests"])}
    reqs = {k: v for k, v in sorted(reqs.items()) if v}
    return {"requests": reqs, "total_requests": sum(reqs.values()),
            "bytes_from_oss": after["bytes_sent"] - before["bytes_sent"],
            "bytes_to_oss": after["bytes_received"] - before["bytes_received"]}


# ---- the mount (its own process) ---------------------------------------------------------------
class MountProc:
    """One ``python -m ossencfs mount ... -f`` process with a fresh cache dir; samples its RSS.
    With ``argv`` (and ``env``), another mount program in the foreground instead
    (``bench_mounts.py``: s3fs, rclone)."""

    def __init__(self, bench: Any, name: str, key_args: list[str], cache_dir: Path | None = None,
                 keep_cache: bool = False, argv: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.bench = bench
        self.path = bench.workdir / f"mnt-{name}"
        self.cache_dir = cache_dir or bench.workdir / f"cache-{name}"
        self.fresh_cache = cache_dir is None   # else: an earlier mount's, attribute cache and all
        self.keep_cache = keep_cache         # another mount takes this cache directory over
        self.log_path = bench.workdir / f"mount-{name}.log"
        self.key_args = key_args
        self.proc: subprocess.Popen | None = None
        self.peak_hwm = 0
        self.peak_rss = 0
        self._stop_sampler = threading.Event()
        self._sampler: threading.Thread | None = None
        self.spy: subprocess.Popen | None = None
        self.argv, self.env = argv, env

    def start(self) -> "MountProc":
        if self.fresh_cache:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        self.path.mkdir(exist_ok=True)
        argv = self.argv or [sys.executable, "-m", "ossencfs", "mount", f"oss://{BUCKET}", str(self.path),
                             "--endpoint", self.bench.emu.endpoint, "--cache-dir", str(self.cache_dir),
                             *self.key_args, *self.bench.args.mount_option, "-f"]
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=logf, env=self.env or child_env(), cwd=str(ROOT))
        logf.close()
        deadline = time.monotonic() + 60
        while not is_mounted(str(self.path)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mount exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mount not ready after 60 s:\n{self.log_tail()}")
            time.sleep(0.02)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        if self.bench.args.py_spy and self.argv is None:
            out = self.bench.profile_dir / f"{self.bench.profile}-{self.path.name[4:]}.txt"
            logf = open(self.log_path.with_suffix(".py-spy.log"), "ab")
            # py-spy stops by itself when the mount process exits; raw = collapsed stacks
            self.spy = subprocess.Popen([self.bench.args.py_spy, "record", "--pid", str(self.proc.pid), "--threads",
                                         "--idle", "--format", "raw", "--rate", "200", "-o", str(out)],
                                        stdout=logf, stderr=logf)
            logf.close()
        return self

    def _sample(self) -> None:
        assert self.proc is not None
        status = f"/proc/{self.proc.pid}/status"
        while not self._stop_sampler.is_set():
            try:
                with open(status) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_hwm = max(self.peak_hwm, int(line.split()[1]) * 1024)
                        elif line.startswith("VmRSS:"):
                            self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                return
            self._stop_sampler.wait(0.02)

    @property
    def peak(self) -> int:
        """Peak resident set size in bytes (kernel high-water mark; sampled RSS as a fallback)."""
        return max(self.peak_hwm, self.peak_rss)

    def stop(self) -> None:
        """Unmount and wait until the process has uploaded what was dirty and exited."""
        if is_mounted(str(self.path)):
            for args in (["-u"], ["-u"], ["-uz"]):
                r = subprocess.run(["fusermount3", *args, str(self.path)], capture_output=True)
                if r.returncode == 0:
                    break
                time.sleep(0.5)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=3600)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            rc = self.proc.returncode
            self.proc = None
            if rc not in (0, None):
                log(f"mount process exited with {rc}; log tail:\n{self.log_tail()}")
        self._stop_sampler.set()
        if self.spy is not None:
            try:
                self.spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.spy.terminate()
                self.spy.wait(timeout=10)
            self.spy = None
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        if not self.keep_cache:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


# ---- the benchmark -----------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, pattern: Pattern, key_pem: Path,
                 pub_pem: Path, src_tree: Path) -> None:
        self.args, self.workdir, self.pattern = args, workdir, pattern
        self.key_pem, self.pub_pem, self.src_tree = key_pem, pub_pem, src_tree
        self.emu: EmulatorProc = None  # type: ignore[assignment]
        self.kms: Any = None
        self.cmk = ""
        self.mounts: list[MountProc] = []
        self._mount_seq = 0
        self.profile = ""
        self.profile_dir = Path(args.py_spy_dir or workdir)
        self.profile_dir.mkdir(parents=True, exist_ok=True)

    # -- life cycle of one profile --
    def setup_profile(self, profile: str) -> None:
        import oss2
        from oss2.crypto import RsaProvider
        from ossencfs.emulator.kms import KmsServer
        self.profile = profile
        pdir = self.workdir / f"profile-{profile}"
        shutil.rmtree(pdir, ignore_errors=True)
        pdir.mkdir()
        if self.args.scale:
            bench_scale.seed(self.args, pdir / "oss", sys.modules[__name__])
        self.emu = EmulatorProc(pdir / "oss", pdir / "emulator.log").start()
        self.kms = KmsServer(str(pdir / "kms"), credentials={AK: SK}).start()
        self.cmk = self.kms.create_key(description="bench")
        auth = oss2.Auth(AK, SK)
        self.plain = oss2.Bucket(auth, self.emu.endpoint, BUCKET)
        pair = {"private_key": self.key_pem.read_text(), "public_key": self.pub_pem.read_text()}
        self.crypto = oss2.CryptoBucket(auth, self.emu.endpoint, BUCKET, crypto_provider=RsaProvider(key_pair=pair))
        provider = oss2.AliKMSProvider(AK, SK, KMS_REGION, self.cmk)
        provider.kms_client.add_endpoint(KMS_REGION, "kms", self.kms.endpoint)
        provider.kms_client.proxy = {"http": None, "https": None}   # aliyunsdkcore ignores NO_PROXY
        self.crypto_kms = oss2.CryptoBucket(auth, self.emu.endpoint, BUCKET, crypto_provider=provider)
        if "ls_l" in self.args.only:
            self.seed_listing()
        if "chmod_large" in self.args.only:
            self.seed_chmod()
        faults = PROFILES[profile]
        self.emu.set_faults(faults["latency_ms"], faults["bandwidth_mbps"])
        if faults["latency_ms"]:
            self.kms.set_faults(latency_ms=faults["latency_ms"])

    def teardown_profile(self) -> None:
        for m in self.mounts:
            try:
                m.stop()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                log(f"unmount failed: {exc}")
        self.mounts.clear()
        if self.kms is not None:
            self.kms.stop()
            self.kms = None
        if self.emu is not None:
            self.emu.stop()

    def seed_listing(self) -> None:
        """Seed the ``ls -l`` directory with SDK-encrypted objects, fast (thread pool, no faults)."""
        n = self.args.ls_entries
        t0 = time.monotonic()

        def put(i: int) -> None:
            self.crypto.put_object(f"lsdir/entry-{i:06d}", self.pattern.at(i * 997, 100 + i % 900))
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(put, range(n)))
        log(f"seeded {n} objects in lsdir/ in {time.monotonic() - t0:.1f} s")

    def seed_chmod(self) -> None:
        """The (b) and (c) objects of ``chmod_large``, one pair per run, mode 0644 (before the faults)."""
        size = self.args.chmod_size
        t0 = time.monotonic()

        def put(job: tuple[Any, str]) -> None:
            bucket, key = job
            bucket.put_object(key, PatternReader(self.pattern, size), headers={"x-oss-meta-mode": str(0o100644)})
        jobs = [(b, f"chmod-{x}-{run}.bin") for run in range(self.args.runs)
                for b, x in ((self.crypto, "b"), (self.plain, "c"))]
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(put, jobs))
        log(f"seeded {len(jobs)} objects of {human(size)} for chmod_large in {time.monotonic() - t0:.1f} s")

    def mount(self, label: str, kms: bool = False, extra: list[str] | None = None,
              cache_dir: Path | None = None, keep_cache: bool = False) -> MountProc:
        self._mount_seq += 1
        if kms:
            keys = ["--kms-key", self.cmk, "--kms-region", KMS_REGION, "--kms-endpoint", self.kms.endpoint]
        else:
            keys = ["--rsa-key", str(self.key_pem)]
        m = MountProc(self, f"{self._mount_seq:03d}-{label}", keys + list(extra or []), cache_dir, keep_cache)
        self.mounts.append(m)
        return m.start()

    def unmount(self, m: MountProc) -> float:
        t0 = time.perf_counter()
        m.stop()
        self.mounts.remove(m)
        return time.perf_counter() - t0

    def timed(self, fn: Callable[[], Any]) -> tuple[float, dict[str, Any], Any]:
        """(seconds, emulator counter delta, result) of ``fn``."""
        before = self.emu.stats()
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        return seconds, stats_delta(before, self.emu.stats()), result

    # -- sequential write/read --
    def _stream_to_file(self, path: Path, size: int) -> None:
        with open(path, "wb", buffering=0) as f:
            for off in range(0, size, CHUNK):
                f.write(self.pattern.at(off, min(CHUNK, size - off)))

    def _verify_stream(self, read: Callable[[int], bytes], size: int, what: str) -> None:
        off = 0
        while True:
            b = read(CHUNK)
            if not b:
                break
            check(b == self.pattern.at(off, len(b)), f"{what} content at {off}")
            off += len(b)
        check(off == size, f"{what} length {off} != {size}")

    def seq_write(self, run: int) -> dict[str, dict[str, Any]]:
        size = self.args.size
        out: dict[str, dict[str, Any]] = {}
        out["mount"] = self._mount_write("seq_write", lambda mnt: self._stream_to_file(mnt / f"seq-a-{run}.bin", size))
        check(self.plain.head_object(f"seq-a-{run}.bin").content_length == size, "mount object size")
        for sysname, bucket, key in (("crypto_bucket", self.crypto, f"seq-b-{run}.bin"),
                                     ("plain_bucket", self.plain, f"seq-c-{run}.bin")):
            s, d, _ = self.timed(lambda: bucket.put_object(key, PatternReader(self.pattern, size)))
            out[sysname] = {"seconds": s, **d}
        for r in out.values():
            r["rate"] = size / r["seconds"] / 1e6
        return out

    def seq_read(self, run: int) -> dict[str, dict[str, Any]]:
        size = self.args.size
        out: dict[str, dict[str, Any]] = {}
        m = self.mount("seq_read")
        path = m.path / f"seq-a-{run}.bin"

        def via_mount() -> None:
            with open(path, "rb", buffering=0) as f:
                self._verify_stream(f.read, size, "mount seq read")
        s, d, _ = self.timed(via_mount)
        out["mount"] = {"seconds": s, "peak_rss_bytes": m.peak, **d}
        self.unmount(m)
        for sysname, bucket, key in (("crypto_bucket", self.crypto, f"seq-b-{run}.bin"),
                                     ("plain_bucket", self.plain, f"seq-c-{run}.bin")):
            def via_sdk() -> None:
                r = bucket.get_object(key)
                self._verify_stream(r.read, size, f"{sysname} seq read")
            s, d, _ = self.timed(via_sdk)
            out[sysname] = {"seconds": s, **d}
        for r in out.values():
            r["rate"] = size / r["seconds"] / 1e6
            r["bytes_from_oss_per_byte_read"] = r["bytes_from_oss"] / size
        return out

    def random_read_4k(self, run: int) -> dict[str, dict[str, Any]]:
        size = self.args.size
        rnd = random.Random(run)
        blocks = max(1, size // SMALL)
        offsets = [rnd.randrange(blocks) * SMALL for _ in range(self.args.random_reads)]
        n = len(offsets)
        out: dict[str, dict[str, Any]] = {}
        m = self.mount("random_read_4k")
        path = m.path / f"seq-a-{run}.bin"

        def via_mount() -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                for o in offsets:
                    want = min(SMALL, size - o)
                    check(os.pread(fd, SMALL, o) == self.pattern.at(o, want), f"mount random read at {o}")
            finally:
                os.close(fd)
        s, d, _ = self.timed(via_mount)
        out["mount"] = {"seconds": s, **d}
        self.unmount(m)
        for sysname, bucket, key in (("crypto_bucket", self.crypto, f"seq-b-{run}.bin"),
                                     ("plain_bucket", self.plain, f"seq-c-{run}.bin")):
            def via_sdk() -> None:
                for o in offsets:
                    end = min(o + SMALL, size) - 1
                    data = bucket.get_object(key, byte_range=(o, end)).read()
                    check(data == self.pattern.at(o, end - o + 1), f"{sysname} random read at {o}")
            s, d, _ = self.timed(via_sdk)
            out[sysname] = {"seconds": s, **d}
        for r in out.values():
            r["reads"] = n
            r["rate"] = n / r["seconds"]
            r["bytes_from_oss_per_byte_read"] = r["bytes_from_oss"] / (n * SMALL)
            r["bytes_from_oss_per_read"] = r["bytes_from_oss"] / n
        return out

    # -- small files --
    def _small(self, i: int) -> bytes:
        return self.pattern.at(i * SMALL + 13, SMALL)

    def _mount_write(self, label: str, action: Callable[[Path], None], prepare: Callable[[Path], None] | None = None,
                     extra: list[str] | None = None) -> dict[str, Any]:
        """Time ``action(mountpoint)`` until it returned ("closed") and until the mount process has
        uploaded everything and exited ("in the bucket", the figure that counts)."""
        m = self.mount(label, extra=extra)
        rec = timed_write(self.emu, m.path, action, prepare, lambda: self.unmount(m))
        return {**rec, "peak_rss_bytes": m.peak}

    def _write_back_variant(self) -> list[tuple[str, str, list[str]]]:
        """(system name, object-name letter, mount args): the default mount, and with --write-back."""
        out = [("mount", "a", [])]
        if self.args.write_back > 0:
            out.append(("mount_write_back", "w", ["--write-back", f"{self.args.write_back:g}"]))
        return out

    def small_create(self, run: int) -> dict[str, dict[str, Any]]:
        n = self.args.files
        out: dict[str, dict[str, Any]] = {}
        for name, letter, extra in self._write_back_variant():
            d = f"small-{letter}-{run}"

            def create(mnt: Path, d: str = d) -> None:
                for i in range(n):
                    with open(mnt / d / f"f{i:05d}", "wb") as f:
                        f.write(self._small(i))
            out[name] = self._mount_write("small_create", create, lambda mnt, d=d: (mnt / d).mkdir(), extra)
            got = self._count(f"{d}/")
            check(got >= n, f"{name}: small files in bucket: {got} < {n}")
        for sysname, bucket, prefix in (("crypto_bucket", self.crypto, f"small-b-{run}/"),
                                        ("plain_bucket", self.plain, f"small-c-{run}/")):
            def loop() -> None:
                for i in range(n):
                    bucket.put_object(f"{prefix}f{i:05d}", self._small(i))
            s, dd, _ = self.timed(loop)
            out[sysname] = {"seconds": s, **dd}
        for r in out.values():
            r["files"] = n
            r["rate"] = n / r["seconds"]
        return out

    def _count(self, prefix: str) -> int:
        import oss2
        return sum(1 for o in oss2.ObjectIterator(self.plain, prefix=prefix) if not o.key.endswith("/"))

    def _ls_l(self, m: MountProc) -> dict[str, Any]:
        def run() -> int:
            r = subprocess.run(["ls", "-l", str(m.path / "lsdir")], capture_output=True, timeout=3600)
            check(r.returncode == 0, f"ls -l failed: {r.stderr[-500:]!r}")
            return len(r.stdout.splitlines()) - 1           # minus the "total" line
        s, d, entries = self.timed(run)
        check(entries == self.args.ls_entries, f"ls -l listed {entries} != {self.args.ls_entries}")
        return {"seconds": s, **d}

    def small_read_and_ls(self, run: int) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Both on one fresh mount: they touch different directories, so neither warms the other.

        ``ls -l`` runs three times, each on a new mount process (nothing in memory):
        ``mount`` with an empty cache directory (first sight: one HEAD per entry, to read the
        POSIX attributes a listing does not carry); ``mount_warm`` on the cache directory the
        first one left (its attribute cache, validated by the listing); and
        ``mount_listing_attrs``, an empty cache with ``-o listing_attrs``."""
        n = self.args.files
        small: dict[str, dict[str, Any]] = {}
        ls: dict[str, dict[str, Any]] = {}
        m = self.mount("small_read_ls", keep_cache=True)
        ls["mount"] = self._ls_l(m)
        sd = m.path / f"small-a-{run}"

        def read_small() -> None:
            for i in range(n):
                with open(sd / f"f{i:05d}", "rb") as f:
                    check(f.read() == self._small(i), f"mount small file {i}")
        s, d, _ = self.timed(read_small)
        small["mount"] = {"seconds": s, **d}
        self.unmount(m)
        for name, kwargs in (("mount_warm", {"cache_dir": m.cache_dir}),
                             ("mount_listing_attrs", {"extra": ["-o", "listing_attrs"]})):
            mv = self.mount(name, **kwargs)
            ls[name] = self._ls_l(mv)
            self.unmount(mv)
        for sysname, bucket, prefix in (("crypto_bucket", self.crypto, f"small-b-{run}/"),
                                        ("plain_bucket", self.plain, f"small-c-{run}/")):
            def loop() -> None:
                for i in range(n):
                    check(bucket.get_object(f"{prefix}f{i:05d}").read() == self._small(i), f"{sysname} small {i}")
            s, d, _ = self.timed(loop)
            small[sysname] = {"seconds": s, **d}

            def pages() -> int:
                count, marker = 0, ""
                while True:
                    r = bucket.list_objects(prefix="lsdir/", delimiter="/", marker=marker, max_keys=1000)
                    count += len(r.object_list) + len(r.prefix_list)
                    if not r.is_truncated:
                        return count
                    marker = r.next_marker
            s, d, entries = self.timed(pages)
            check(entries == self.args.ls_entries, f"{sysname} listed {entries}")
            ls[sysname] = {"seconds": s, **d}
        for r in small.values():
            r["files"] = n
            r["rate"] = n / r["seconds"]
        listing_alone = ls["plain_bucket"]["seconds"]
        for r in ls.values():
            r["entries"] = self.args.ls_entries
            r["rate"] = self.args.ls_entries / r["seconds"]
            r["requests_per_entry"] = r["total_requests"] / self.args.ls_entries
        for name in ("mount", "mount_warm", "mount_listing_attrs"):
            ls[name]["listing_requests_seconds"] = listing_alone
            ls[name]["time_vs_listing_requests"] = ls[name]["seconds"] / listing_alone
        return small, ls

    # -- cp -a of a source tree --
    def cp_a(self, run: int) -> dict[str, dict[str, Any]]:
        files = sorted(p for p in self.src_tree.rglob("*") if p.is_file())
        n = len(files)
        out: dict[str, dict[str, Any]] = {}
        for name, letter, extra in self._write_back_variant():
            dest = f"tree-{letter}-{run}"

            def cp(mnt: Path, dest: str = dest) -> None:
                r = subprocess.run(["cp", "-a", str(self.src_tree), str(mnt / dest)], capture_output=True, timeout=7200)
                check(r.returncode == 0, f"cp -a failed: {r.stderr[-500:]!r}")
            out[name] = self._mount_write("cp_a", cp, None, extra)
            got = self._count(f"{dest}/")
            check(got == n, f"{name}: cp -a: {got} objects for {n} files")
        for sysname, bucket, prefix in (("crypto_bucket", self.crypto, f"tree-b-{run}/"),
                                        ("plain_bucket", self.plain, f"tree-c-{run}/")):
            def loop() -> None:
                for p in files:
                    with open(p, "rb") as f:
                        bucket.put_object(prefix + p.relative_to(self.src_tree).as_posix(), f)
            s, d, _ = self.timed(loop)
            out[sysname] = {"seconds": s, **d}
        total = sum(p.stat().st_size for p in files)
        for r in out.values():
            r["files"], r["bytes"] = n, total
            r["rate"] = n / r["seconds"]
            r["requests_per_file"] = {op: c / n for op, c in r["requests"].items()}
        return out

    # -- mv of a directory: copies and deletes --
    def _seed_dir(self, bucket: Any, prefix: str, n: int) -> None:
        def put(i: int) -> None:
            bucket.put_object(f"{prefix}f{i:05d}", self._small(i))
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(n)))

    def mv_dir(self, run: int) -> dict[str, dict[str, Any]]:
        n = self.args.mv_files
        out: dict[str, dict[str, Any]] = {}
        src, dst = f"mv-a-{run}", f"mv-a-{run}-moved"
        self._seed_dir(self.crypto, f"{src}/", n)

        def mv(mnt: Path) -> None:
            r = subprocess.run(["mv", str(mnt / src), str(mnt / dst)], capture_output=True, timeout=3600)
            check(r.returncode == 0, f"mv failed: {r.stderr[-500:]!r}")
        out["mount"] = self._mount_write("mv_dir", mv)
        check(self._count(f"{dst}/") == n and self._count(f"{src}/") == 0, "mount: mv moved every object")
        check(self.crypto.get_object(f"{dst}/f00000").read() == self._small(0), "mount: moved object decrypts")
        for sysname, bucket in (("crypto_bucket", self.crypto), ("plain_bucket", self.plain)):
            letter = "b" if sysname == "crypto_bucket" else "c"
            old, new = f"mv-{letter}-{run}/", f"mv-{letter}-{run}-moved/"
            self._seed_dir(bucket, old, n)

            def loop(bucket: Any = bucket, old: str = old, new: str = new) -> None:
                import oss2
                keys = [o.key for o in oss2.ObjectIterator(bucket, prefix=old)]
                for k in keys:
                    bucket.copy_object(BUCKET, k, new + k[len(old):])
                for i in range(0, len(keys), 1000):
                    bucket.batch_delete_objects(keys[i:i + 1000])
            s, d, _ = self.timed(loop)
            out[sysname] = {"seconds": s, **d}
            check(self._count(new) == n and self._count(old) == 0, f"{sysname}: moved every object")
        for r in out.values():
            r["files"] = n
            r["rate"] = n / r["seconds"]
        return out

    # -- chmod of a large file: a metadata change --
    def _mode_in_bucket(self, key: str) -> int | None:
        v = self.plain.head_object(key).headers.get("x-oss-meta-mode")
        return stat.S_IMODE(int(v)) if v else None

    def _wait_mode(self, key: str, mode: int, timeout: float = 3600) -> int:
        """Poll HEAD until the object's ``x-oss-meta-mode`` has the permission bits ``mode``;
        returns the number of HEADs sent."""
        polls = 0
        deadline = time.monotonic() + timeout
        while True:
            polls += 1
            if self._mode_in_bucket(key) == mode:
                return polls
            check(time.monotonic() < deadline, f"{key}: mode {mode:o} not in the bucket after {timeout:g} s")
            time.sleep(CHMOD_POLL)

    @staticmethod
    def _minus_polls(delta: dict[str, Any], polls: int) -> dict[str, Any]:
        """The counter delta without the HEADs this script sent to see the result."""
        reqs = dict(delta["requests"])
        reqs["HeadObject"] = reqs.get("HeadObject", 0) - polls
        reqs = {k: v for k, v in reqs.items() if v}
        return {**delta, "requests": reqs, "total_requests": sum(reqs.values()), "bench_head_polls": polls}

    def _check_cse_object(self, key: str, what: str) -> None:
        """The object still decrypts with the SDK (first and last MiB), untimed."""
        size = self.args.chmod_size
        for start in (0, max(0, size - CHUNK)):
            end = min(start + CHUNK, size) - 1
            data = self.crypto.get_object(key, byte_range=(start, end)).read()
            check(data == self.pattern.at(start, end - start + 1), f"{what}: content at {start} after chmod")

    def chmod_large(self, run: int) -> dict[str, dict[str, Any]]:
        size = self.args.chmod_size
        out: dict[str, dict[str, Any]] = {}
        key = f"chmod-a-{run}.bin"
        m = self.mount("chmod_large")
        path = m.path / key
        t0 = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for off in range(0, size, CHUNK):
                os.write(fd, self.pattern.at(off, min(CHUNK, size - off)))
            os.fsync(fd)
        finally:
            os.close(fd)
        while self.plain.head_object(key).content_length != size:   # in the bucket (fsync said so)
            time.sleep(CHMOD_POLL)
        start_mode = self._mode_in_bucket(key)
        check(start_mode not in (None, 0o600, 0o640), f"mount: initial mode {start_mode}")
        log(f"chmod_large: {human(size)} written through the mount in {time.perf_counter() - t0:.1f} s")

        # (a) chmod, then HEAD until the new mode is in the bucket
        before = self.emu.stats()
        t0 = time.perf_counter()
        os.chmod(path, 0o600)
        returned = time.perf_counter() - t0
        polls = self._wait_mode(key, 0o600)
        seconds = time.perf_counter() - t0
        out["mount"] = {"seconds": seconds, "seconds_until_chmod_returned": returned,
                        **self._minus_polls(stats_delta(before, self.emu.stats()), polls)}
        # (a') chmod + fsync on the same mount
        before = self.emu.stats()
        t0 = time.perf_counter()
        os.chmod(path, 0o640)
        returned = time.perf_counter() - t0
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        seconds = time.perf_counter() - t0
        polls = self._wait_mode(key, 0o640, timeout=60)
        out["mount_fsync"] = {"seconds": seconds, "seconds_until_chmod_returned": returned,
                              "head_polls_after_fsync": polls,
                              **self._minus_polls(stats_delta(before, self.emu.stats()), polls)}
        before = self.emu.stats()
        self.unmount(m)
        out["mount"]["requests_at_unmount"] = stats_delta(before, self.emu.stats())["requests"]
        self._check_cse_object(key, "mount")

        # (b) a CryptoBucket user: the stored bytes, streamed back with the new headers
        key = f"chmod-b-{run}.bin"

        def reupload() -> None:
            src = self.plain.get_object(key)
            headers = {k: v for k, v in src.headers.items()
                       if k.lower().startswith("x-oss-meta-") or k.lower() == "content-type"}
            headers = {k: v for k, v in headers.items() if k.lower() != "x-oss-meta-mode"}
            headers["x-oss-meta-mode"] = str(stat.S_IFREG | 0o600)
            self.plain.put_object(key, _Sized(src, src.content_length), headers=headers)
        s, d, _ = self.timed(reupload)
        out["crypto_bucket"] = {"seconds": s, **d}
        check(self._mode_in_bucket(key) == 0o600, "crypto_bucket: new mode")
        self._check_cse_object(key, "crypto_bucket")

        # (c) an unencrypted object: CopyObject onto itself, REPLACE
        key = f"chmod-c-{run}.bin"

        def copy() -> None:
            self.plain.copy_object(BUCKET, key, key, headers={
                "x-oss-metadata-directive": "REPLACE", "x-oss-meta-mode": str(stat.S_IFREG | 0o600)})
        s, d, _ = self.timed(copy)
        out["plain_bucket"] = {"seconds": s, **d}
        check(self._mode_in_bucket(key) == 0o600, "plain_bucket: new mode")
        for r in out.values():
            r["bytes"] = size
            r["rate"] = 1 / r["seconds"]
            r["bytes_moved"] = r["bytes_from_oss"] + r["bytes_to_oss"]
        return out

    # -- KMS --
    def _kms_calls(self) -> dict[str, int]:
        return dict(self.kms.calls)

    def _kms_delta(self, before: dict[str, int]) -> dict[str, int]:
        now = self._kms_calls()
        return {k: now.get(k, 0) - before.get(k, 0) for k in now if now.get(k, 0) - before.get(k, 0)}

    def kms_workload(self, run: int) -> dict[str, dict[str, Any]]:
        n = self.args.kms_objects
        out: dict[str, dict[str, Any]] = {}
        # (a) write through a KMS-keyed mount, then open each object twice in a fresh one
        m = self.mount("kms_write", kms=True)
        d = m.path / f"kms-a-{run}"
        d.mkdir()
        k0 = self._kms_calls()
        before = self.emu.stats()
        t0 = time.perf_counter()
        for i in range(n):
            with open(d / f"k{i:04d}", "wb") as f:
                f.write(self._small(i))
        self.unmount(m)
        t_write = time.perf_counter() - t0
        kw = self._kms_delta(k0)
        m = self.mount("kms_open", kms=True)
        d = m.path / f"kms-a-{run}"

        def read_all() -> None:
            for i in range(n):
                with open(d / f"k{i:04d}", "rb") as f:
                    check(f.read() == self._small(i), f"mount kms object {i}")
        k1 = self._kms_calls()
        t0 = time.perf_counter()
        read_all()
        t_open = time.perf_counter() - t0
        ko = self._kms_delta(k1)
        dropped = drop_page_cache()
        k2 = self._kms_calls()
        t0 = time.perf_counter()
        read_all()
        t_reopen = time.perf_counter() - t0
        kr = self._kms_delta(k2)
        delta = stats_delta(before, self.emu.stats())
        self.unmount(m)
        out["mount"] = {"seconds": t_write + t_open + t_reopen, "seconds_write": t_write, "seconds_open": t_open,
                        "seconds_reopen": t_reopen, "page_cache_dropped_before_reopen": dropped,
                        "kms_calls_write": kw, "kms_calls_open": ko, "kms_calls_reopen": kr, **delta}
        # (b) CryptoBucket + AliKMSProvider; (c) plain bucket (no KMS at all)
        for sysname, bucket, prefix in (("crypto_bucket", self.crypto_kms, f"kms-b-{run}/"),
                                        ("plain_bucket", self.plain, f"kms-c-{run}/")):
            before = self.emu.stats()
            k0 = self._kms_calls()
            t0 = time.perf_counter()
            for i in range(n):
                bucket.put_object(f"{prefix}k{i:04d}", self._small(i))
            t_write = time.perf_counter() - t0
            kw = self._kms_delta(k0)
            times, calls = [], []
            for _ in range(2):
                k1 = self._kms_calls()
                t0 = time.perf_counter()
                for i in range(n):
                    check(bucket.get_object(f"{prefix}k{i:04d}").read() == self._small(i), f"{sysname} kms {i}")
                times.append(time.perf_counter() - t0)
                calls.append(self._kms_delta(k1))
            out[sysname] = {"seconds": t_write + sum(times), "seconds_write": t_write, "seconds_open": times[0],
                            "seconds_reopen": times[1], "kms_calls_write": kw, "kms_calls_open": calls[0],
                            "kms_calls_reopen": calls[1], **stats_delta(before, self.emu.stats())}
        for r in out.values():
            r["objects"] = n
            r["rate"] = 3 * n / r["seconds"]
            for phase in ("write", "open", "reopen"):
                r[f"kms_calls_per_object_{phase}"] = sum(r[f"kms_calls_{phase}"].values()) / n
        return out

    def cleanup_run(self, run: int) -> None:
        """Delete the big objects of a run (untimed) so repeated runs do not fill the disk."""
        for key in (f"{w}-{x}-{run}.bin" for w in ("seq", "chmod") for x in "abc"):
            try:
                self.plain.delete_object(key)
            except Exception:  # noqa: BLE001 - best effort
                pass

    def run_once(self, run: int) -> dict[str, dict[str, dict[str, Any]]]:
        res: dict[str, dict[str, dict[str, Any]]] = {}
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("seq_write", lambda: self.seq_write(run)),
            ("seq_read", lambda: self.seq_read(run)),
            ("random_read_4k", lambda: self.random_read_4k(run)),
            ("small_create", lambda: self.small_create(run)),
        ]
        want = set(self.args.only)
        for name, fn in steps:
            if name in want:
                log(f"run {run + 1}: {name}")
                res[name] = fn()
        if want & {"small_read", "ls_l"}:
            log(f"run {run + 1}: small_read + ls_l")
            res["small_read"], res["ls_l"] = self.small_read_and_ls(run)
        if "cp_a" in want:
            log(f"run {run + 1}: cp_a")
            res["cp_a"] = self.cp_a(run)
        if "mv_dir" in want:
            log(f"run {run + 1}: mv_dir")
            res["mv_dir"] = self.mv_dir(run)
        if "kms" in want:
            log(f"run {run + 1}: kms")
            res["kms"] = self.kms_workload(run)
        if "chmod_large" in want:
            log(f"run {run + 1}: chmod_large")
            res["chmod_large"] = self.chmod_large(run)
        self.cleanup_run(run)
        return res


# ---- set-up of inputs ----------------------------------------------------------------------------
def make_rsa_key(workdir: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = workdir / "bench_rsa_private.pem"
    pub = workdir / "bench_rsa_public.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    priv.chmod(0o600)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def make_source_tree(root: Path, n: int) -> Path:
    """A source tree of ``n`` files over nested directories, sizes like a code base (mostly small,
    a few larger); synthetic random content."""
    rnd = random.Random(42)
    src = root / "src-tree"
    src.mkdir()
    per_dir = 50
    for i in range(n):
        d = src / f"d{i // (per_dir * 10):02d}" / f"s{(i // per_dir) % 10:02d}"
        d.mkdir(parents=True, exist_ok=True)
        x = rnd.random()
        size = rnd.randint(200, 4096) if x < 0.6 else rnd.randint(4096, 32768) if x < 0.9 else rnd.randint(32768, 262144)
        (d / f"file{i:05d}.dat").write_bytes(rnd.randbytes(size))
    return src


# ---- results -------------------------------------------------------------------------------------
def median_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose time is the median (lower middle for even counts), with all run times kept."""
    order = sorted(range(len(records)), key=lambda i: records[i]["seconds"])
    rec = dict(records[order[(len(order) - 1) // 2]])
    rec["seconds_runs"] = [r["seconds"] for r in records]
    rec["seconds"] = statistics.median(rec["seconds_runs"])
    mid = records[order[(len(order) - 1) // 2]]
    if mid["seconds"] and "rate" in mid:
        rec["rate"] = mid["rate"] * mid["seconds"] / rec["seconds"]
    return rec


def summarize(runs: list[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for w in (w for w in WORKLOADS if w in runs[0]):
        systems = {s: median_record([r[w][s] for r in runs]) for s in SYSTEMS}
        entry: dict[str, Any] = {"unit": UNITS[w], "systems": systems}
        a = systems["mount"]["rate"]
        entry["ratio_vs_crypto_bucket"] = a / systems["crypto_bucket"]["rate"]
        entry["ratio_vs_plain_bucket"] = a / systems["plain_bucket"]["rate"]
        for v in (k for k in runs[0][w] if k not in SYSTEMS):
            rec = median_record([r[w][v] for r in runs])
            rec["ratio_vs_crypto_bucket"] = rec["rate"] / systems["crypto_bucket"]["rate"]
            rec["ratio_vs_plain_bucket"] = rec["rate"] / systems["plain_bucket"]["rate"]
            entry.setdefault("variants", {})[v] = rec
        out[w] = entry
    return out


def fmt_rate(x: float) -> str:
    return f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"


def print_table(profile: str, faults: dict[str, float], res: dict[str, Any], args: argparse.Namespace) -> None:
    bw = f"{faults['bandwidth_mbps']:g} Mbit/s per connection" if faults["bandwidth_mbps"] else "unlimited"
    print()
    print(f"== profile {profile}: latency {faults['latency_ms']:g} ms, bandwidth {bw}; "
          f"median of {args.runs} run(s); MB = 10^6 bytes")
    print("   (a) mount  (b) oss2 CryptoBucket  (c) oss2 Bucket; x(b), x(c) = rate of (a) / rate of (b), (c)")
    labels = {"seq_write": f"seq write {human(args.size)}", "seq_read": f"seq read {human(args.size)}",
              "random_read_4k": f"4 KiB random reads x{args.random_reads}",
              "small_create": f"create {args.files} x 4 KiB", "small_read": f"read {args.files} x 4 KiB",
              "ls_l": f"ls -l {args.ls_entries} entries", "cp_a": f"cp -a {args.tree_files} files",
              "mv_dir": f"mv dir of {args.mv_files} files",
              "kms": f"KMS: {args.kms_objects} put+get+get", "chmod_large": f"chmod of {human(args.chmod_size)}"}
    head = f"{'workload':<28}{'unit':<10}{'(a) mount':>12}{'(b) crypto':>12}{'(c) plain':>12}" \
           f"{'x(b)':>8}{'x(c)':>8}  {'requests a/b/c':<18}{'secs a/b/c'}"
    print(head)
    print("-" * len(head))
    for w in (w for w in WORKLOADS if w in res):
        e = res[w]
        s = e["systems"]
        reqs = "/".join(str(s[x]["total_requests"]) for x in SYSTEMS)
        secs = "/".join(f"{s[x]['seconds']:.2f}" for x in SYSTEMS)
        print(f"{labels[w]:<28}{e['unit']:<10}" + "".join(f"{fmt_rate(s[x]['rate']):>12}" for x in SYSTEMS)
              + f"{e['ratio_vs_crypto_bucket']:>8.2f}{e['ratio_vs_plain_bucket']:>8.2f}  {reqs:<18}{secs}")
        for v, rec in e.get("variants", {}).items():
            label = "  (a) --write-back " + f"{args.write_back:g}" if v == "mount_write_back" \
                else "  (a) " + v.removeprefix("mount_").replace("_", " ")
            closed = f" (closed after {rec['seconds_until_closed']:.2f})" if "seconds_until_closed" in rec else ""
            print(f"{label:<28}{e['unit']:<10}{fmt_rate(rec['rate']):>12}{'':>24}"
                  f"{rec['ratio_vs_crypto_bucket']:>8.2f}{rec['ratio_vs_plain_bucket']:>8.2f}  "
                  f"{rec['total_requests']:<18}{rec['seconds']:.2f}{closed}")
    s = {w: res[w]["systems"] for w in WORKLOADS if w in res}
    print()
    if "seq_write" in s:
        sw = s["seq_write"]["mount"]
        line = (f"  seq write (a): close returned after {sw['seconds_until_closed']:.2f} s, in the bucket after "
                f"{sw['seconds']:.2f} s; peak RSS of the mount process {human(sw['peak_rss_bytes'])}")
        if "seq_read" in s:
            line += f" (during the read: {human(s['seq_read']['mount']['peak_rss_bytes'])})"
        print(line)
    if "seq_read" in s:
        print("  seq read bytes fetched per byte read: " + ", ".join(
            f"{x} {s['seq_read'][x]['bytes_from_oss_per_byte_read']:.2f}" for x in SYSTEMS))
    if "random_read_4k" in s:
        print("  4 KiB random reads, bytes fetched per byte read: " + ", ".join(
            f"{x} {s['random_read_4k'][x]['bytes_from_oss_per_byte_read']:.1f} "
            f"({human(s['random_read_4k'][x]['bytes_from_oss_per_read'])}/read)" for x in SYSTEMS))
    if "ls_l" in s:
        lm = s["ls_l"]["mount"]
        print(f"  ls -l: listing requests alone (oss2 list_objects pages): {lm['listing_requests_seconds']:.2f} s, "
              f"{s['ls_l']['plain_bucket']['total_requests']} requests")
        for name, rec in (("cold", lm), *((v.removeprefix("mount_"), r) for v, r in
                                          res["ls_l"].get("variants", {}).items())):
            print(f"  ls -l (a) {name}: {rec['seconds']:.2f} s = {rec['time_vs_listing_requests']:.2f}x the listing, "
                  f"{rec['total_requests']} requests {rec['requests']}")
    if "small_create" in s:
        print(f"  small create (a): close of the last file after "
              f"{s['small_create']['mount']['seconds_until_closed']:.2f} s, all in the bucket after "
              f"{s['small_create']['mount']['seconds']:.2f} s")
    if "cp_a" in s:
        print(f"  cp -a (a): cp returned after {s['cp_a']['mount']['seconds_until_closed']:.2f} s")
        for name, rec in (*s["cp_a"].items(), *res["cp_a"].get("variants", {}).items()):
            per = rec["requests_per_file"]
            print(f"  cp -a requests per file, {name}: " + ", ".join(
                f"{short} {per.get(op, 0):.2f}" for short, op in PER_FILE_OPS) + f" (all: {per})")
    if "chmod_large" in s:
        for name, rec in (*s["chmod_large"].items(), *res["chmod_large"].get("variants", {}).items()):
            extra = f", chmod returned after {rec['seconds_until_chmod_returned']:.2f} s" \
                if "seconds_until_chmod_returned" in rec else ""
            print(f"  chmod {name}: {rec['seconds']:.2f} s{extra}; moved {human(rec['bytes_moved'])} "
                  f"(from OSS {human(rec['bytes_from_oss'])}, to OSS {human(rec['bytes_to_oss'])}); "
                  f"{rec['total_requests']} requests {rec['requests']}")
    if "kms" in s:
        for x in ("mount", "crypto_bucket"):
            k = s["kms"][x]
            print(f"  KMS calls per object, {x}: written {k['kms_calls_per_object_write']:.2f} "
                  f"{k['kms_calls_write']}, first open {k['kms_calls_per_object_open']:.2f} {k['kms_calls_open']}, "
                  f"reopened {k['kms_calls_per_object_reopen']:.2f} {k['kms_calls_reopen']}")


# ---- main ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=("loopback", "cloud", "both"), default="both")
    p.add_argument("--size", type=parse_size, default=1 << 30, help="sequential file size (default 1GiB)")
    p.add_argument("--files", type=int, default=2000, help="number of 4 KiB files (default 2000)")
    p.add_argument("--ls-entries", type=int, default=10000, help="entries of the ls -l directory (default 10000)")
    p.add_argument("--tree-files", type=int, default=3000, help="files in the cp -a source tree (default 3000)")
    p.add_argument("--mv-files", type=int, default=200, help="files in the directory mv_dir renames (default 200)")
    p.add_argument("--random-reads", type=int, default=500, help="number of 4 KiB random reads (default 500)")
    p.add_argument("--kms-objects", type=int, default=50, help="objects for the KMS call count (default 50)")
    p.add_argument("--chmod-size", type=parse_size, default=256 << 20,
                   help="size of the chmod_large file (default 256MiB)")
    p.add_argument("--runs", type=int, default=3, help="runs per profile; figures are medians (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and one run, only to prove the script works (overrides the sizes)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    p.add_argument("--workdir", metavar="DIR", help="scratch directory (default: a new one under $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (logs) afterwards")
    p.add_argument("--mount-option", action="append", default=[], metavar="ARG",
                   help="extra argument passed to `ossencfs mount` (repeatable), e.g. --mount-option=--connections=32")
    p.add_argument("--py-spy", metavar="BIN", help="record every mount process with this py-spy binary "
                   "(collapsed stacks, one file per mount, in --py-spy-dir); slows the mount down")
    p.add_argument("--py-spy-dir", metavar="DIR", help="where py-spy profiles go (default: the scratch directory)")
    p.add_argument("--write-back", type=float, default=1.0, metavar="SECONDS",
                   help="also run the small-file and cp -a writes on a mount with --write-back SECONDS "
                        "(0 = skip; default 1)")
    p.add_argument("--only", metavar="W[,W...]", default=",".join(WORKLOADS),
                   help="run only these workloads (and what they need: reads need the writes); "
                        f"default all: {','.join(WORKLOADS)}")
    bench_scale.add_options(p, parse_size)
    args = p.parse_args(argv)
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    if only - set(WORKLOADS):
        p.error(f"unknown workload(s): {', '.join(sorted(only - set(WORKLOADS)))}")
    bench_scale.selected(args)          # an unknown --scale-only name: before any set-up
    if only & {"seq_read", "random_read_4k"}:
        only.add("seq_write")
    if only & {"small_read", "ls_l"}:
        only |= {"small_create", "small_read", "ls_l"}
    args.only = [w for w in WORKLOADS if w in only]
    if args.quick:
        args.size, args.files, args.ls_entries, args.tree_files, args.mv_files = 3 << 20, 20, 300, 40, 20
        args.random_reads, args.kms_objects, args.runs, args.chmod_size = 20, 3, 1, 8 << 20
        args.scale_entries, args.scale_dirs, args.scale_per_dir = 300, 5, 20
        args.scale_file_size, args.scale_parallel_size = 16 << 20, 2 << 20
    if args.runs < 1 or args.size < SMALL or args.chmod_size < 1 or args.files < 1 or args.ls_entries < 1 or args.tree_files < 1 \
            or args.mv_files < 1:
        p.error("sizes and counts must be positive (size >= 4096)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in _PROXY_VARS:                 # loopback servers: never through a proxy
        os.environ.pop(name, None)
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
        print("bench.py: needs root, /dev/fuse and fusermount3 (it mounts for real)", file=sys.stderr)
        return 2
    profiles = ["loopback", "cloud"] if args.profile == "both" else [args.profile]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ossencfs-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc)
    report: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"), "command": [os.path.basename(sys.argv[0]), *(argv or sys.argv[1:])],
        "machine": machine_info(),
        "parameters": {"size": args.size, "files": args.files, "ls_entries": args.ls_entries,
                       "tree_files": args.tree_files, "mv_files": args.mv_files, "random_reads": args.random_reads,
                       "chmod_size": args.chmod_size,
                       "kms_objects": args.kms_objects, "runs": args.runs, "quick": args.quick,
                       "workloads": args.only, "write_back": args.write_back,
                       "mount_options": args.mount_option},
        "systems": {"mount": "ossencfs FUSE mount, separate process, default options",
                    "crypto_bucket": "oss2.CryptoBucket (RsaProvider; AliKMSProvider for kms), single stream",
                    "plain_bucket": "oss2.Bucket, no encryption, single stream"},
        "notes": ["rates: MB/s = 10^6 bytes/s; ratio_vs_* = rate(mount) / rate(other)",
                  "mount write figures stop the clock when the mount process has exited after fusermount3 -u "
                  "(everything uploaded); seconds_until_closed is when the writer's close returned",
                  "emulator runs in its own process with --no-fsync; reads through the mount use a fresh mount "
                  "with an empty cache directory"],
        "profiles": {},
    }
    pattern = Pattern()
    key_pem, pub_pem = make_rsa_key(workdir)
    src = make_source_tree(workdir, args.tree_files if "cp_a" in args.only else 0)
    bench = Bench(args, workdir, pattern, key_pem, pub_pem, src)
    try:
        for profile in profiles:
            log(f"profile {profile}: starting emulator and seeding")
            probe = {"before": cpu_probe()}
            bench.setup_profile(profile)
            try:
                runs = [bench.run_once(r) for r in range(args.runs)] if args.only else []
                scale = bench_scale.run(bench, sys.modules[__name__]) if args.scale else None
            except BaseException:
                logs = sorted(workdir.glob("mount-*.log"))
                if logs:
                    log(f"failed; tail of {logs[-1].name}:\n{logs[-1].read_text(errors='replace')[-3000:]}")
                raise
            finally:
                bench.teardown_profile()
            res = summarize(runs) if runs else {}
            probe["after"] = cpu_probe()
            report["profiles"][profile] = {"faults": PROFILES[profile], "cpu_probe": probe, "workloads": res}
            print_table(profile, PROFILES[profile], res, args)
            print("  CPU probe (python loop s / AES-CTR MB/s), before and after: " + ", ".join(
                f"{x['python_loop_seconds']:.2f} / {x['aes_ctr_mb_per_s']}" for x in probe.values()))
            if scale is not None:
                report["profiles"][profile]["scale"] = scale
                bench_scale.print_summary(scale)
            if args.json:                      # write after every profile: a later failure keeps this one
                report["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
                Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=False))
        if args.json:
            print(f"\nJSON written to {args.json}")
    finally:
        bench.teardown_profile()
        if args.keep:
            log(f"scratch directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
