"""Random operation sequences on the mount and on a local directory must agree."""
from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

pytestmark = pytest.mark.mount

NAMES = ["a", "b", "d1/a", "d1/c", "d2/x", "d1/sub/y"]
DIRS = ["d1", "d2", "d1/sub"]
_counter = itertools.count()


def _outcome(fn):
    try:
        return ("ok", fn())
    except OSError as exc:
        return ("err", exc.errno)


def _state(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st_.st_mode), st_.st_size, p.read_bytes())
    return out


def test_random_operations_match_local_dir(mount, tmp_path):
    local_base = tmp_path / "local"
    local_base.mkdir()

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            n = next(_counter)
            self.roots = [mount.path / f"run{n}", local_base / f"run{n}"]
            for r in self.roots:
                r.mkdir()
                (r / "d1").mkdir()          # most names live in existing directories
                (r / "d2").mkdir()
                (r / "a").write_bytes(b"initial a")
            self.handles: list[tuple] = []

        def both(self, fn):
            results = [_outcome(lambda r=r: fn(r)) for r in self.roots]
            assert results[0] == results[1], results
            return results[0]

        @rule(name=st.sampled_from(NAMES), data=st.binary(max_size=3000))
        def write_file(self, name, data):
            self.both(lambda r: (r / name).write_bytes(data))

        @rule(name=st.sampled_from(NAMES), off=st.integers(0, 5000), data=st.binary(min_size=1, max_size=2000))
        def pwrite(self, name, off, data):
            def op(r):
                with open(r / name, "r+b") as f:
                    f.seek(off)
                    f.write(data)
            self.both(op)

        @rule(name=st.sampled_from(NAMES), size=st.integers(0, 6000))
        def truncate(self, name, size):
            self.both(lambda r: os.truncate(r / name, size))

        @rule(name=st.sampled_from(NAMES), off=st.integers(0, 6000), n=st.integers(0, 3000))
        def read_range(self, name, off, n):
            def op(r):
                with open(r / name, "rb") as f:
                    f.seek(off)
                    return f.read(n)
            self.both(op)

        @rule(d=st.sampled_from(DIRS))
        def mkdir(self, d):
            self.both(lambda r: os.mkdir(r / d))

        @rule(d=st.sampled_from(DIRS))
        def rmdir(self, d):
            self.both(lambda r: os.rmdir(r / d))

        @rule(name=st.sampled_from(NAMES))
        def unlink(self, name):
            self.both(lambda r: os.unlink(r / name))

        @rule(src=st.sampled_from(NAMES + DIRS), dst=st.sampled_from(NAMES + DIRS))
        def rename(self, src, dst):
            self.both(lambda r: os.rename(r / src, r / dst))

        @rule(name=st.sampled_from(NAMES), link_to=st.sampled_from(["a", "../b", "nowhere"]))
        def symlink(self, name, link_to):
            self.both(lambda r: os.symlink(link_to, r / name))

        @rule(name=st.sampled_from(NAMES), mode=st.sampled_from([0o600, 0o644, 0o755, 0o700]))
        def chmod(self, name, mode):
            self.both(lambda r: os.chmod(r / name, mode, follow_symlinks=False)
                      if not os.path.islink(r / name) else None)

        # open handles that live across other operations (the handle follows the file
        # through renames; after an unlink it still works on the unlinked file)
        @rule(name=st.sampled_from(NAMES))
        def open_handle(self, name):
            if len(self.handles) >= 2:
                return
            res = [_outcome(lambda r=r: open(r / name, "r+b", buffering=0)) for r in self.roots]
            kinds = [k for k, _ in res]
            if kinds == ["ok", "ok"]:
                self.handles.append((res[0][1], res[1][1]))
            else:
                for k, v in res:
                    if k == "ok":
                        v.close()
                assert res[0][0] == res[1][0] and res[0][1] == res[1][1], res

        @rule(i=st.integers(0, 1), off=st.integers(0, 5000), data=st.binary(min_size=1, max_size=1500))
        def handle_write(self, i, off, data):
            if i < len(self.handles):
                for f in self.handles[i]:
                    f.seek(off)
                    f.write(data)

        @rule(i=st.integers(0, 1), off=st.integers(0, 6000), n=st.integers(0, 3000))
        def handle_read(self, i, off, n):
            if i < len(self.handles):
                out = []
                for f in self.handles[i]:
                    f.seek(off)
                    out.append(f.read(n))
                assert out[0] == out[1]

        @rule(i=st.integers(0, 1))
        def close_handle(self, i):
            if i < len(self.handles):
                for f in self.handles.pop(i):
                    f.close()

        def teardown(self):
            for pair in self.handles:
                for f in pair:
                    f.close()

        @invariant()
        def same_tree(self):
            assert _state(self.roots[0]) == _state(self.roots[1])

    run_state_machine_as_test(Machine, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))
    # everything also survives a remount (state in the bucket, not in memory)
    before = _state(mount.path)
    mount.remount()
    assert _state(mount.path) == before
