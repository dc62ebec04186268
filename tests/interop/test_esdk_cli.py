"""Encryption SDK objects (tests/fixtures/esdk/, made by the SDK's own Python code) read by
``ossencfs cat``/``cp`` beside OSS-SDK and plain objects; tampering; CMKs in two regions."""
from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

from ossencfs.emulator.kms import KmsServer
from ossencfs.envelope import esdk
from tests import esdk_build as eb
from tests.conftest import AK, BUCKET, KMS_REGION, SK

URL = f"oss://{BUCKET}/"


@pytest.fixture
def emulator(esdk_emulator):
    return esdk_emulator


def esdk_args(emulator, *extra: str) -> list[str]:
    """Reading ESDK objects needs no --kms-key: the region's endpoint is enough."""
    return ["--kms-endpoint", f"{eb.REGION}={emulator.kms_endpoint}", *extra]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_cat_and_cp_read_every_vector_beside_oss_sdk_and_plain(run_cli, emulator, oss2_bucket,
                                                               tmp_path):
    want = eb.upload_vectors(oss2_bucket, "mix/")
    oss2_bucket.put_object("mix/plain.txt", b"just text\n" * 50)
    cmk = emulator._kms.create_key()
    oss_sdk = os.urandom(5000)
    (tmp_path / "src").write_bytes(oss_sdk)
    kms = ["--kms-key", cmk, "--kms-region", KMS_REGION, "--kms-endpoint", emulator.kms_endpoint]
    assert run_cli("cp", str(tmp_path / "src"), URL + "mix/oss-sdk", *kms).returncode == 0
    args = esdk_args(emulator, *kms)
    for key, digest in want.items():
        proc = run_cli("cat", URL + key, *args)
        assert proc.returncode == 0, proc.stderr
        assert sha(proc.stdout) == digest, key
    assert run_cli("cat", URL + "mix/plain.txt", *args).stdout == b"just text\n" * 50
    assert run_cli("cat", URL + "mix/oss-sdk", *args).stdout == oss_sdk
    out = tmp_path / "down"
    assert run_cli("cp", "-r", URL + "mix/", str(out), *args).returncode == 0
    for key, digest in want.items():
        assert sha((out / key[4:]).read_bytes()) == digest


@pytest.mark.parametrize("name", ["python-gcm256-100k-ctx", "java-gcm256-100k",
                                  "python-ctr256-100k5-ctx"])
def test_cat_ranges(run_cli, emulator, oss2_bucket, name):
    eb.upload_vectors(oss2_bucket, "r/", [name])
    whole = run_cli("cat", URL + "r/" + name, *esdk_args(emulator)).stdout
    for off, n in ((15, 17), (102390, 100)):
        proc = run_cli("cat", URL + "r/" + name, "--offset", str(off), "--length", str(n),
                       *esdk_args(emulator))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == whole[off:off + n]


@pytest.mark.parametrize("name,at", [("python-gcm256-100k-ctx", 5000),     # body byte
                                     ("python-gcm256-100k-ctx", -3),       # tag byte
                                     ("java-gcm256-100k", 77777),
                                     ("java-gcm256-0b-ctx", None)])        # tag in metadata
def test_tampered_gcm_object_fails_cat_and_cp(run_cli, emulator, oss2_bucket, tmp_path, name, at):
    eb.upload_vectors(oss2_bucket, "t/", [name])
    meta = None
    if at is None:
        tag = bytearray(base64.b64decode(eb.vector(name)[1]["x-oss-meta-x-oss-meta-authTag"]))
        tag[0] ^= 1
        meta = {"x-oss-meta-x-oss-meta-authTag": base64.b64encode(bytes(tag)).decode()}
    eb.tamper(oss2_bucket, "t/" + name, at, meta)
    size = eb.vector(name)[2]["plain_size"]
    proc = run_cli("cat", URL + "t/" + name, *esdk_args(emulator))
    assert proc.returncode != 0
    assert b"t/" + name.encode() in proc.stderr and b"tag mismatch" in proc.stderr
    assert len(proc.stdout) < size or size == 0     # the last bytes are never written
    # cat verifies even a sub-range
    proc = run_cli("cat", URL + "t/" + name, "--length", "10", *esdk_args(emulator))
    assert proc.returncode != 0
    proc = run_cli("cp", URL + "t/" + name, str(tmp_path / "x"), *esdk_args(emulator))
    assert proc.returncode != 0 and not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x.")]


