"""Ordinary tools on the mount: cp, dd, cp -a, rsync -a, tar, git, sqlite3."""
from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

pytestmark = pytest.mark.mount


def _tree(root: Path) -> None:
    """A small tree with modes, nested dirs, symlinks (relative, absolute, dangling), an
    empty file, an empty directory and a file that spans several cache blocks."""
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "docs" / "readme.txt").write_text("read me\n")
    (root / "docs" / "deep" / "er" / "data.bin").write_bytes(os.urandom(700_000))
    (root / "empty").write_bytes(b"")
    (root / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "script.sh", 0o755)
    (root / "private").write_text("secret-ish")
    os.chmod(root / "private", 0o600)
    os.chmod(root / "docs" / "deep", 0o750)
    os.symlink("docs/readme.txt", root / "rel-link")
    os.symlink("/etc/hostname", root / "abs-link")
    os.symlink("nowhere/at/all", root / "dangling")
    for p in [root / "docs" / "readme.txt", root / "script.sh", root / "private"]:
        os.utime(p, (1_650_000_000, 1_650_000_000))


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), int(st.st_mtime),
                            hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.mark.parametrize("tool", ["cp", "rsync"])
def test_copy_tree_with_modes_and_symlinks(mount, tmp_path, tool):
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    if tool == "cp":
        mount.run("cp", "-a", f"{src}/.", str(mount.path / "tree"), cwd=tmp_path)
    else:
        mount.run("rsync", "-a", f"{src}/", str(mount.path / "tree"), cwd=tmp_path)
    assert _snapshot(mount.path / "tree") == _snapshot(src)
    mount.remount()                                      # persisted in the bucket, not memory
    assert _snapshot(mount.path / "tree") == _snapshot(src)
    back = tmp_path / "back"
    mount.run("rsync", "-a", f"{mount.path / 'tree'}/", str(back), cwd=tmp_path)
    assert _snapshot(back) == _snapshot(src)
    if tool == "rsync":          # a second rsync finds nothing to do and changes nothing
        r = mount.run("rsync", "-ai", f"{src}/", str(mount.path / "tree"), cwd=tmp_path)
        assert r.stdout.strip() == b""


def test_cp_and_dd(mount, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    mount.run("cp", str(big), str(mount.path / "big.bin"))
    assert filecmp.cmp(big, mount.path / "big.bin", shallow=False)
    mount.run("dd", "if=/dev/urandom", f"of={mount.path / 'dd.bin'}", "bs=64k", "count=20",
              "status=none")
    assert os.path.getsize(mount.path / "dd.bin") == 20 * 65536
    # dd into the middle of an existing file, without truncating it
    mount.run("dd", f"if={big}", f"of={mount.path / 'dd.bin'}", "bs=1000", "count=3",
              "seek=7", "conv=notrunc", "status=none")
    got = (mount.path / "dd.bin").read_bytes()
    assert got[7000:10000] == big.read_bytes()[:3000] and len(got) == 20 * 65536
    out = mount.run("dd", f"if={mount.path / 'big.bin'}", "bs=4096", "skip=100", "count=2",
                    "status=none").stdout
    assert out == big.read_bytes()[409600:409600 + 8192]


def test_tar_roundtrip(mount, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    archive = mount.path / "tree.tar"
    mount.run("tar", "-cf", str(archive), "-C", str(src), ".")
    out = tmp_path / "out"
    out.mkdir()
    mount.run("tar", "-xpf", str(archive), "-C", str(out))
    assert _snapshot(out) == _snapshot(src)
    # and the other way: extract onto the mount, archive from it again
    mount.run("tar", "-xpf", str(archive), "-C", str(mount.path))
    assert _snapshot(mount.path / "docs") == _snapshot(src / "docs")
    mount.run("tar", "-cf", str(tmp_path / "again.tar"), "-C", str(mount.path / "docs"), ".")
    again = tmp_path / "again"
    again.mkdir()
    mount.run("tar", "-xpf", str(tmp_path / "again.tar"), "-C", str(again))
    assert _snapshot(again) == _snapshot(src / "docs")


def test_git(mount):
    repo = mount.path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    mount.run(*git, "init", "-q", cwd=repo)
    for i in range(3):
        (repo / f"file{i}.txt").write_text(f"version {i}\n" * 50)
        mount.run(*git, "add", ".", cwd=repo)
        mount.run(*git, "commit", "-q", "-m", f"commit {i}", cwd=repo)
    log = mount.run(*git, "log", "--oneline", cwd=repo).stdout.decode()
    assert [line.split(" ", 1)[1] for line in log.strip().splitlines()] == \
        ["commit 2", "commit 1", "commit 0"]
    mount.run(*git, "fsck", "--strict", cwd=repo)
    status = mount.run(*git, "status", "--porcelain", cwd=repo).stdout
    assert status == b""
    mount.remount()
    log2 = mount.run(*git, "log", "--oneline", cwd=repo).stdout.decode()
    assert log2 == log


def test_sqlite_across_remount(mount):
    if shutil.which("sqlite3") is None:
        pytest.skip("sqlite3 CLI missing")
    db = str(mount.path / "app.db")
    mount.run("sqlite3", db, "create table t(id integer primary key, v text);"
                             "insert into t(v) values ('one'),('two');")
    mount.run("sqlite3", db, "begin; insert into t(v) select 'row' || x from "
                             "(with recursive c(x) as (select 1 union all select x+1 from c "
                             "where x < 2000) select x from c); commit;")
    mount.run("sqlite3", db, "update t set v='TWO' where id=2; delete from t where id > 1500;")
    mount.remount()
    out = mount.run("sqlite3", db, "pragma integrity_check; select count(*), "
                                   "(select v from t where id=2) from t;").stdout.decode().split()
    assert out == ["ok", "1500|TWO"]
