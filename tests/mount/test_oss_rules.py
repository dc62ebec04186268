"""The mount within real OSS's rules (SPEC D.13), against the emulator that enforces them:
no conditional PutObject, metadata of encrypted objects changed only by re-upload of the
unchanged ciphertext, renames of large and appendable objects relayed through the client,
archived objects, and refusals that are never retried forever. Every test runs in both
write modes where the mode changes the path taken."""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import stat
import subprocess
import time

import oss2
import pytest

from tests.mount.conftest import eventually

pytestmark = pytest.mark.mount

CSE_KEY = "x-oss-meta-client-side-encryption-key"
MODES = [pytest.param([], id="on-close"), pytest.param(["--write-back", "1"], id="write-back")]


def _stats(emulator) -> dict:
    import json
    import urllib.request
    req = urllib.request.Request(f"{emulator.endpoint}/-/admin/stats", headers=emulator.admin_headers)
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def _raw(bucket: oss2.Bucket, key: str) -> tuple[bytes, dict]:
    r = bucket.get_object(key)
    return r.read(), {k.lower(): v for k, v in r.headers.items()}


def _keys(bucket: oss2.Bucket, prefix: str = "") -> set[str]:
    return {o.key for o in oss2.ObjectIterator(bucket, prefix=prefix)}


@pytest.mark.parametrize("extra", MODES)
def test_overwrite_append_and_cp_onto_a_file(make_mount, crypto_bucket, oss2_bucket, extra):
    m = make_mount(extra=extra)
    f = m.path / "new.txt"
    m.run("sh", "-c", "echo hello > new.txt")
    m.run("sh", "-c", "echo more >> new.txt")
    m.run("cp", "/etc/hostname", "copied.txt")
    m.run("cp", "/etc/hosts", "copied.txt")                 # cp onto an existing file
    m.run("sh", "-c", "echo again > new.txt")                # truncate + rewrite
    m.wait_uploaded()
    assert f.read_bytes() == b"again\n"
    assert crypto_bucket.get_object("new.txt").read() == b"again\n"
    assert crypto_bucket.get_object("copied.txt").read() == open("/etc/hosts", "rb").read()
    assert _keys(oss2_bucket) == {"new.txt", "copied.txt"}
    assert "unexpected" not in m.log() and "Traceback" not in m.log()


@pytest.mark.parametrize("extra", MODES)
def test_chmod_chown_touch_reupload_the_same_ciphertext(make_mount, crypto_bucket, oss2_bucket,
                                                         extra):
    m = make_mount(extra=extra)
    (m.path / "f.bin").write_bytes(os.urandom(300_000))
    m.wait_uploaded()
    body, before = _raw(oss2_bucket, "f.bin")
    os.chmod(m.path / "f.bin", 0o600)
    os.chown(m.path / "f.bin", 1234, 2345)
    os.utime(m.path / "f.bin", ns=(1_600_000_000_000_000_000, 1_600_000_000_250_000_000))
    st = os.stat(m.path / "f.bin")                  # shown at once, before the re-upload
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 1234, 2345)
    m.wait_uploaded()
    body2, after = _raw(oss2_bucket, "f.bin")
    assert body2 == body                             # the same ciphertext ...
    for name, value in before.items():               # ... the same data key, IV and layout
        if name.startswith("x-oss-meta-client-side-encryption-"):
            assert after[name] == value, name
    assert int(after["x-oss-meta-mode"]) == stat.S_IFREG | 0o600
    assert (after["x-oss-meta-uid"], after["x-oss-meta-gid"]) == ("1234", "2345")
    assert after["x-oss-meta-mtime"].startswith("1600000000.25")
    assert crypto_bucket.get_object("f.bin").read() == (m.path / "f.bin").read_bytes()
    # `touch` of a file that exists: one more re-upload, no new data key
    m.run("touch", "f.bin")
    m.wait_uploaded()
    _, touched = _raw(oss2_bucket, "f.bin")
    assert touched[CSE_KEY] == before[CSE_KEY]
    assert float(touched["x-oss-meta-mtime"]) > time.time() - 120


