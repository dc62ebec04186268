"""Concurrent readers and writers through one mount."""
from __future__ import annotations

import os
import random
import subprocess
import threading

import pytest

pytestmark = [pytest.mark.mount, pytest.mark.write_modes()]


def test_concurrent_readers_and_writers(mount, crypto_bucket):
    shared = os.urandom(2 * 1024 * 1024 + 999)
    (mount.path / "shared.bin").write_bytes(shared)
    errors: list[BaseException] = []
    written: dict[str, bytes] = {}

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            with open(mount.path / "shared.bin", "rb") as f:
                for _ in range(60):
                    off = rnd.randrange(len(shared))
                    n = rnd.randrange(1, 200_000)
                    f.seek(off)
                    assert f.read(n) == shared[off:off + n]
        except BaseException as exc:
            errors.append(exc)

    def writer(i: int) -> None:
        rnd = random.Random(100 + i)
        data = bytearray()
        try:
            with open(mount.path / f"w{i}.bin", "wb") as f:
                for _ in range(30):
                    chunk = rnd.randbytes(rnd.randrange(1, 70_000))
                    f.write(chunk)
                    data += chunk
            written[f"w{i}.bin"] = bytes(data)
        except BaseException as exc:
            errors.append(exc)

    # two writers on disjoint halves of one file, through separate descriptors
    (mount.path / "halves.bin").write_bytes(bytes(400_000))
    halves = [os.urandom(200_000), os.urandom(200_000)]

    def half(i: int) -> None:
        try:
            with open(mount.path / "halves.bin", "r+b") as f:
                for k in range(0, 200_000, 10_000):
                    f.seek(i * 200_000 + k)
                    f.write(halves[i][k:k + 10_000])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    threads += [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=half, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    mount.settle()
    for name, data in written.items():
        assert (mount.path / name).read_bytes() == data
        assert crypto_bucket.get_object(name).read() == data
    assert (mount.path / "halves.bin").read_bytes() == halves[0] + halves[1]
    assert crypto_bucket.get_object("halves.bin").read() == halves[0] + halves[1]


def test_parallel_processes_tree_copy(mount, tmp_path):
    """Several cp processes at once into one directory (parallel lookups/creates)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(24):
        (src / f"f{i:02d}").write_bytes(os.urandom(random.randrange(1, 300_000)))
    os.mkdir(mount.path / "dst")
    procs = [subprocess.Popen(["cp", *[str(src / f"f{i:02d}") for i in range(k, 24, 4)],
                               str(mount.path / "dst")]) for k in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert sorted(os.listdir(mount.path / "dst")) == sorted(os.listdir(src))
    for name in os.listdir(src):
        assert (mount.path / "dst" / name).read_bytes() == (src / name).read_bytes()
