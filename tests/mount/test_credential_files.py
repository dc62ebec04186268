"""Mounts started from a --config file and from an ossfs passwd file (no secret on the command
line), and matdesc against the V2 Python SDK (alibabacloud-oss-v2) holding several RSA keys."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import AK, BUCKET, ROOT, SDK_FIXTURES, SK

from .conftest import _fuse_ok, _is_mounted, eventually

KEY1 = SDK_FIXTURES / "rsa_test_private.pem"
MATDESC1 = '{"name": "k1"}'
MATDESC2 = '{"name": "k2"}'       # exactly what the V2 SDK writes for {"name": "k2"}


def _no_oss_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(("OSS_ACCESS", "OSS_SESSION"))}


def _run_mount(argv: list[str], env: dict[str, str], mnt: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ossencfs", "mount", *argv, "-f"],
                                stdout=out, stderr=out, env=env, cwd=str(ROOT))
    deadline = time.monotonic() + 30
    while not _is_mounted(str(mnt)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"mount did not come up:\n{log.read_text()}")
        time.sleep(0.05)
    return proc


def _unmount(proc: subprocess.Popen, mnt: Path) -> None:
    subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    proc.wait(timeout=60)


def test_mount_from_a_config_file(emulator, cli_env, tmp_path: Path, crypto_bucket) -> None:
    if not _fuse_ok():
        pytest.skip("needs root, /dev/fuse and fusermount3")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = tmp_path / "photos.toml"
    cfg.write_text(f'bucket = "{BUCKET}"\nprefix = "photos"\nmountpoint = "{mnt}"\n'
                   f'endpoint = "{emulator.endpoint}"\naccess_key_id = "{AK}"\n'
                   f'access_key_secret = "{SK}"\ncache_dir = "{tmp_path / "cache"}"\n'
                   f'options = ["attr_timeout=1"]\n[[key]]\nrsa = "{KEY1}"\n')
    cfg.chmod(0o600)
    proc = _run_mount(["--config", str(cfg)], _no_oss_env(cli_env), mnt, tmp_path / "log")
    try:
        (mnt / "a.txt").write_bytes(b"from config")
        assert b"SK" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        _unmount(proc, mnt)
    assert crypto_bucket.get_object("photos/a.txt").read() == b"from config"


def test_mount_from_an_ossfs_passwd_file(make_mount, tmp_path: Path, crypto_bucket) -> None:
    passwd = tmp_path / "passwd-ossfs"
    passwd.write_text(f"# ossfs format\nother-bucket:X:Y\n{BUCKET}:{AK}:{SK}\n")
    passwd.chmod(0o644)
    m = make_mount(start=False, extra=["-o", f"allow_other,passwd_file={passwd}"])
    m.env = _no_oss_env(m.env)
    with pytest.raises(RuntimeError, match="should not have others permissions"):
        m.start()
    passwd.chmod(0o600)
    m.start()
    (m.path / "p.txt").write_bytes(b"ossfs users")
    m.stop()
    assert crypto_bucket.get_object("p.txt").read() == b"ossfs users"


def _v2_client(emulator, master_key: Path, matdesc: dict[str, str], others: list) -> object:
    """The V2 SDK's encryption client writing with ``master_key`` (its matdesc) and holding the
    ``others`` (key, matdesc) pairs for reading."""
    import alibabacloud_oss_v2 as oss
    from alibabacloud_oss_v2.crypto import MasterRsaCipher
    from cryptography.hazmat.primitives import serialization

    def cipher(path: Path, desc: dict[str, str]) -> MasterRsaCipher:
        priv = serialization.load_pem_private_key(path.read_bytes(), None)
        pub = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        return MasterRsaCipher(mat_desc=desc, public_key=pub.decode(),
                               private_key=path.read_text())
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(AK, SK)
    cfg.region = "cn-hangzhou"
    cfg.endpoint = emulator.endpoint
    cfg.use_path_style = True
    return oss.EncryptionClient(oss.Client(cfg), cipher(master_key, matdesc),
                                decrypt_master_ciphers=[cipher(p, d) for p, d in others])


def test_matdesc_picks_the_right_key_in_both_directions(make_mount, emulator,
                                                         second_rsa_key_path: str) -> None:
    import alibabacloud_oss_v2 as oss
    key2 = Path(second_rsa_key_path)
    m = make_mount(keys=["--rsa-key", str(key2), "--matdesc", MATDESC2,
                         "--rsa-key", str(KEY1), "--matdesc", MATDESC1])
    (m.path / "by-mount").write_bytes(b"written with k2")
    # the V2 SDK writes with k1 by default and holds k2 under its matdesc
    v2 = _v2_client(emulator, KEY1, {"name": "k1"}, [(key2, {"name": "k2"})])
    got = v2.get_object(oss.GetObjectRequest(bucket=BUCKET, key="by-mount"))
    assert got.body.read() == b"written with k2"
    assert got.headers.get("x-oss-meta-client-side-encryption-matdesc") == MATDESC2
    # the other way: the V2 SDK writes with k2 (matdesc k2); the mount picks k2 by it
    v2b = _v2_client(emulator, key2, {"name": "k2"}, [(KEY1, {"name": "k1"})])
    v2b.put_object(oss.PutObjectRequest(bucket=BUCKET, key="by-v2", body=b"written by V2"))
    eventually(lambda: (m.path / "by-v2").exists())       # once the listing's TTL is over
    assert (m.path / "by-v2").read_bytes() == b"written by V2"


def test_matdesc_selects_the_key_before_any_trial(second_rsa_key_path: str) -> None:
    from ossencfs.envelope.format import emit_headers, parse_headers
    from ossencfs.envelope.keys import KeyRing, RsaMasterKey
    k1 = RsaMasterKey.from_pem_file(str(KEY1), matdesc=MATDESC1)
    k2 = RsaMasterKey.from_pem_file(second_rsa_key_path, matdesc=MATDESC2)
    material, headers = k2.wrap_new()
    stored = emit_headers(headers)
    assert stored["x-oss-meta-client-side-encryption-matdesc"] == MATDESC2    # verbatim
    ring = KeyRing([k1, k2])                           # k1 first: a trial would start there
    assert ring.open(parse_headers(stored)).key == material.key
    assert ring.unwrap_calls == 1


def test_fstab_helper_with_a_config_file(make_mount, tmp_path: Path, oss2_bucket) -> None:
    """systemd/mount.ossencfs with config=FILE: endpoint, keys and an ossfs passwd file come
    from the config, nothing secret is on the command line."""
    import os
    m = make_mount("fstab", start=False)
    passwd = tmp_path / "passwd-ossfs"
    passwd.write_text(f"{AK}:{SK}\n")
    passwd.chmod(0o600)
    cfg = tmp_path / "fstab.toml"
    cfg.write_text(f'endpoint = "{m.emulator.endpoint}"\npasswd_file = "{passwd}"\n'
                   f'cache_dir = "{m.cache_dir}"\n[[key]]\nrsa = "{KEY1}"\nmatdesc = \'{MATDESC1}\'\n')
    env = _no_oss_env(m.env)
    env["OSSENCFS"] = str(ROOT / ".venv" / "bin" / "ossencfs")
    r = subprocess.run([str(ROOT / "systemd" / "mount.ossencfs"), f"oss://{BUCKET}", str(m.path),
                        "-o", f"_netdev,config={cfg}"], env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        (m.path / "f.txt").write_bytes(b"fstab")
        assert (m.path / "f.txt").read_bytes() == b"fstab"
    finally:
        subprocess.run([sys.executable, "-m", "ossencfs", "umount", str(m.path)], env=m.env,
                       timeout=60)
    assert not os.path.ismount(m.path)
    # (oss2's CryptoBucket, without that matdesc, refuses the object: SPEC A.6)
    head = oss2_bucket.head_object("f.txt")
    assert head.headers["x-oss-meta-client-side-encryption-matdesc"] == MATDESC1


def test_a_secret_given_as_an_option_is_not_in_ps(make_mount) -> None:
    m = make_mount(start=False, extra=["--access-key-id", AK, "--access-key-secret", SK])
    m.env = _no_oss_env(m.env)
    m.start()
    assert m.proc is not None
    cmdline = Path(f"/proc/{m.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert SK.encode() not in cmdline and b"--access-key-secret" not in cmdline
    (m.path / "s.txt").write_bytes(b"hidden")
    assert (m.path / "s.txt").read_bytes() == b"hidden"