def test_a_burst_of_metadata_changes_costs_one_reupload(make_mount, oss2_bucket, emulator):
    m = make_mount()
    for i in range(5):
        (m.path / f"f{i}").write_bytes(b"x" * 1000)
    puts = _stats(emulator)["requests"].get("PutObject", 0)
    for i in range(5):
        os.chmod(m.path / f"f{i}", 0o640)
        os.chown(m.path / f"f{i}", 7, 8)
        os.utime(m.path / f"f{i}", (1_500_000_000, 1_500_000_000))
    m.wait_uploaded()
    assert _stats(emulator)["requests"].get("PutObject", 0) - puts == 5
    for i in range(5):
        h = oss2_bucket.head_object(f"f{i}").headers
        assert (h["x-oss-meta-mode"], h["x-oss-meta-uid"]) == (str(stat.S_IFREG | 0o640), "7")


def test_chmod_chown_utimes_to_the_values_an_encrypted_file_has_cost_no_reupload(
        make_mount, crypto_bucket, oss2_bucket, emulator):
    """``chmod -R``/``chown -R`` over files that already have the values re-uploaded each
    encrypted file's whole ciphertext; now the HEAD that comes before a re-upload tells that
    the object carries them, and nothing more is sent. The values are OSS's, not what the
    mount shows: another client's change just before a chmod back is still overwritten."""
    m = make_mount()
    (m.path / "f.bin").write_bytes(os.urandom(200_000))
    m.wait_uploaded()
    was = os.stat(m.path / "f.bin")
    before = _stats(emulator)["requests"]
    os.chown(m.path / "f.bin", was.st_uid, was.st_gid)
    os.chmod(m.path / "f.bin", stat.S_IMODE(was.st_mode))
    os.utime(m.path / "f.bin", ns=(was.st_atime_ns, was.st_mtime_ns))
    time.sleep(1.5)                                  # past the re-upload delay
    m.wait_uploaded()
    after = _stats(emulator)["requests"]
    sent = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert set(sent) <= {"HeadObject"}, sent
    # another client stores mode 600 (a new version) just after the mount checked the file:
    # the mount still shows 644 for a moment, and a chmod 644 through it must be stored, not
    # taken for a change that changes nothing
    body = crypto_bucket.get_object("f.bin").read()
    time.sleep(2.5)                                  # past attr_timeout: the next stat asks OSS
    assert stat.S_IMODE(os.stat(m.path / "f.bin").st_mode) == 0o644
    crypto_bucket.put_object("f.bin", body, headers={"x-oss-meta-mode": str(stat.S_IFREG | 0o600)})
    os.chmod(m.path / "f.bin", 0o644)
    m.wait_uploaded()
    eventually(lambda: oss2_bucket.head_object("f.bin").headers["x-oss-meta-mode"]
               == str(stat.S_IFREG | 0o644), 30)
    assert crypto_bucket.get_object("f.bin").read() == body


@pytest.mark.parametrize("extra", MODES)
def test_cp_a_costs_one_put_per_file(make_mount, crypto_bucket, emulator, tmp_path, extra):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}.txt").write_bytes(f"file {i}\n".encode())
        os.chmod(src / f"f{i}.txt", 0o640)
        os.utime(src / f"f{i}.txt", (1_400_000_000 + i, 1_400_000_000 + i))
    m = make_mount(extra=extra)
    before = _stats(emulator)["requests"]
    m.run("cp", "-a", str(src), "dst")
    m.wait_uploaded()
    after = _stats(emulator)["requests"]
    puts = after.get("PutObject", 0) - before.get("PutObject", 0)
    assert after.get("CopyObject", 0) == before.get("CopyObject", 0)
    assert 20 <= puts <= 20 * 2 + 1                   # the files, at most one re-upload each
    for i in range(20):
        h = crypto_bucket.head_object(f"dst/f{i}.txt").headers
        assert int(float(h["x-oss-meta-mtime"])) == 1_400_000_000 + i
        assert crypto_bucket.get_object(f"dst/f{i}.txt").read() == f"file {i}\n".encode()


