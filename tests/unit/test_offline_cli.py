"""The offline CLI: keygen, encrypt, decrypt — success paths and every failure path.

Failures must exit 1 with one line on stderr and leave no OUTPUT (nor temp file) behind.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import oss2
import pytest

from ossencfs.cli import main
from ossencfs.cli.offline import ENV_PASSPHRASE, _AtomicOutput
from ossencfs.envelope import format as fmt
from ossencfs.envelope.keys import RsaMasterKey
from oss2.models import ContentCryptoMaterial

SDK = Path(__file__).resolve().parent.parent / "fixtures" / "sdk"
REPO = Path(__file__).resolve().parents[2]
SDK_KEY = str(SDK / "rsa_test_private.pem")


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_failed(rc: int, err: str, output: Path, match: str) -> None:
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ossencfs: error: ") and match in lines[0], lines[0]
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.endswith(".part")]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    assert main(["keygen", str(d / "main"), "--bits", "2048"]) == 0
    assert main(["keygen", str(d / "other"), "--bits", "2048"]) == 0
    return d


@pytest.fixture
def encrypted(keys, tmp_path):
    """A 2.5 MiB file (more than one I/O chunk) encrypted via the CLI."""
    plain = os.urandom(5 * (1 << 19) + 3)
    src = tmp_path / "plain.bin"
    src.write_bytes(plain)
    assert main(["encrypt", "--rsa-key", str(keys / "main.pub"), "--headers-out",
                 str(tmp_path / "h.json"), str(src), str(tmp_path / "enc.bin")]) == 0
    return plain, tmp_path / "enc.bin", tmp_path / "h.json"


# -- keygen -------------------------------------------------------------------------------
def test_keygen_files_modes_and_formats(keys, capsys):
    priv, pub = keys / "main", keys / "main.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    a, b = RsaMasterKey.from_pem_file(str(priv)), RsaMasterKey.from_pem_file(str(pub))
    assert a.name == b.name and a.key_size == 2048 and a.has_private and not b.has_private


def test_keygen_refuses_to_overwrite(tmp_path, capsys):
    k = tmp_path / "k"
    k.write_text("precious")
    rc, _, err = run(capsys, "keygen", k, "--bits", "2048")
    assert rc == 1 and "refusing to overwrite" in err and k.read_text() == "precious"
    assert not (tmp_path / "k.pub").exists()
    j = tmp_path / "j"
    (tmp_path / "j.pub").write_text("precious")
    rc, _, err = run(capsys, "keygen", j, "--bits", "2048")
    assert rc == 1 and "j.pub" in err and not j.exists()
    assert (tmp_path / "j.pub").read_text() == "precious"


def test_keygen_bits_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["keygen", str(tmp_path / "k"), "--bits", "1024"])
    assert e.value.code == 2 and not (tmp_path / "k").exists()


def test_passphrase_protected_key(tmp_path, capsys, monkeypatch):
    pw = tmp_path / "pw.txt"
    pw.write_text("correct horse\n")
    k = tmp_path / "k"
    assert run(capsys, "keygen", k, "--bits", "2048", "--passphrase-file", pw)[0] == 0
    assert b"ENCRYPTED" in k.read_bytes()
    src = tmp_path / "in"
    src.write_bytes(b"hello world")
    out = tmp_path / "out"
    assert run(capsys, "encrypt", "--rsa-key", f"{k}.pub", "--headers-out", tmp_path / "h.json",
               src, tmp_path / "enc")[0] == 0
    rc, _, err = run(capsys, "decrypt", "--rsa-key", k, "--headers", tmp_path / "h.json",
                     tmp_path / "enc", out)
    assert_failed(rc, err, out, "passphrase")
    bad = tmp_path / "bad.txt"
    bad.write_text("wrong\n")
    rc, _, err = run(capsys, "decrypt", "--rsa-key", k, "--passphrase-file", bad,
                     "--headers", tmp_path / "h.json", tmp_path / "enc", out)
    assert_failed(rc, err, out, "wrong passphrase")
    assert "correct horse" not in err
    assert run(capsys, "decrypt", "--rsa-key", k, "--passphrase-file", pw, "--headers",
               tmp_path / "h.json", tmp_path / "enc", out)[0] == 0
    assert out.read_bytes() == b"hello world"
    out.unlink()
    monkeypatch.setenv(ENV_PASSPHRASE, "correct horse")
    assert run(capsys, "decrypt", "--rsa-key", k, "--headers", tmp_path / "h.json",
               tmp_path / "enc", out)[0] == 0
    assert out.read_bytes() == b"hello world"


# -- encrypt / decrypt success ------------------------------------------------------------
def test_roundtrip_large_and_oss2_reads_it(keys, encrypted, tmp_path, capsys):
    plain, enc, headers_path = encrypted
    headers = json.loads(headers_path.read_text())
    assert set(headers) == {fmt.H_KEY, fmt.H_START, fmt.H_CEK_ALG, fmt.H_WRAP_ALG}
    assert headers[fmt.H_WRAP_ALG] == fmt.WRAP_RSA_PKCS1
    cipher = enc.read_bytes()
    assert len(cipher) == len(plain) and cipher != plain
    out = tmp_path / "dec.bin"
    rc, stdout, err = run(capsys, "decrypt", "--rsa-key", keys / "main", "--headers",
                          headers_path, enc, out)
    assert (rc, stdout, err) == (0, "", "")
    assert out.read_bytes() == plain
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # oss2 (the oracle) decrypts the CLI's output with the same key
    provider = oss2.RsaProvider({"private_key": (keys / "main").read_text()})
    material = ContentCryptoMaterial(provider.cipher, provider.wrap_alg)
    material.from_object_meta(headers)
    cipher_obj = material.cipher
    cipher_obj.initialize(provider.decrypt_encrypted_key(material.encrypted_key),
                          provider.decrypt_encrypted_iv(material.encrypted_iv))
    assert cipher_obj.decrypt(cipher) == plain


@pytest.mark.parametrize("offset", [1, 16, 1_048_579])
def test_decrypt_ranged_download(keys, encrypted, tmp_path, capsys, offset):
    plain, enc, headers_path = encrypted
    part = tmp_path / "part.bin"
    part.write_bytes(enc.read_bytes()[offset:])
    out = tmp_path / "dec.bin"
    assert run(capsys, "decrypt", "--rsa-key", keys / "main", "--headers", headers_path,
               "--offset", offset, part, out)[0] == 0
    assert out.read_bytes() == plain[offset:]


@pytest.mark.parametrize("size", [0, 1, 17])
def test_small_sizes_and_private_key_for_encrypt(keys, tmp_path, capsys, size):
    plain = os.urandom(size)
    src = tmp_path / "in"
    src.write_bytes(plain)
    enc, h, out = tmp_path / "enc", tmp_path / "h.json", tmp_path / "out"
    assert run(capsys, "encrypt", "--rsa-key", keys / "main", "--headers-out", h, src, enc)[0] == 0
    assert enc.stat().st_size == size
    assert run(capsys, "decrypt", "--rsa-key", keys / "main", "--headers", h, enc, out)[0] == 0
    assert out.read_bytes() == plain


def test_encrypt_with_matdesc(keys, tmp_path, capsys):
    src = tmp_path / "in"
    src.write_bytes(b"x" * 40)
    h = tmp_path / "h.json"
    assert run(capsys, "encrypt", "--rsa-key", keys / "main.pub", "--matdesc", '{"b":"2","a":"1"}',
               "--headers-out", h, src, tmp_path / "enc")[0] == 0
    assert json.loads(h.read_text())[fmt.H_MATDESC] == '{"a":"1","b":"2"}'
    assert run(capsys, "decrypt", "--rsa-key", keys / "main", "--headers", h, tmp_path / "enc",
               tmp_path / "out")[0] == 0
    assert (tmp_path / "out").read_bytes() == b"x" * 40
    rc, _, err = run(capsys, "encrypt", "--rsa-key", keys / "main.pub", "--matdesc", "[1]",
                     "--headers-out", tmp_path / "h2.json", src, tmp_path / "enc2")
    assert_failed(rc, err, tmp_path / "enc2", "matdesc")
    assert not (tmp_path / "h2.json").exists()


def test_decrypt_sdk_vectors(tmp_path, capsys):
    out = tmp_path / "go.jpg"
    assert run(capsys, "decrypt", "--rsa-key", SDK_KEY, "--headers",
               SDK / "encrypted_go_example_meta.json", SDK / "encrypted_go_example.jpg", out)[0] == 0
    assert out.read_bytes() == (SDK / "example.jpg").read_bytes()
    out = tmp_path / "legacy"
    assert run(capsys, "decrypt", "--rsa-key", SDK_KEY, "--headers",
               SDK / "deprecated_encrypted_1MB_a_meta_rsa.json",
               SDK / "deprecated_encrypted_1MB_a_rsa", out)[0] == 0
    assert out.read_bytes() == b"a" * (1 << 20)
    part = tmp_path / "part"
    part.write_bytes((SDK / "encrypted_go_example.jpg").read_bytes()[1001:])
    out = tmp_path / "go-tail"
    assert run(capsys, "decrypt", "--rsa-key", SDK_KEY, "--headers",
               SDK / "encrypted_go_example_meta.json", "--offset", "1001", part, out)[0] == 0
    assert out.read_bytes() == (SDK / "example.jpg").read_bytes()[1001:]


def test_decrypt_tries_every_key(keys, encrypted, tmp_path, capsys):
    plain, enc, h = encrypted
    out = tmp_path / "out"
    assert run(capsys, "decrypt", "--rsa-key", keys / "other", "--rsa-key", keys / "main.pub",
               "--rsa-key", keys / "main", "--headers", h, enc, out)[0] == 0
    assert out.read_bytes() == plain


# -- failures -----------------------------------------------------------------------------
def _edit_headers(src: Path, dst: Path, **changes) -> Path:
    headers = json.loads(src.read_text())
    for name, value in changes.items():
        name = fmt.V2 + name.replace("_", "-")
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value(headers) if callable(value) else value
    dst.write_text(json.dumps(headers))
    return dst


def test_wrong_key(keys, encrypted, tmp_path, capsys):
    _, enc, h = encrypted
    out = tmp_path / "out"
    rc, _, err = run(capsys, "decrypt", "--rsa-key", keys / "other", "--headers", h, enc, out)
    assert_failed(rc, err, out, "wrong key")
    rc, _, err = run(capsys, "decrypt", "--rsa-key", SDK_KEY, "--headers", h, enc, out)
    assert_failed(rc, err, out, "wrong key")


def test_public_key_cannot_decrypt(keys, encrypted, tmp_path, capsys):
    _, enc, h = encrypted
    out = tmp_path / "out"
    rc, _, err = run(capsys, "decrypt", "--rsa-key", keys / "main.pub", "--headers", h, enc, out)
    assert_failed(rc, err, out, "private key")


@pytest.mark.parametrize("changes,match", [
    ({"key": None}, "missing x-oss-meta-client-side-encryption-key"),
    ({"start": None}, "missing x-oss-meta-client-side-encryption-start"),
    ({"wrap_alg": None}, "missing"),
    ({"cek_alg": "AES/GCM/NoPadding"}, "content cipher"),
    ({"key": "%%%not-base64"}, "base64"),
    ({"key": lambda h: h[fmt.H_START], "start": lambda h: h[fmt.H_KEY]}, "wrong key"),
    ({"wrap_alg": fmt.WRAP_RSA_OAEP}, "wrong key"),
    ({"wrap_alg": fmt.WRAP_KMS}, "no configured master key"),
    ({"data_size": "ten"}, "integer"),
])
def test_missing_or_tampered_headers(keys, encrypted, tmp_path, capsys, changes, match):
    _, enc, h = encrypted
    bad = _edit_headers(h, tmp_path / "bad.json", **changes)
    out = tmp_path / "out"
    rc, _, err = run(capsys, "decrypt", "--rsa-key", keys / "main", "--headers", bad, enc, out)
    assert_failed(rc, err, out, match)


def test_headers_file_problems(keys, encrypted, tmp_path, capsys):
    _, enc, _ = encrypted
    out = tmp_path / "out"
    cases = [
        (tmp_path / "missing.json", None, "cannot read headers file"),
        (tmp_path / "bad.json", "{not json", "not valid JSON"),
        (tmp_path / "list.json", "[]", "JSON object"),
        (tmp_path / "plain.json", '{"content-type": "text/plain"}', "no client-side encryption"),
    ]
    for path, text, match in cases:
        if text is not None:
            path.write_text(text)
        rc, _, err = run(capsys, "decrypt", "--rsa-key", keys / "main", "--headers", path, enc, out)
        assert_failed(rc, err, out, match)
        assert str(path) in err


def test_unreadable_key_files(encrypted, tmp_path, capsys):
    _, enc, h = encrypted
    out = tmp_path / "out"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    for key, match in [(tmp_path / "nokey.pem", "cannot read key file"),
                       (garbage, "not a PEM RSA key"), (tmp_path, "cannot read key file")]:
        rc, _, err = run(capsys, "decrypt", "--rsa-key", key, "--headers", h, enc, out)
        assert_failed(rc, err, out, match)
        assert str(key) in err
        rc, _, err = run(capsys, "encrypt", "--rsa-key", key, "--headers-out", tmp_path / "ho.json",
                         enc, out)
        assert_failed(rc, err, out, match)
        assert not (tmp_path / "ho.json").exists()


def test_missing_input_and_existing_output_kept(keys, encrypted, tmp_path, capsys):
    _, enc, h = encrypted
    out = tmp_path / "out"
    rc, _, err = run(capsys, "decrypt", "--rsa-key", keys / "main", "--headers", h,
                     tmp_path / "nothing", out)
    assert_failed(rc, err, out, "cannot open input")
    out.write_bytes(b"old contents")
    rc, _, err = run(capsys, "decrypt", "--rsa-key", keys / "other", "--headers", h, enc, out)
    assert rc == 1 and "wrong key" in err
    assert out.read_bytes() == b"old contents"
    rc, _, err = run(capsys, "encrypt", "--rsa-key", keys / "main", "--headers-out", tmp_path / "x.json",
                     tmp_path / "nothing", tmp_path / "enc-out")
    assert_failed(rc, err, tmp_path / "enc-out", "cannot open input")
    assert not (tmp_path / "x.json").exists()
    rc, _, err = run(capsys, "decrypt", "--rsa-key", keys / "main", "--headers", h, enc, tmp_path)
    assert rc == 1 and "is a directory" in err


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "t"
    with pytest.raises(RuntimeError):
        with _AtomicOutput(str(target), 0o600) as out:
            out.write(b"partial")
            raise RuntimeError("mid-stream failure")
    assert list(tmp_path.iterdir()) == []
    with _AtomicOutput(str(target), 0o640) as out:
        out.write(b"done")
        out.commit()
    assert target.read_bytes() == b"done" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert list(tmp_path.iterdir()) == [target]


# -- real process, pipes ------------------------------------------------------------------
def _cli(*argv, stdin: bytes = b""):
    return subprocess.run([sys.executable, "-m", "ossencfs", *map(str, argv)], input=stdin,
                          capture_output=True, cwd=REPO, timeout=120)


def test_pipes_stdin_stdout(keys, tmp_path):
    plain = os.urandom(300_001)
    h = tmp_path / "h.json"
    enc = _cli("encrypt", "--rsa-key", keys / "main.pub", "--headers-out", h, "-", "-", stdin=plain)
    assert enc.returncode == 0 and enc.stderr == b""
    assert len(enc.stdout) == len(plain)
    dec = _cli("decrypt", "--rsa-key", keys / "main", "--headers", h, "--offset", 77, "-", "-",
               stdin=enc.stdout[77:])
    assert dec.returncode == 0 and dec.stderr == b""
    assert dec.stdout == plain[77:]
    # a failure on the pipe path: exit 1, one line, nothing on stdout
    bad = _cli("decrypt", "--rsa-key", keys / "other", "--headers", h, "-", "-", stdin=enc.stdout)
    assert bad.returncode == 1 and bad.stdout == b""
    assert len(bad.stderr.decode().strip().splitlines()) == 1
    assert bad.stderr.startswith(b"ossencfs: error: ")


def test_a_closed_pipe_is_no_traceback(tmp_path):
    """``ossencfs status --json | head -c 10``: the reader may go away first (found by a new
    user: a BrokenPipeError traceback)."""
    import subprocess
    import sys
    r, w = os.pipe()
    os.close(r)                                   # every write to stdout fails with EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", "ossencfs", "status", "--json",
                            "--cache-dir", str(tmp_path)], stdout=w, stderr=subprocess.PIPE,
                           timeout=60)
    finally:
        os.close(w)
    assert b"Traceback" not in p.stderr, p.stderr.decode()
    assert p.returncode == 1
