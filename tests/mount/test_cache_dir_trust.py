"""The cache directory must be the mount user's own (issue 13 item 5): directories another user
created or can write are refused with one clear error, symlinks planted there are never
followed, and everything the mount makes is 0700 (directories) / 0600 (files)."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.mount.conftest import ROOT

pytestmark = pytest.mark.mount

NOBODY = 65534


def _refused(m, cache_dir: Path) -> str:
    """Start the mount (daemon mode, as users run it): it must fail at once; its stderr."""
    r = subprocess.run(m.argv(foreground=False), capture_output=True, env=m.env, cwd=str(ROOT), timeout=60)
    assert r.returncode != 0
    err = r.stderr.decode(errors="replace").strip()
    assert len(err.splitlines()) == 1, err                   # one clear error
    assert str(cache_dir) in err and "Traceback" not in err
    return err


def test_cache_dir_of_another_user_or_writable_by_others_is_refused(make_mount, tmp_path):
    m = make_mount("trust", start=False)
    m.cache_dir.mkdir()
    os.chown(m.cache_dir, NOBODY, NOBODY)
    os.chmod(m.cache_dir, 0o777)
    assert "owned by uid 65534" in _refused(m, m.cache_dir)
    os.chown(m.cache_dir, 0, 0)                              # ours, but anyone may write it
    assert "writable by" in _refused(m, m.cache_dir)
    os.chmod(m.cache_dir, 0o755)
    m.start()                                                # ours and private: fine
    m.stop()


def test_subdirectory_made_by_another_user_with_a_planted_log_symlink(make_mount, tmp_path):
    """Another user pre-creates the mount's own subdirectory (mode 0777) with ``mount.log``
    pointing at a root-only file: refused, and that file is untouched."""
    m = make_mount("plant", start=False)
    m.start()
    base = m.base_dir()
    m.stop()
    victim = tmp_path / "root-only"
    victim.write_bytes(b"secret config\n")
    os.chmod(victim, 0o600)
    for p in sorted(base.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    base.rmdir()
    base.mkdir()
    os.chmod(base, 0o777)
    os.chown(base, NOBODY, NOBODY)
    os.symlink(victim, base / "mount.log")
    assert "owned by uid 65534" in _refused(m, base)
    assert victim.read_bytes() == b"secret config\n"
    os.chown(base, 0, 0)
    os.chmod(base, 0o700)                                    # now ours, but the symlink stays
    r = subprocess.run(m.argv(foreground=False), capture_output=True, env=m.env, cwd=str(ROOT), timeout=60)
    assert r.returncode != 0                                 # O_NOFOLLOW: never appended through it
    assert victim.read_bytes() == b"secret config\n"


def test_every_file_0600_and_every_directory_0700(make_mount):
    m = make_mount("modes", extra=["--write-back", "1"])
    (m.path / "f.txt").write_bytes(b"x" * 100_000)
    (m.path / "f.txt").read_bytes()
    m.wait_uploaded(timeout=60)
    os.listdir(m.path)
    seen = []
    for dirpath, dirnames, filenames in os.walk(m.cache_dir):
        for d in dirnames:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, d)).st_mode)
            assert mode == 0o700, (dirpath, d, oct(mode))
        for f in filenames:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, f)).st_mode)
            assert mode == 0o600, (dirpath, f, oct(mode))
            seen.append(f)
    assert "attrs.sqlite" in seen and "attrs.sqlite-wal" in seen, seen
    assert stat.S_IMODE(os.stat(m.state_path).st_mode) == 0o600