@pytest.mark.parametrize("extra", MODES)
def test_rsync_a_twice_and_tar_x(make_mount, crypto_bucket, oss2_bucket, tmp_path, extra):
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    for i in range(8):
        (src / "sub" / f"s{i}").write_bytes(os.urandom(1000 + i))
    (src / "top.txt").write_bytes(b"top\n")
    os.chmod(src / "top.txt", 0o751)
    m = make_mount(extra=extra)
    m.run("rsync", "-a", f"{src}/", "copy/")
    (src / "top.txt").write_bytes(b"top, changed\n")
    os.utime(src / "top.txt", (1_300_000_000, 1_300_000_000))
    m.run("rsync", "-a", f"{src}/", "copy/")             # second run: updates and times
    r = m.run("rsync", "-a", "-i", f"{src}/", "copy/")   # third: nothing left to do
    assert b">f" not in r.stdout, r.stdout
    subprocess.run(["tar", "cf", str(tmp_path / "t.tar"), "-C", str(src), "."], check=True)
    (m.path / "untar").mkdir()
    m.run("tar", "xf", str(tmp_path / "t.tar"), cwd=m.path / "untar")
    m.wait_uploaded()
    r = subprocess.run(["diff", "-r", str(src), str(m.path / "copy")], capture_output=True)
    assert r.returncode == 0, r.stdout
    assert os.stat(m.path / "untar" / "top.txt").st_mtime == 1_300_000_000
    assert stat.S_IMODE(os.stat(m.path / "untar" / "top.txt").st_mode) == 0o751
    assert crypto_bucket.get_object("copy/top.txt").read() == b"top, changed\n"
    # the bucket holds exactly the tree twice, and no temporary file of rsync
    files = {k for k in _keys(oss2_bucket) if not k.endswith("/")}
    want = {f"{d}/{p}" for d in ("copy", "untar")
            for p in ["top.txt", *(f"sub/s{i}" for i in range(8))]}
    assert files == want


@pytest.mark.parametrize("extra", MODES)
def test_sqlite_git_and_editor_save(make_mount, crypto_bucket, extra):
    m = make_mount(extra=extra)
    db = sqlite3.connect(m.path / "db.sqlite")
    db.execute("create table t (x)")
    for i in range(50):
        db.execute("insert into t values (?)", (i,))
        db.commit()
    db.close()
    m.run("git", "init", "-q", "repo")
    (m.path / "repo" / "a.txt").write_text("one\n")
    m.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "a.txt", cwd=m.path / "repo")
    m.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one",
          cwd=m.path / "repo")
    # an editor's save: write a temp file, copy the mode, rename over the original
    (m.path / "doc.txt").write_text("v1\n")
    tmp = m.path / ".doc.txt.swp"
    tmp.write_text("v2\n")
    shutil.copymode(m.path / "doc.txt", tmp)
    os.rename(tmp, m.path / "doc.txt")
    m.wait_uploaded()
    assert m.run("git", "log", "--oneline", cwd=m.path / "repo").stdout.count(b"\n") == 1
    assert sqlite3.connect(m.path / "db.sqlite").execute("select count(*) from t").fetchone() \
        == (50,)
    assert crypto_bucket.get_object("doc.txt").read() == b"v2\n"


def test_two_mounts_writing_one_file_still_give_a_conflict_copy(make_mount, crypto_bucket,
                                                                 oss2_bucket):
    crypto_bucket.put_object("shared.txt", b"zero\n")
    a = make_mount("a")
    b = make_mount("b")
    with open(a.path / "shared.txt", "r+b") as fa:
        assert fa.read() == b"zero\n"
        (b.path / "shared.txt").write_bytes(b"B wins\n")
        fa.seek(0)
        fa.write(b"A later\n")
    assert crypto_bucket.get_object("shared.txt").read() == b"B wins\n"
    copies = [k for k in _keys(oss2_bucket, "shared.txt.conflict-")]
    assert len(copies) == 1 and crypto_bucket.get_object(copies[0]).read() == b"A later\n"


