"""oss2 CryptoBucket (RsaProvider) <-> ``ossencfs cp``/``cat``, both directions, over HTTP."""
from __future__ import annotations

import json
import os

from tests.conftest import BUCKET, SDK_FIXTURES, reupload_with_meta
from tests.interop.conftest import (PART, SMALL_MULTIPART, example_jpg, leftovers,
                                    oss2_multipart, payload)

URL = f"oss://{BUCKET}/"


def keys(*paths: str) -> list[str]:
    return [a for p in paths for a in ("--rsa-key", p)]


def one_line_error(proc) -> str:
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ossencfs: error: "), err
    assert proc.stdout == b""
    return lines[0]


def test_oss2_single_put_read_by_cat(run_cli, emulator, crypto_bucket, rsa_provider,
                                     rsa_key_path):
    data = payload(70_001)
    crypto_bucket(rsa_provider).put_object("docs/single.bin", data)
    proc = run_cli("cat", URL + "docs/single.bin", *keys(rsa_key_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data
    emulator.reset_stats()
    proc = run_cli("cat", URL + "docs/single.bin", "--offset", "12345", "--length", "777",
                   *keys(rsa_key_path))
    assert proc.stdout == data[12345:12345 + 777]
    assert emulator.stats["bytes_sent"] < 777 + 1000     # a ranged GET, not the whole object


def test_oss2_multipart_read_by_cat_and_cp(run_cli, crypto_bucket, rsa_provider, rsa_key_path,
                                           tmp_path):
    data = payload(3 * PART + 4321, seed=2)
    oss2_multipart(crypto_bucket(rsa_provider), "mp.bin", data, PART)
    proc = run_cli("cat", URL + "mp.bin", *keys(rsa_key_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data
    out = tmp_path / "down"
    out.mkdir()
    proc = run_cli("cp", URL + "mp.bin", str(out) + "/", *keys(rsa_key_path), "--parallel", "3")
    assert proc.returncode == 0, proc.stderr
    assert (out / "mp.bin").read_bytes() == data
    assert leftovers(out) == []


def test_cp_single_read_by_oss2(run_cli, crypto_bucket, rsa_provider, rsa_key_path,
                                oss2_bucket, tmp_path):
    data = payload(50_000, seed=3)
    src = tmp_path / "photo.jpg"
    src.write_bytes(data)
    proc = run_cli("cp", str(src), URL + "up/", *keys(rsa_key_path))
    assert proc.returncode == 0, proc.stderr
    head = oss2_bucket.head_object("up/photo.jpg")
    assert head.object_type == "Normal"
    assert head.headers["x-oss-meta-client-side-encryption-wrap-alg"] == "RSA/NONE/PKCS1Padding"
    assert oss2_bucket.get_object("up/photo.jpg").read() != data      # stored encrypted
    cb = crypto_bucket(rsa_provider)
    assert cb.get_object("up/photo.jpg").read() == data
    assert cb.get_object("up/photo.jpg", byte_range=(1001, 2002)).read() == data[1001:2003]


def test_cp_multipart_read_by_oss2(run_cli, crypto_bucket, rsa_provider, rsa_key_path,
                                   oss2_bucket, tmp_path):
    data = payload(4 * PART + 17, seed=4)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    proc = run_cli("cp", str(src), URL + "big.bin", *keys(rsa_key_path), *SMALL_MULTIPART)
    assert proc.returncode == 0, proc.stderr
    head = oss2_bucket.head_object("big.bin")
    assert head.object_type == "Multipart"
    assert head.headers["x-oss-meta-client-side-encryption-data-size"] == str(len(data))
    assert head.headers["x-oss-meta-client-side-encryption-part-size"] == str(PART)
    cb = crypto_bucket(rsa_provider)
    assert cb.get_object("big.bin").read() == data
    lo, hi = PART - 7, 2 * PART + 9                  # a range across two part boundaries
    assert cb.get_object("big.bin", byte_range=(lo, hi)).read() == data[lo:hi + 1]


def test_cp_from_stdin_pipe_single_and_multipart(run_cli, crypto_bucket, rsa_provider,
                                                 rsa_key_path, oss2_bucket):
    small, big = payload(1000, seed=5), payload(3 * PART + 1, seed=6)
    for key, data in (("in/small", small), ("in/big", big)):
        proc = run_cli("cp", "-", URL + key, *keys(rsa_key_path), *SMALL_MULTIPART, input=data)
        assert proc.returncode == 0, proc.stderr
        assert crypto_bucket(rsa_provider).get_object(key).read() == data
    assert oss2_bucket.head_object("in/big").object_type == "Multipart"


def test_go_sdk_vector(run_cli, oss2_bucket, rsa_key_path):
    meta = json.loads((SDK_FIXTURES / "encrypted_go_example_meta.json").read_text())
    body = (SDK_FIXTURES / "encrypted_go_example.jpg").read_bytes()
    oss2_bucket.put_object("go/example.jpg", body, headers=meta)
    proc = run_cli("cat", URL + "go/example.jpg", *keys(rsa_key_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == example_jpg()


def test_two_rsa_keys_resolved_per_object(run_cli, crypto_bucket, rsa_provider, rsa_key_path,
                                          second_rsa_key_path, tmp_path):
    a, b = payload(3000, seed=7), payload(5000, seed=8)
    crypto_bucket(rsa_provider).put_object("k/a", a)
    src = tmp_path / "b"
    src.write_bytes(b)
    assert run_cli("cp", str(src), URL + "k/b", *keys(second_rsa_key_path)).returncode == 0
    both = keys(rsa_key_path, second_rsa_key_path)
    assert run_cli("cat", URL + "k/a", *both).stdout == a
    assert run_cli("cat", URL + "k/b", *both).stdout == b
    msg = one_line_error(run_cli("cat", URL + "k/b", *keys(rsa_key_path)))
    assert "k/b" in msg and "key" in msg.lower()


def test_missing_key_tampered_header_and_no_partial_file(run_cli, crypto_bucket, rsa_provider,
                                                        rsa_key_path, oss2_bucket, tmp_path):
    data = payload(40_000, seed=9)
    crypto_bucket(rsa_provider).put_object("t/obj", data)
    # no key configured at all
    msg = one_line_error(run_cli("cat", URL + "t/obj"))
    assert "t/obj" in msg
    # tampered wrapped key: the wrapped key and start swapped, each still an RSA ciphertext of
    # this key. (A flipped bit is not always detectable: PKCS#1 v1.5 decryption with OpenSSL's
    # implicit rejection returns random bytes instead of an error, 32 of them ~0.6 % of the
    # time, and CTR has no integrity check; this test failed once in CI that way.)
    h = dict(oss2_bucket.head_object("t/obj").headers)
    meta = {k.lower(): v for k, v in h.items() if k.lower().startswith("x-oss-meta-")}
    key_h, start_h = "x-oss-meta-client-side-encryption-key", "x-oss-meta-client-side-encryption-start"
    meta[key_h], meta[start_h] = meta[start_h], meta[key_h]
    reupload_with_meta(oss2_bucket, "t/obj", meta)
    out = tmp_path / "dl"
    out.mkdir()
    proc = run_cli("cp", URL + "t/obj", str(out / "obj"), *keys(rsa_key_path))
    one_line_error(proc)
    assert os.listdir(out) == []                      # no partial file, no temp file
    # a damaged header: the start header not base64 (a partial set cannot be stored: real
    # OSS refuses a PutObject with one, EC 0005-00000402, SPEC D.13)
    meta["x-oss-meta-client-side-encryption-start"] = "not base64!"
    reupload_with_meta(oss2_bucket, "t/obj", meta)
    msg = one_line_error(run_cli("cat", URL + "t/obj", *keys(rsa_key_path)))
    assert "start" in msg


def test_network_down_is_one_line_error(run_cli, rsa_key_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_cli("cat", URL + "x", *keys(rsa_key_path), "--retries", "1",
                   endpoint=f"http://127.0.0.1:{port}")
    msg = one_line_error(proc)
    assert msg == f"ossencfs: error: head {URL}x: network error: connection refused", msg


def test_mixed_bucket_recursive_both_ways(run_cli, crypto_bucket, rsa_provider, rsa_key_path,
                                          oss2_bucket, tmp_path):
    plain, enc = payload(2048, seed=10), payload(PART * 3, seed=11)
    oss2_bucket.put_object("mix/plain.txt", plain)
    crypto_bucket(rsa_provider).put_object("mix/sub/enc.bin", enc)
    oss2_bucket.put_object("mix/emptydir/", b"")
    crypto_bucket(rsa_provider).put_object("mix/empty.bin", b"")
    down = tmp_path / "down"
    proc = run_cli("cp", "-r", URL + "mix", str(down), *keys(rsa_key_path))
    assert proc.returncode == 0, proc.stderr
    assert (down / "plain.txt").read_bytes() == plain
    assert (down / "sub" / "enc.bin").read_bytes() == enc
    assert (down / "emptydir").is_dir()
    assert (down / "empty.bin").read_bytes() == b""
    # and back up under another prefix: everything arrives encrypted, oss2 reads it
    proc = run_cli("cp", "-r", str(down), URL + "copy/", *keys(rsa_key_path), *SMALL_MULTIPART)
    assert proc.returncode == 0, proc.stderr
    cb = crypto_bucket(rsa_provider)
    assert cb.get_object("copy/plain.txt").read() == plain
    assert cb.get_object("copy/sub/enc.bin").read() == enc
    assert cb.get_object("copy/empty.bin").read() == b""
    assert oss2_bucket.head_object("copy/sub/enc.bin").object_type == "Multipart"
    assert "x-oss-meta-client-side-encryption-key" in oss2_bucket.head_object("copy/plain.txt").headers


def test_cp_to_stdout_and_usage_errors(run_cli, crypto_bucket, rsa_provider, rsa_key_path,
                                       tmp_path):
    data = payload(999, seed=12)
    crypto_bucket(rsa_provider).put_object("o", data)
    proc = run_cli("cp", URL + "o", "-", *keys(rsa_key_path))
    assert proc.returncode == 0 and proc.stdout == data
    one_line_error(run_cli("cp", str(tmp_path), str(tmp_path / "x"), *keys(rsa_key_path)))
    one_line_error(run_cli("cat", URL + "does/not/exist", *keys(rsa_key_path)))
    one_line_error(run_cli("cp", str(tmp_path / "nope"), URL + "x", *keys(rsa_key_path)))


def test_signature_v4_round_trip(run_cli, emulator, crypto_bucket, rsa_provider, rsa_key_path,
                                 tmp_path):
    region = emulator.region.removeprefix("oss-")     # V4 signs the region id, never oss-<id>
    data = payload(2 * PART + 3, seed=13)
    (tmp_path / "v4").write_bytes(data)
    v4 = ["--auth-version", "v4", "--region", region]
    proc = run_cli("cp", str(tmp_path / "v4"), URL + "v4/obj", *keys(rsa_key_path), *v4,
                   *SMALL_MULTIPART)
    assert proc.returncode == 0, proc.stderr
    assert crypto_bucket(rsa_provider).get_object("v4/obj").read() == data
    proc = run_cli("cat", URL + "v4/obj", *keys(rsa_key_path), *v4)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data


def test_legacy_oss2_rsa_vector(run_cli, oss2_bucket, rsa_key_path):
    meta = json.loads((SDK_FIXTURES / "deprecated_encrypted_1MB_a_meta_rsa.json").read_text())
    body = (SDK_FIXTURES / "deprecated_encrypted_1MB_a_rsa").read_bytes()
    oss2_bucket.put_object("legacy/rsa", body, headers=meta)
    proc = run_cli("cat", URL + "legacy/rsa", *keys(rsa_key_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"a" * (1 << 20)
    proc = run_cli("cat", URL + "legacy/rsa", "--offset", "777", "--length", "33",
                   *keys(rsa_key_path))
    assert proc.stdout == b"a" * 33


def test_sts_credentials_from_environment(tmp_path, cli_env, run_cli, rsa_key_path):
    from ossencfs.emulator.server import Emulator
    data = payload(4000, seed=14)
    with Emulator(str(tmp_path / "sts"), credentials={"STS.tmp": "tmpsecret"},
                  sts_tokens={"STS.tmp": "the-token"}, buckets=[BUCKET]) as emu:
        env = dict(cli_env, OSS_ACCESS_KEY_ID="STS.tmp", OSS_ACCESS_KEY_SECRET="tmpsecret",
                   OSS_SESSION_TOKEN="the-token")
        proc = run_cli("cp", "-", URL + "sts", *keys(rsa_key_path), input=data,
                       endpoint=emu.endpoint, env=env)
        assert proc.returncode == 0, proc.stderr
        proc = run_cli("cat", URL + "sts", *keys(rsa_key_path), endpoint=emu.endpoint, env=env)
        assert proc.stdout == data
        env.pop("OSS_SESSION_TOKEN")
        proc = run_cli("cat", URL + "sts", *keys(rsa_key_path), endpoint=emu.endpoint, env=env)
        assert proc.returncode != 0 and b"403" in proc.stderr


def test_progress_bar_only_on_a_terminal(emulator, cli_env, rsa_key_path, tmp_path,
                                         crypto_bucket, rsa_provider):
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios
    data = payload(5 << 20, seed=15)
    (tmp_path / "big").write_bytes(data)
    argv = [sys.executable, "-m", "ossencfs", "cp", str(tmp_path / "big"), URL + "tty/big",
            *keys(rsa_key_path), "--endpoint", emulator.endpoint]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave, env=cli_env)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, seen
    assert b"B/s" in seen or b"%|" in seen, seen       # tqdm drew a bar
    assert crypto_bucket(rsa_provider).get_object("tty/big").read() == data
    piped = subprocess.run(argv[:5] + [URL + "tty/big2"] + argv[6:], capture_output=True,
                           env=cli_env, timeout=60)
    assert piped.returncode == 0 and piped.stderr == b""  # not a terminal: silent
