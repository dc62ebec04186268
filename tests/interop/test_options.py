"""The shared CLI option groups: key order, URL parsing, credentials, key building."""
from __future__ import annotations

import argparse

import pytest

from ossencfs.cli.options import (add_connection_options, add_key_options, build_keyring,
                                  build_masters, build_store, optional_keyring, parse_oss_url)
from ossencfs.errors import KeyFileError, OssEncError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_connection_options(p)
    add_key_options(p)
    return p


def test_parse_oss_url():
    assert parse_oss_url("oss://b-1/a/b.txt") == ("b-1", "a/b.txt")
    assert parse_oss_url("oss://b-1/dir/") == ("b-1", "dir/")
    assert parse_oss_url("oss://b-1") == ("b-1", "")
    for bad in ("s3://b/k", "/local/path", "oss:///k"):
        with pytest.raises(OssEncError):
            parse_oss_url(bad)


def test_first_key_given_writes_all_read(rsa_key_path, second_rsa_key_path):
    args = parser().parse_args(["--rsa-key", second_rsa_key_path, "--rsa-key", rsa_key_path])
    ring = build_keyring(args)
    from ossencfs.envelope.keys import RsaMasterKey
    expected = [RsaMasterKey.from_pem_file(p).name for p in (second_rsa_key_path, rsa_key_path)]
    assert [m.name for m in build_masters(args)] == expected
    assert ring.writer.name == expected[0]
    args = parser().parse_args(["--kms-key", "cmk-1", "--rsa-key", rsa_key_path])
    assert args.key_order == [("kms_key", "cmk-1", None), ("rsa_key", rsa_key_path, None)]


def test_key_and_credential_errors(monkeypatch, tmp_path):
    for var in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN", "OSS_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    args = parser().parse_args([])
    assert optional_keyring(args) is None
    with pytest.raises(KeyFileError):
        build_keyring(args)
    with pytest.raises(OssEncError, match="endpoint"):
        build_store(args, "bucket")
    args = parser().parse_args(["--endpoint", "http://127.0.0.1:1"])
    with pytest.raises(OssEncError, match="OSS_ACCESS_KEY_ID"):
        build_store(args, "bucket")
    with pytest.raises(KeyFileError):
        build_keyring(parser().parse_args(["--rsa-key", str(tmp_path / "missing.pem")]))
    with pytest.raises(OssEncError, match="kms-region"):
        build_keyring(parser().parse_args(["--kms-key", "cmk"]))
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", "AK")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "SK")
    with pytest.raises(OssEncError, match="region"):
        build_store(parser().parse_args(["--endpoint", "http://127.0.0.1:1",
                                         "--auth-version", "v4"]), "bucket")
    store = build_store(parser().parse_args(["--endpoint", "http://127.0.0.1:1",
                                             "--connections", "5"]), "bucket")
    assert store.name == "bucket" and store.concurrency == 5


def test_encrypted_rsa_key_with_passphrase_file(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "enc.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"pw 1")))
    (tmp_path / "pass").write_text("pw 1\n")
    ring = build_keyring(parser().parse_args(["--rsa-key", str(pem), "--rsa-passphrase-file",
                                              str(tmp_path / "pass")]))
    assert ring.writer.name.startswith("rsa:")
    (tmp_path / "wrong").write_text("nope\n")
    with pytest.raises(KeyFileError):
        build_keyring(parser().parse_args(["--rsa-key", str(pem), "--rsa-passphrase-file",
                                           str(tmp_path / "wrong")]))