def _faults(emulator, **kw) -> None:
    emulator.set_faults(**kw)


@pytest.mark.parametrize("mount_limit", [None, 100_000], ids=["refused-copy", "mount-limit"])
def test_mv_of_a_file_above_the_copy_limit_relays_its_ciphertext(make_mount, crypto_bucket,
                                                                 oss2_bucket, emulator,
                                                                 mount_limit):
    data = os.urandom(3 << 20)
    crypto_bucket.put_object("big.bin", data)
    body, before = _raw(oss2_bucket, "big.bin")
    _faults(emulator, copy_limit=200_000)             # CopyObject refuses it (EntityTooLarge)
    extra = ["--part-size", str(1 << 20), "--multipart-threshold", str(2 << 20)]
    if mount_limit:
        extra += ["--copy-limit", str(mount_limit)]   # the mount knows: no CopyObject tried
    m = make_mount(extra=extra)
    copies = _stats(emulator)["requests"].get("CopyObject", 0)
    os.rename(m.path / "big.bin", m.path / "moved.bin")
    assert _keys(oss2_bucket) == {"moved.bin"}
    body2, after = _raw(oss2_bucket, "moved.bin")
    assert body2 == body and after[CSE_KEY] == before[CSE_KEY]   # relayed, not re-encrypted
    assert after["x-oss-object-type"] == "Multipart"             # in parts, above threshold
    assert crypto_bucket.get_object("moved.bin").read() == data
    assert (m.path / "moved.bin").read_bytes() == data
    tried = _stats(emulator)["requests"].get("CopyObject", 0) - copies
    assert tried == (0 if mount_limit else 1)
    # a directory holding it moves the same way
    os.mkdir(m.path / "d")
    os.rename(m.path / "moved.bin", m.path / "d" / "x.bin")
    os.rename(m.path / "d", m.path / "e")
    assert {k for k in _keys(oss2_bucket) if not k.endswith("/")} == {"e/x.bin"}
    assert crypto_bucket.get_object("e/x.bin").read() == data


def test_mv_of_an_appendable_object(make_mount, oss2_bucket, emulator):
    oss2_bucket.append_object("log.txt", 0, b"first line\n")
    oss2_bucket.append_object("log.txt", 11, b"second line\n")
    m = make_mount()
    os.rename(m.path / "log.txt", m.path / "log.old")
    assert _keys(oss2_bucket) == {"log.old"}
    assert oss2_bucket.get_object("log.old").read() == b"first line\nsecond line\n"
    assert (m.path / "log.old").read_bytes() == b"first line\nsecond line\n"


def test_chmod_of_a_plain_object_is_a_copy_and_of_an_appendable_one_a_reupload(
        make_mount, oss2_bucket, emulator):
    oss2_bucket.put_object("plain.txt", b"plain")
    oss2_bucket.append_object("app.txt", 0, b"appended")
    m = make_mount()
    os.chmod(m.path / "plain.txt", 0o600)              # CopyObject onto itself, at once
    assert oss2_bucket.head_object("plain.txt").headers["x-oss-meta-mode"] == \
        str(stat.S_IFREG | 0o600)
    copies = _stats(emulator)["requests"].get("CopyObject", 0)
    os.chmod(m.path / "plain.txt", 0o600)              # the object has it: its HEAD tells
    assert _stats(emulator)["requests"].get("CopyObject", 0) == copies
    os.chmod(m.path / "app.txt", 0o600)                # appendable: re-upload
    m.wait_uploaded()
    h = oss2_bucket.head_object("app.txt").headers
    assert h["x-oss-meta-mode"] == str(stat.S_IFREG | 0o600)
    assert oss2_bucket.get_object("app.txt").read() == b"appended"


