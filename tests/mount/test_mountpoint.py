"""A mount point that cannot take a mount gets an error a user can act on (found by a new
user: a second mount stacked on a live one and hid it from `ossencfs status`; a dead mount
and a missing directory were both "not a directory")."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.mount.conftest import _is_mounted, eventually

pytestmark = pytest.mark.mount


def _mount_again(m, path) -> subprocess.CompletedProcess:
    argv = m.argv()
    argv[argv.index(str(m.path))] = str(path)
    argv[argv.index("--cache-dir") + 1] = str(m.cache_dir) + "-again"
    return subprocess.run(argv, env=m.env, capture_output=True, timeout=60)


def test_missing_and_live_mount_points_are_refused(make_mount, tmp_path):
    m = make_mount("mp")
    r = _mount_again(m, tmp_path / "nowhere")
    assert r.returncode != 0 and b"does not exist" in r.stderr, r.stderr
    r = _mount_again(m, m.path)
    assert r.returncode != 0 and b"already a FUSE mount point" in r.stderr, r.stderr
    with open("/proc/self/mountinfo") as f:
        assert sum(f" {m.path} " in line for line in f) == 1


@pytest.mark.log_allow(r".*", reason="the mount is killed with SIGKILL on purpose")
def test_dead_mount_point_names_the_cure(make_mount):
    m = make_mount("dead")
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=30)
    m.proc = None
    try:
        r = _mount_again(m, m.path)
        assert r.returncode != 0 and b"dead mount" in r.stderr, r.stderr
        assert b"ossencfs umount" in r.stderr
    finally:
        subprocess.run(["fusermount3", "-uz", str(m.path)], capture_output=True)
        eventually(lambda: not _is_mounted(str(m.path)))
    assert not os.path.ismount(m.path)
