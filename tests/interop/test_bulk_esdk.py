"""``ossencfs verify`` classifies Encryption SDK objects (the SDK-made vectors of
tests/fixtures/esdk/, both layouts) beside plain ones; ``rotate`` and ``migrate`` leave them alone."""
from __future__ import annotations

import base64
import json

from ossencfs.envelope import esdk
from tests import esdk_build as eb
from tests.conftest import BUCKET

URL = f"oss://{BUCKET}/"
DAMAGED = ["header damaged"]


def _records(proc) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, proc.stdout.decode().splitlines())}


def _java_with_header(name: str, edit) -> tuple[bytes, dict[str, str]]:
    """A Java-layout vector whose DER CipherHeader ``edit(bytearray)`` changed."""
    body, meta, _ = eb.vector(name)
    hdr = bytearray(base64.b64decode(meta[esdk.H_HEADER]))
    edit(hdr)
    return body, dict(meta, **{esdk.H_HEADER: base64.b64encode(bytes(hdr)).decode()})


def _flip(hdr: bytearray, at: int) -> None:
    hdr[at] ^= 1


def _bad_alg(hdr: bytearray) -> None:
    hdr[9] = 42


def test_verify_classifies_esdk_objects(run_cli, esdk_emulator, oss2_bucket):
    emu = esdk_emulator
    eb.upload_vectors(oss2_bucket, "e/")
    oss2_bucket.put_object("e/plain.txt", b"just text\n" * 10)
    # tampered GCM tags: the Python layout's last bytes, the Java layout's metadata
    eb.upload_vectors(oss2_bucket, "t/", ["python-gcm256-100k-ctx", "java-gcm256-100k"])
    eb.tamper(oss2_bucket, "t/python-gcm256-100k-ctx", -3)
    tag = bytearray(base64.b64decode(eb.vector("java-gcm256-100k")[1][
        "x-oss-meta-x-oss-meta-authTag"]))
    tag[0] ^= 1
    eb.tamper(oss2_bucket, "t/java-gcm256-100k", None,
              {"x-oss-meta-x-oss-meta-authTag": base64.b64encode(bytes(tag)).decode()})
    # damaged headers: unknown algorithm id, a flipped header auth tag byte, a cut DER message
    body, meta = _java_with_header("java-gcm256-100k", _bad_alg)
    oss2_bucket.put_object("bad/alg", body, headers=meta)
    body, meta = _java_with_header("java-gcm256-100k", lambda h: _flip(h, -1))
    oss2_bucket.put_object("bad/headertag", body, headers=meta)
    oss2_bucket.put_object("bad/truncated", eb.vector("python-gcm256-1b")[0][:-5])
    # a CMK KMS refuses (disabled)
    body, meta = eb.make_region_object(emu._kms, eb.REGION, b"refused" * 100, {}, java=True)
    oss2_bucket.put_object("no/refused", body, headers=meta)
    refused = esdk.parse_header(base64.b64decode(meta[esdk.H_HEADER])).data_keys[0].key_arn
    emu._kms.disable_key(refused.rsplit("/", 1)[1])

    opts = ["--kms-endpoint", f"{eb.REGION}={emu.kms_endpoint}", "--json", "--no-progress"]
    proc = run_cli("verify", URL, *opts)
    assert proc.returncode == 1, proc.stderr
    recs = _records(proc)
    for name in eb.vector_names():
        _, _, entry = eb.vector(name)
        got = recs["e/" + name]
        assert got["kind"] == "esdk" and got["opens"] and got["problems"] == [], got
        assert got["layout"] == entry["layout"] and got["algorithm"] == entry["algorithm"], got
        assert got["cmk_arn"] == eb.ARN and got["kms_region"] == eb.REGION, got
        assert got["master"] == f"kms:{eb.ARN}", got
        assert got["size"] == entry["body_size"] and got["plain_size"] == entry["plain_size"]
    assert recs["e/plain.txt"]["kind"] == "plain" and recs["e/plain.txt"]["opens"]
    for key in ("t/python-gcm256-100k-ctx", "t/java-gcm256-100k"):
        assert recs[key]["kind"] == "esdk" and recs[key]["opens"], recs[key]  # tag unchecked
    for key in ("bad/alg", "bad/headertag", "bad/truncated"):
        assert recs[key]["kind"] == "esdk" and recs[key]["problems"] == DAMAGED, recs[key]
        assert not recs[key]["opens"]
    assert "unknown ESDK algorithm id 42" in recs["bad/alg"]["detail"]
    assert "header auth tag" in recs["bad/headertag"]["detail"]
    assert recs["bad/alg"]["layout"] == "java" and recs["bad/truncated"]["layout"] == "python"
    got = recs["no/refused"]
    assert got["kind"] == "esdk" and got["cmk_arn"] == refused and not got["opens"], got
    assert got["problems"] == ["key unavailable"] and "disabled" in got["detail"], got
    assert got["master"] is None
    err = proc.stderr.decode()
    assert f"kms:{eb.ARN}" in err and "(not opened)" in err

    # --deep: a full verified decryption; only the tampered tags fail
    proc = run_cli("verify", URL + "e/", "--deep", *opts)
    assert proc.returncode == 0, proc.stderr
    assert all(r["opens"] for r in _records(proc).values())
    proc = run_cli("verify", URL + "t/", "--deep", *opts)
    assert proc.returncode == 1, proc.stderr
    for key, rec in _records(proc).items():
        assert rec["problems"] == ["integrity check failed"] and not rec["opens"], rec
        assert "tag mismatch" in rec["detail"]

    # without KMS endpoints: the public KMS is never asked in tests, so no region is usable;
    # a prefix of only plain objects still passes
    proc = run_cli("verify", URL + "e/plain", "--no-progress")
    assert proc.returncode == 0, proc.stderr


def test_rotate_and_migrate_skip_esdk_objects(run_cli, esdk_emulator, oss2_bucket,
                                              rsa_key_path, second_rsa_key_path):
    eb.upload_vectors(oss2_bucket, "e/")
    oss2_bucket.put_object("e/plain.txt", b"just text\n" * 10)
    names = ["e/" + n for n in eb.vector_names()]
    before = {k: oss2_bucket.head_object(k).etag for k in names}
    endpoint = ["--kms-endpoint", f"{eb.REGION}={esdk_emulator.kms_endpoint}", "--no-progress"]
    proc = run_cli("migrate", URL, "--rsa-key", rsa_key_path, *endpoint)
    assert proc.returncode == 0, proc.stderr
    assert f"esdk object (not rewritten): {len(names)}".encode() in proc.stderr, proc.stderr
    proc = run_cli("rotate", URL, "--rsa-key", rsa_key_path, "--to-rsa-key",
                   second_rsa_key_path, *endpoint)
    assert proc.returncode == 0, proc.stderr
    assert f"esdk object (not re-wrapped): {len(names)}".encode() in proc.stderr, proc.stderr
    assert {k: oss2_bucket.head_object(k).etag for k in names} == before
    proc = run_cli("verify", URL, "--rsa-key", second_rsa_key_path, "--json", *endpoint)
    recs = _records(proc)
    assert recs["e/plain.txt"]["kind"] == "cse"         # migrated, then rotated
    assert all(recs[k]["kind"] == "esdk" and recs[k]["opens"] for k in names)