def test_native_symlink_keeps_its_own_metadata(make_mount, oss2_bucket, crypto_bucket):
    crypto_bucket.put_object("target.txt", b"the target's bytes")
    oss2_bucket.put_symlink("target.txt", "link", headers={"x-oss-meta-mode": str(
        stat.S_IFLNK | 0o777), "x-oss-meta-uid": "4321"})
    oss2_bucket.put_symlink("nowhere.txt", "dangling")
    m = make_mount()
    st = os.lstat(m.path / "link")
    assert stat.S_ISLNK(st.st_mode) and st.st_uid == 4321
    assert os.readlink(m.path / "link") == "target.txt"
    assert (m.path / "link").read_bytes() == b"the target's bytes"
    assert stat.S_ISLNK(os.lstat(m.path / "dangling").st_mode)
    os.rename(m.path / "link", m.path / "link2")       # a link stays a link with its metadata
    assert oss2_bucket.get_symlink("link2").target_key == "target.txt"
    assert oss2_bucket.head_object("link2").headers["x-oss-meta-uid"] == "4321"
    assert os.readlink(m.path / "link2") == "target.txt"


def test_archived_object_reads_enodata_until_restored(make_mount, crypto_bucket, emulator):
    _faults(emulator, restore_seconds=2)
    body = b"frozen data " * 10          # >= 64 bytes: the first stat tries a GET (403), then HEADs
    crypto_bucket.put_object("cold.txt", body, headers={"x-oss-storage-class": "ColdArchive"})
    m = make_mount()
    assert os.stat(m.path / "cold.txt").st_size == len(body)   # lists and stats
    with pytest.raises(OSError) as e:
        (m.path / "cold.txt").read_bytes()
    assert e.value.errno == errno.ENODATA
    assert "ossencfs restore" in m.log() and "cold.txt" in m.log()
    r = m.cli("restore", str(m.path / "cold.txt"), "--tier", "Expedited")
    assert r.returncode == 0 and "restore started" in r.stdout, r.stdout + r.stderr
    r = m.cli("restore", str(m.path / "cold.txt"))
    assert "in progress" in r.stdout
    def restored() -> bool:
        try:
            return (m.path / "cold.txt").read_bytes() == body
        except OSError as exc:
            assert exc.errno == errno.ENODATA
            return False
    eventually(restored, timeout=20)


@pytest.mark.parametrize("extra", MODES)
def test_a_refused_upload_is_quarantined_not_retried(make_mount, oss2_bucket, emulator, extra):
    m = make_mount(extra=extra)
    (m.path / "kept.txt").write_bytes(b"before")
    m.wait_uploaded()
    _faults(emulator, deny_writes=True)               # credentials that may only read
    if extra:
        (m.path / "new.txt").write_bytes(b"refused data")   # journaled; refused later
    else:
        with pytest.raises(OSError) as e:
            (m.path / "new.txt").write_bytes(b"refused data")
        assert e.value.errno == errno.EACCES
    eventually(lambda: m.state()["quarantine"], timeout=30)
    s = m.state()
    assert not s["pending"] and "AccessDenied" in s["quarantine"][0]["reason"]
    assert "new.txt" in m.cli("status", str(m.path)).stdout
    assert not (m.path / "new.txt").exists()          # the bucket's view
    [q] = [p for p in (m.cache_dir).rglob("quarantine/*") if p.is_dir()]
    assert any(f.suffix == ".data" for f in q.iterdir())       # the data is kept
    _faults(emulator, deny_writes=False)
    started = time.monotonic()
    m.stop()                                          # unmount does not wait for it
    assert time.monotonic() - started < 30
    assert _keys(oss2_bucket) == {"kept.txt"}


