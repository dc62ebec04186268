"""Several processes change one directory at once: no EIO, and the tree ends as each believes.

The issue's parallel stress runs hit EIO hundreds of times (a stale sorted-name cache of a
listing) and lost just-closed files from listings. Here 4 processes, each a seeded random
walk of create/overwrite, rename (also over an existing file), unlink, stat, read and listdir
in ONE directory of the mount, with listings and attributes expiring every 0.5 s so that
listings are fetched again all the time while the others change the directory. Each process
keeps a model of its own names (``p<i>-*``): every listdir must show exactly those of its
names it believes exist, every stat and read must agree with it, and no call may fail
other than with ENOENT for another process's name. At the end (and after a remount) the
directory holds exactly the union of the models, with their contents.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.mount

PROCS = 4
SECONDS = float(os.environ.get("OSSENCFS_STRESS_SECONDS", "12"))   # longer runs by hand

WORKER = r'''
import errno, hashlib, json, os, random, sys, time
d, me, seed, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rnd = random.Random(seed)
mine = [f"p{me}-{i:02d}" for i in range(10)]
model = {}                                   # name -> content, as this process believes
errors, counts = [], {}

def fail(op, name, exc):
    errors.append(f"{op} {name}: {exc!r}")

end = time.monotonic() + seconds
while time.monotonic() < end and len(errors) < 20:
    op = rnd.choices(["write", "rename", "unlink", "stat", "read", "list", "other"],
                     [5, 3, 2, 4, 2, 2, 2])[0]
    counts[op] = counts.get(op, 0) + 1
    name = rnd.choice(mine)
    path = os.path.join(d, name)
    try:
        if op == "write":
            data = rnd.randbytes(rnd.choice([0, 1, 100, 5000, 70000]))
            with open(path, "wb") as f:
                f.write(data)
            model[name] = data
        elif op == "rename":
            if not model:
                continue
            src = rnd.choice(sorted(model))
            os.rename(os.path.join(d, src), path)
            if src != name:
                model[name] = model.pop(src)
        elif op == "unlink":
            try:
                os.unlink(path)
                if name not in model:
                    fail(op, name, "unlinked a file believed gone")
            except FileNotFoundError:
                if name in model:
                    fail(op, name, "ENOENT for a file believed to exist")
            model.pop(name, None)
        elif op == "stat":
            try:
                st = os.stat(path)
                if name not in model:
                    fail(op, name, "exists though believed gone")
                elif st.st_size != len(model[name]):
                    fail(op, name, f"size {st.st_size} != {len(model[name])}")
            except FileNotFoundError:
                if name in model:
                    fail(op, name, "ENOENT for a file believed to exist")
        elif op == "read":
            if name in model:
                with open(path, "rb") as f:
                    got = f.read()
                if got != model[name]:
                    fail(op, name, f"content differs ({len(got)} bytes, want {len(model[name])})")
        elif op == "list":
            shown = {n for n in os.listdir(d) if n.startswith(f"p{me}-")}
            if shown != set(model):
                fail(op, d, f"listed {sorted(shown ^ set(model))} wrongly")
        else:                                  # another process's name: any answer but EIO
            other = f"p{rnd.choice([i for i in range({procs}) if i != me])}-{rnd.randrange(10):02d}"
            try:
                os.stat(os.path.join(d, other))
            except FileNotFoundError:
                pass
    except OSError as exc:
        fail(op, name, exc)
json.dump({"model": {n: hashlib.sha256(v).hexdigest() for n, v in model.items()},
           "errors": errors, "counts": counts}, sys.stdout)
'''


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("write_back", [0, 0.3],
                         ids=["upload-at-close", "write-back"])
def test_parallel_processes_in_one_directory(make_mount, tmp_path, write_back):
    """``write-back``: uploads land in the background, also while listings are fetched."""
    m = make_mount("s", extra=["-o", "attr_timeout=0.5",
                               *(["--write-back", str(write_back)] if write_back else [])])
    d = m.path / "shared"
    d.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace("{procs}", str(PROCS)))
    procs = [subprocess.Popen([sys.executable, str(script), str(d), str(i), str(1000 + i),
                               str(SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(PROCS)]
    results = []
    deadline = time.monotonic() + SECONDS + 60
    for p in procs:
        out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert p.returncode == 0, err.decode(errors="replace")
        results.append(json.loads(out))
    errors = [f"p{i}: {e}" for i, r in enumerate(results) for e in r["errors"]]
    assert not errors, "\n".join(errors) + f"\n--- mount log ---\n{m.log()}"
    assert all(sum(r["counts"].values()) > 50 for r in results), [r["counts"] for r in results]
    want = {n: h for r in results for n, h in r["model"].items()}

    def check() -> None:
        assert sorted(os.listdir(d)) == sorted(want)
        assert {n: _digest(d / n) for n in want} == want
    check()
    m.remount()                                # from the bucket alone
    check()