def test_bad_input_gives_clear_messages(run_cli, emulator, oss2_bucket):
    body, _, _ = eb.vector("python-gcm256-1b")
    oss2_bucket.put_object("bad/truncated", body[:-5])
    _, jmeta, _ = eb.vector("java-gcm256-100k")
    hdr = bytearray(base64.b64decode(jmeta[esdk.H_HEADER]))
    hdr[9] = 42                                            # algorithm id
    oss2_bucket.put_object("bad/alg", b"x" * 102400,
                           headers=dict(jmeta, **{esdk.H_HEADER: base64.b64encode(bytes(hdr)).decode()}))
    proc = run_cli("cat", URL + "bad/truncated", *esdk_args(emulator))
    assert proc.returncode != 0 and b"bad/truncated" in proc.stderr
    assert b"broken ESDK message" in proc.stderr and proc.stdout == b""
    proc = run_cli("cat", URL + "bad/alg", *esdk_args(emulator))
    assert proc.returncode != 0 and b"unknown ESDK algorithm id 42" in proc.stderr
    # a CMK nobody may use: disabled in KMS
    eb.upload_vectors(oss2_bucket, "ok/", ["java-gcm256-100k"])
    emulator._kms.disable_key(eb.KEY_ID)
    proc = run_cli("cat", URL + "ok/java-gcm256-100k", *esdk_args(emulator))
    assert proc.returncode != 0 and b"disabled" in proc.stderr
    assert b"ok/java-gcm256-100k" in proc.stderr


def test_cmks_in_two_regions_and_arn_kms_key(run_cli, emulator, oss2_bucket, tmp_path):
    """One command reads ESDK objects whose CMKs live in two regions (two KMS servers), and an
    OSS-SDK object whose --kms-key is an ARN of the second region (no --kms-region)."""
    with KmsServer(str(tmp_path / "kms2"), credentials={AK: SK}, region="local-2") as second:
        eb.upload_vectors(oss2_bucket, "reg/", ["python-gcm256-100k-ctx"])
        plain = os.urandom(70_001)
        body, meta = eb.make_region_object(second, "local-2", plain, {"dept": "x"})
        oss2_bucket.put_object("reg/second", body, headers=meta)
        cbc_plain = os.urandom(3000)
        body, meta = eb.make_region_object(second, "local-2", cbc_plain, {}, alg_id=6, java=True)
        oss2_bucket.put_object("reg/second-cbc", body, headers=meta)
        endpoints = ["--kms-endpoint", f"{eb.REGION}={emulator.kms_endpoint}",
                     "--kms-endpoint", f"local-2={second.endpoint}"]
        assert sha(run_cli("cat", URL + "reg/python-gcm256-100k-ctx", *endpoints).stdout) == \
            eb.plain_sha("python-gcm256-100k-ctx")
        assert run_cli("cat", URL + "reg/second", *endpoints).stdout == plain
        proc = run_cli("cat", URL + "reg/second-cbc", *endpoints)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == cbc_plain
        proc = run_cli("cat", URL + "reg/second-cbc", "--offset", "17", "--length", "40",
                       *endpoints)
        assert proc.stdout == cbc_plain[17:57]
        # the second region without its endpoint would be the public one: refused here by
        # pointing it at the first region's KMS, which does not know the CMK
        wrong = ["--kms-endpoint", f"local-2={emulator.kms_endpoint}"]
        proc = run_cli("cat", URL + "reg/second", *wrong)
        assert proc.returncode != 0 and b"reg/second" in proc.stderr
        # OSS-SDK KMS object, CMK given by ARN in local-2
        cmk = second.create_key()
        arn = f"acs:kms:local-2:1234567890123456:key/{cmk}"
        data = os.urandom(4000)
        (tmp_path / "f").write_bytes(data)
        proc = run_cli("cp", str(tmp_path / "f"), URL + "reg/oss-sdk", "--kms-key", arn, *endpoints)
        assert proc.returncode == 0, proc.stderr
        proc = run_cli("cat", URL + "reg/oss-sdk", "--kms-key", arn, *endpoints)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == data
        assert json.loads(json.dumps(second.calls))["Decrypt"] >= 2