@pytest.mark.parametrize("extra", MODES)
def test_a_sync_client_converges(make_mount, crypto_bucket, tmp_path, extra):
    """unison, a two-way sync client: temp file + rename, mtimes and modes set after the
    write, fingerprints compared; changes on both sides converge, and a run after that has
    nothing to do."""
    local = tmp_path / "local"
    (local / "docs").mkdir(parents=True)
    for i in range(10):
        (local / "docs" / f"n{i}.txt").write_text(f"note {i}\n")
    os.chmod(local / "docs" / "n0.txt", 0o600)
    m = make_mount(extra=extra)
    (m.path / "remote").mkdir()
    env = dict(os.environ, HOME=str(tmp_path), UNISON=str(tmp_path / ".unison"))

    def sync() -> subprocess.CompletedProcess:
        r = subprocess.run(["unison", str(local), str(m.path / "remote"), "-batch", "-auto",
                            "-times", "-perms", "0o1777", "-ui", "text", "-fastcheck", "false"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode in (0, 1), r.stdout[-2000:] + r.stderr[-2000:] + m.log()
        return r
    sync()
    (local / "docs" / "n1.txt").write_text("changed here\n")          # both sides change
    (m.path / "remote" / "docs" / "n2.txt").write_text("changed there\n")
    os.rename(m.path / "remote" / "docs" / "n3.txt", m.path / "remote" / "docs" / "n3-moved.txt")
    os.unlink(local / "docs" / "n4.txt")
    os.utime(local / "docs" / "n5.txt", (1_200_000_000, 1_200_000_000))
    sync()
    r = sync()
    assert "Nothing to do" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    m.wait_uploaded()
    diff = subprocess.run(["diff", "-r", str(local), str(m.path / "remote")], capture_output=True)
    assert diff.returncode == 0, diff.stdout
    assert crypto_bucket.get_object("remote/docs/n2.txt").read() == b"changed there\n"
    assert crypto_bucket.get_object("remote/docs/n1.txt").read() == b"changed here\n"
    assert os.stat(m.path / "remote" / "docs" / "n5.txt").st_mtime == 1_200_000_000
    assert stat.S_IMODE(os.stat(m.path / "remote" / "docs" / "n0.txt").st_mode) == 0o600


def test_a_metadata_change_overtaken_by_another_client_is_dropped(make_mount, crypto_bucket,
                                                                  oss2_bucket):
    crypto_bucket.put_object("doc.txt", b"ours")
    m = make_mount(extra=["--write-back", "3"])       # the re-upload waits 3 s
    os.chmod(m.path / "doc.txt", 0o600)
    crypto_bucket.put_object("doc.txt", b"theirs, newer")            # another client first
    m.wait_uploaded()
    assert crypto_bucket.get_object("doc.txt").read() == b"theirs, newer"   # not overwritten
    assert "x-oss-meta-mode" not in oss2_bucket.head_object("doc.txt").headers
    assert "metadata change not stored" in m.log()
    eventually(lambda: "metadata change made here was dropped" in
               m.cli("status", str(m.path)).stdout)
    eventually(lambda: (m.path / "doc.txt").read_bytes() == b"theirs, newer")
    assert _keys(oss2_bucket) == {"doc.txt"}                         # no conflict copy


def test_a_writer_whose_version_went_to_a_conflict_copy_gets_eio(make_mount, crypto_bucket,
                                                                 oss2_bucket):
    """`echo abc > f` as bash does it (open, dup2, close, write, close) while another client
    replaces f: the first close makes the conflict copy; the later write must not be laid over
    the other client's version."""
    crypto_bucket.put_object("c.txt", b"orig\n")
    m = make_mount()
    assert (m.path / "c.txt").read_bytes() == b"orig\n"
    fd = os.open(m.path / "c.txt", os.O_WRONLY | os.O_TRUNC)
    crypto_bucket.put_object("c.txt", b"REMOTE-VERSION-LONGER\n")
    fd2 = os.dup(fd)
    os.close(fd)                                     # the truncated version: a conflict copy
    with pytest.raises(OSError) as e:
        os.write(fd2, b"local data\n")
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError):
        os.close(fd2)
    assert crypto_bucket.get_object("c.txt").read() == b"REMOTE-VERSION-LONGER\n"
    assert len(_keys(oss2_bucket, "c.txt.conflict-")) == 1


def test_a_writer_whose_upload_was_refused_gets_eio(make_mount, emulator, oss2_bucket):
    m = make_mount()
    (m.path / "d").mkdir()
    _faults(emulator, deny_writes=True)
    fd = os.open(m.path / "d" / "f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    fd2 = os.dup(fd)
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EACCES
    for op in (lambda: os.write(fd2, b"important\n"), lambda: os.fsync(fd2)):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EIO             # never a silent 0
    with pytest.raises(OSError):
        os.close(fd2)
    _faults(emulator, deny_writes=False)


def test_a_directory_time_set_after_a_change_stays(make_mount, emulator):
    m = make_mount()
    (m.path / "d").mkdir()
    (m.path / "d" / "new").write_bytes(b"x")
    os.utime(m.path / "d", (1_567_987_200, 1_567_987_200))
    time.sleep(2.5)                                  # past the attribute timeout
    assert os.stat(m.path / "d").st_mtime == 1_567_987_200


def test_archived_objects_refuse_metadata_changes_and_failed_dir_moves_roll_back(
        make_mount, crypto_bucket, oss2_bucket, emulator):
    crypto_bucket.put_object("adir/n1", b"one")
    crypto_bucket.put_object("adir/cold.txt", b"cold", headers={"x-oss-storage-class": "Archive"})
    m = make_mount()
    with pytest.raises(OSError) as e:
        os.chmod(m.path / "adir" / "cold.txt", 0o600)  # a re-upload would re-archive it
    assert e.value.errno == errno.EPERM
    assert "archived" in m.log()
    with pytest.raises(OSError) as e:
        os.rename(m.path / "adir", m.path / "adir2")  # its copy is refused
    assert e.value.errno == errno.ENODATA
    assert _keys(oss2_bucket) == {"adir/n1", "adir/cold.txt"}     # no half-filled new name
    assert (m.path / "adir" / "n1").read_bytes() == b"one"
    assert not (m.path / "adir2").exists()


@pytest.mark.log_allow(r"setattr|503|ServiceUnavailable|retry", reason="the failed chmod this test provokes")
def test_a_chmod_that_could_not_be_stored_is_not_shown_and_a_retry_stores_it(
        make_mount, crypto_bucket, oss2_bucket, emulator):
    """A chmod answered EIO (OSS failing) left the new mode on the node: ``stat`` showed a
    mode OSS never got, and the same chmod again could be taken for no change. Now the node
    keeps what was stored, and the retry stores it (directory marker and encrypted file)."""
    m = make_mount(extra=["--retries", "1"])
    (m.path / "d").mkdir()
    (m.path / "f.bin").write_bytes(b"x" * 5000)
    m.wait_uploaded()
    time.sleep(2.5)                                  # past attr_timeout: a HEAD comes first
    _faults(emulator, fail_rate=1.0)
    try:
        for name, mode in (("d", 0o700), ("f.bin", 0o600)):
            with pytest.raises(OSError) as ei:
                os.chmod(m.path / name, mode)
            assert ei.value.errno == errno.EIO
        time.sleep(2.5)                              # the kernel asks the mount again, which
        assert stat.S_IMODE(os.stat(m.path / "d").st_mode) == 0o755     # serves what it has
        assert stat.S_IMODE(os.stat(m.path / "f.bin").st_mode) == 0o644
    finally:
        _faults(emulator, fail_rate=0.0)
    os.chmod(m.path / "d", 0o700)
    os.chmod(m.path / "f.bin", 0o600)
    m.wait_uploaded()
    assert oss2_bucket.head_object("d/").headers["x-oss-meta-mode"] == str(stat.S_IFDIR | 0o700)
    eventually(lambda: oss2_bucket.head_object("f.bin").headers["x-oss-meta-mode"]
               == str(stat.S_IFREG | 0o600), 30)
