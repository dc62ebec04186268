"""``ossencfs verify``, ``rotate`` and ``migrate`` on a bucket of every kind of object, with
oss2 CryptoBucket (RSA and KMS) as the oracle of what the SDK can read afterwards."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import oss2
import pytest

from tests.conftest import AK, BUCKET, HAVE_KMS, KMS_REGION, ROOT, SDK_FIXTURES, SK
from tests.interop.conftest import (PART, SMALL_MULTIPART, oss2_multipart, payload, pem,
                                   public_pem_of)

pytestmark = pytest.mark.skipif(not HAVE_KMS, reason="KMS modules not available")

URL = f"oss://{BUCKET}/"
CSE = "x-oss-meta-client-side-encryption-"


def kms_provider(kms_server, cmk: str) -> oss2.AliKMSProvider:
    p = oss2.AliKMSProvider(AK, SK, KMS_REGION, cmk)
    p.kms_client.add_endpoint(KMS_REGION, "kms", kms_server.endpoint)   # SPEC C.5
    p.kms_client.proxy = {"http": None, "https": None}
    return p


def kms_opts(kms_server) -> list[str]:
    return ["--kms-region", KMS_REGION, "--kms-endpoint", kms_server.endpoint]


def rsa_fp(path: str) -> str:
    from ossencfs.envelope.keys import RsaMasterKey
    return RsaMasterKey.from_pem_file(path).name


@pytest.fixture(scope="module")
def third_rsa_key_path(tmp_path_factory) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys3") / "third.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


def rsa_provider_of(path: str) -> oss2.RsaProvider:
    return oss2.RsaProvider(key_pair={"private_key": pem(path), "public_key": public_pem_of(path)})


class Mixed:
    """What was written: key -> plaintext, and key -> the classification verify must give."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.expect: dict[str, dict] = {}


@pytest.fixture
def mixed(emulator, run_cli, crypto_bucket, oss2_bucket, kms_server, rsa_key_path,
          second_rsa_key_path, third_rsa_key_path, tmp_path) -> Mixed:
    """A bucket with objects of oss2 (RSA A, RSA B, KMS; single and multipart), of
    ``ossencfs cp`` (RSA A; KMS java flavour), the legacy RSA vector, plain objects, and
    damaged ones."""
    m = Mixed()
    m.cmk = kms_server.create_key(description="bulk")
    a, b = rsa_fp(rsa_key_path), rsa_fp(second_rsa_key_path)
    cb_a = crypto_bucket(rsa_provider_of(rsa_key_path))
    cb_b = crypto_bucket(rsa_provider_of(second_rsa_key_path))
    cb_c = crypto_bucket(rsa_provider_of(third_rsa_key_path))
    cb_k = crypto_bucket(kms_provider(kms_server, m.cmk))
    pkcs1 = "RSA/NONE/PKCS1Padding"

    def put(cb, key, data, expect, headers=None):
        cb.put_object(key, data, headers=headers)
        m.data[key], m.expect[key] = data, expect

    put(cb_a, "a/single", payload(5000, 1), dict(kind="cse", wrap_alg=pkcs1, master=a),
        headers={"x-oss-meta-owner": "alice", "x-oss-meta-mode": "33188"})
    m.data["a/multi"] = payload(2 * PART + 77, 2)
    oss2_multipart(cb_a, "a/multi", m.data["a/multi"], PART)
    m.expect["a/multi"] = dict(kind="cse", wrap_alg=pkcs1, master=a)
    put(cb_b, "b/single", payload(3000, 3), dict(kind="cse", wrap_alg=pkcs1, master=b))
    put(cb_c, "c/single", payload(3000, 4), dict(kind="cse", wrap_alg=pkcs1, master=None,
                                                 problems=["no configured key"]))
    put(cb_k, "k/single", payload(4000, 5),
        dict(kind="cse", wrap_alg="KMS/ALICLOUD", kms_flavour="oss2", master=f"kms:{m.cmk}"))
    m.data["k/multi"] = payload(2 * PART + 5, 6)
    oss2_multipart(cb_k, "k/multi", m.data["k/multi"], PART)
    m.expect["k/multi"] = dict(kind="cse", wrap_alg="KMS/ALICLOUD", kms_flavour="oss2",
                               master=f"kms:{m.cmk}")
    for name, data, opts in (("cp/single", payload(6000, 7), ["--rsa-key", rsa_key_path]),
                             ("cp/multi", payload(3 * PART + 1, 8),
                              ["--rsa-key", rsa_key_path, *SMALL_MULTIPART]),
                             ("cp/kjava", payload(2500, 9),
                              ["--kms-key", m.cmk, *kms_opts(kms_server),
                               "--kms-flavour", "java"])):
        src = tmp_path / name.replace("/", "_")
        src.write_bytes(data)
        proc = run_cli("cp", str(src), URL + name, *opts)
        assert proc.returncode == 0, proc.stderr
        m.data[name] = data
        m.expect[name] = dict(kind="cse", master=a) if "kjava" not in name else dict(
            kind="cse", wrap_alg="KMS/ALICLOUD", kms_flavour="java", master=f"kms:{m.cmk}")
    meta = json.loads((SDK_FIXTURES / "deprecated_encrypted_1MB_a_meta_rsa.json").read_text())
    oss2_bucket.put_object("legacy/rsa", (SDK_FIXTURES / "deprecated_encrypted_1MB_a_rsa")
                           .read_bytes(), headers=meta)
    m.data["legacy/rsa"] = b"a" * (1 << 20)
    m.expect["legacy/rsa"] = dict(kind="cse-legacy", wrap_alg="rsa", master=a)
    plain_headers = {"x-oss-meta-owner": "bob", "x-oss-meta-mode": "33261",
                     "x-oss-meta-mtime": "1700000000", "Content-Type": "text/plain"}
    put(oss2_bucket, "plain/one", payload(7000, 10), dict(kind="plain", master=None),
        headers=plain_headers)
    put(oss2_bucket, "plain/two", b"", dict(kind="plain", master=None))
    oss2_bucket.put_object("plain/dir/", b"")
    m.expect["plain/dir/"] = dict(kind="plain", master=None)
    # damaged: a key header that is not base64 (OSS checks presence only, SPEC D.13)
    put(oss2_bucket, "bad/header", b"x" * 100, dict(kind="cse", master=None,
                                                     problems=["header damaged"]),
        headers={CSE + "key": "!!not base64!!", CSE + "start": "AAAA",
                 CSE + "cek-alg": "AES/CTR/NoPadding", CSE + "wrap-alg": pkcs1})
    # opens, but its recorded plaintext length disagrees with the body
    cb_a.put_object("bad/size", payload(900, 11),
                    headers={"content-length": "900"})
    stored = oss2_bucket.get_object("bad/size")
    hdrs = {k: v for k, v in stored.headers.items() if k.lower().startswith("x-oss-meta-")}
    hdrs[CSE + "unencrypted-content-length"] = "901"
    oss2_bucket.put_object("bad/size", stored.read(), headers=hdrs)
    m.data["bad/size"] = payload(900, 11)
    m.expect["bad/size"] = dict(kind="cse", master=a, problems=["size mismatch"])
    # opens, but a flipped ciphertext byte no longer matches unencrypted-content-md5
    body = payload(3000, 12)
    cb_a.put_object("bad/md5", body, headers={
        "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()})
    stored = oss2_bucket.get_object("bad/md5")
    hdrs = {k: v for k, v in stored.headers.items() if k.lower().startswith("x-oss-meta-")}
    assert CSE + "unencrypted-content-md5" in hdrs
    cipher = bytearray(stored.read())
    cipher[1000] ^= 1
    oss2_bucket.put_object("bad/md5", bytes(cipher), headers=hdrs)
    m.expect["bad/md5"] = dict(kind="cse", master=a, problems=[])
    return m


def _records(proc) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, proc.stdout.decode().splitlines())}


def test_verify_classifies_every_object(run_cli, mixed, kms_server, rsa_key_path,
                                        second_rsa_key_path):
    keys = ["--rsa-key", rsa_key_path, "--rsa-key", second_rsa_key_path,
            "--kms-key", mixed.cmk, *kms_opts(kms_server)]
    proc = run_cli("verify", URL, *keys, "--json", "--no-progress")
    assert proc.returncode == 1, proc.stderr        # c/single and bad/header do not open
    recs = _records(proc)
    assert set(recs) == set(mixed.expect)
    for key, want in mixed.expect.items():
        got = recs[key]
        for field, value in want.items():
            if field == "problems":
                assert got["problems"] == value, (key, got)
            else:
                assert got[field] == value, (key, field, got)
        assert got["opens"] == (not set(got["problems"]) & {
            "no configured key", "header damaged", "size mismatch"}), key
    err = proc.stderr.decode()
    assert "header damaged" in err and "no configured key" in err and "size mismatch" in err
    for line in err.splitlines() + proc.stdout.decode().splitlines():
        assert "BEGIN" not in line and "PRIVATE" not in line

    # --deep reads every object: the flipped byte shows, the rest match their MD5
    proc = run_cli("verify", URL + "bad/", *keys, "--deep", "--json", "--no-progress")
    recs = _records(proc)
    assert recs["bad/md5"]["problems"] == ["md5 mismatch"] and not recs["bad/md5"]["opens"]
    assert recs["bad/size"]["problems"] == ["size mismatch"] and not recs["bad/size"]["opens"]
    proc = run_cli("verify", URL + "plain/", *keys, "--deep", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert b"3 MD5-checked" in proc.stderr          # single-PUT plain objects: the ETag

    # a prefix where every object opens: exit 0, and a table by key
    proc = run_cli("verify", URL + "a/", "--rsa-key", rsa_key_path, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert rsa_fp(rsa_key_path).encode() in proc.stderr


def test_names_with_newlines_stay_one_line(run_cli, oss2_bucket, rsa_key_path):
    """An object key may hold a newline or a terminal escape; every reported name is one line."""
    oss2_bucket.put_object("nl/evil\nossencfs: forged\x1b[2J", b"plain text, no key")
    oss2_bucket.put_object("nl/bad", b"x" * 16, headers={
        "x-oss-meta-client-side-encryption-key": "AAAA",
        "x-oss-meta-client-side-encryption-start": "AAAA",
        "x-oss-meta-client-side-encryption-cek-alg": "AES/CTR/NoPadding",
        "x-oss-meta-client-side-encryption-wrap-alg": "RSA/NONE/PKCS1Padding"})
    oss2_bucket.put_object("nl/bad\nsecond", b"x" * 16, headers={
        "x-oss-meta-client-side-encryption-key": "AAAA",
        "x-oss-meta-client-side-encryption-start": "AAAA",
        "x-oss-meta-client-side-encryption-cek-alg": "AES/CTR/NoPadding",
        "x-oss-meta-client-side-encryption-wrap-alg": "RSA/NONE/PKCS1Padding"})
    proc = run_cli("verify", URL + "nl/", "--rsa-key", rsa_key_path, "--no-progress")
    out = proc.stdout.decode()
    assert f"{URL}nl/bad\\nsecond:" in out, out
    assert not any(line.startswith("second") for line in out.splitlines()), out
    proc = run_cli("migrate", URL + "nl/", "--rsa-key", rsa_key_path, "--dry-run",
                   "--no-progress")
    out = proc.stdout.decode()
    assert "\x1b" not in out and "nl/evil\\nossencfs: forged\\x1b[2J" in out, out
    assert not any(line.startswith("ossencfs: forged") for line in out.splitlines()), out


def test_verify_shards_split_the_bucket(run_cli, mixed, rsa_key_path):
    seen: list[str] = []
    for i in (1, 2, 3):
        proc = run_cli("verify", URL, "--rsa-key", rsa_key_path, "--json", "--shard", f"{i}/3",
                       "--no-progress")
        seen += list(_records(proc))
    assert sorted(seen) == sorted(mixed.expect)


def _heads(oss2_bucket, keys) -> dict[str, dict]:
    out = {}
    for k in keys:
        h = oss2_bucket.head_object(k)
        out[k] = {"etag": h.etag, **{n.lower(): v for n, v in h.headers.items()
                                     if n.lower().startswith("x-oss-meta-")}}
    return out


def test_rotate_rsa_a_to_b(run_cli, mixed, crypto_bucket, oss2_bucket, emulator, rsa_key_path,
                           second_rsa_key_path, third_rsa_key_path, tmp_path):
    formerly_a = [k for k, e in mixed.expect.items() if e.get("master") == rsa_fp(rsa_key_path)]
    assert len(formerly_a) == 7
    others = [k for k in mixed.expect if k not in formerly_a]
    before = _heads(oss2_bucket, list(mixed.expect))

    proc = run_cli("rotate", URL, "--rsa-key", rsa_key_path, "--to-rsa-key", second_rsa_key_path,
                   "--dry-run", "--no-progress")
    assert proc.returncode == 1, proc.stderr        # bad/header cannot be rotated
    assert proc.stdout.decode().count("would rotate") == len(formerly_a)
    assert _heads(oss2_bucket, list(mixed.expect)) == before

    emulator.reset_stats()
    proc = run_cli("rotate", URL, "--rsa-key", rsa_key_path, "--to-rsa-key", second_rsa_key_path,
                   "--no-progress", "--part-size", str(PART), "--multipart-threshold",
                   str(2 * PART))
    assert proc.returncode == 1
    fails = [ln for ln in proc.stderr.decode().splitlines() if ln.startswith("ossencfs: rotate:")
             and "oss://" in ln]
    assert len(fails) == 1 and fails[0].startswith(
        f"ossencfs: rotate: {URL}bad/header: header damaged"), fails
    after = _heads(oss2_bucket, list(mixed.expect))
    for k in others:
        assert after[k] == before[k], k             # other keys' objects untouched
    cb_b = crypto_bucket(rsa_provider_of(second_rsa_key_path))
    cb_a = crypto_bucket(rsa_provider_of(rsa_key_path))
    for k in formerly_a:
        if k != "bad/md5":
            assert cb_b.get_object(k).read() == mixed.data[k], k
        with pytest.raises(Exception):
            cb_a.get_object(k).read()
        kept = {n: v for n, v in before[k].items() if not n.startswith(CSE)
                and not n.startswith("x-oss-meta-oss-") and n != "etag"
                and not n.startswith("x-oss-meta-unencrypted")}
        assert kept.items() <= after[k].items(), k  # user and POSIX metadata kept
    assert after["a/single"]["x-oss-meta-owner"] == "alice"
    assert after["bad/size"][CSE + "unencrypted-content-length"] == "901"   # kept as it was
    # one PUT per small object, a multipart upload for the large ones; no CopyObject
    counts = emulator.request_counts
    assert counts.get("CopyObject", 0) == 0
    assert counts["PutObject"] + counts.get("CompleteMultipartUpload", 0) == len(formerly_a)

    # a second run has nothing left to do
    emulator.reset_stats()
    proc = run_cli("rotate", URL + "a/", "--rsa-key", rsa_key_path, "--rsa-key",
                   second_rsa_key_path, "--to-rsa-key", second_rsa_key_path, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert b"already under the target key: 2" in proc.stderr
    assert emulator.request_counts.get("PutObject", 0) == 0


def test_rotate_kms_uses_reencrypt(run_cli, mixed, crypto_bucket, oss2_bucket, kms_server,
                                   rsa_key_path):
    cmk2 = kms_server.create_key(description="new")
    kms_keys = [k for k, e in mixed.expect.items() if e.get("kms_flavour")]
    # a third CMK's object: KMS would open it for any key, but it is not a source key's
    cmk3 = kms_server.create_key(description="other")
    crypto_bucket(kms_provider(kms_server, cmk3)).put_object("k/other", b"other cmk")
    other_before = oss2_bucket.head_object("k/other").etag
    before_calls = dict(kms_server.calls)
    proc = run_cli("rotate", URL + "k/", "--kms-key", mixed.cmk, "--to-kms-key", cmk2,
                   *kms_opts(kms_server), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("rotate", URL + "cp/kjava", "--kms-key", mixed.cmk, "--to-kms-key", cmk2,
                   "--kms-flavour", "java", *kms_opts(kms_server), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert oss2_bucket.head_object("k/other").etag == other_before
    calls = {k: v - before_calls.get(k, 0) for k, v in kms_server.calls.items()}
    assert calls.get("ReEncrypt") == 2 * len(kms_keys)          # key and IV blob each
    assert calls.get("Decrypt", 0) == 0     # the data keys stayed in KMS
    kms_server.disable_key(mixed.cmk)                           # the old CMK opens nothing now
    cb = crypto_bucket(kms_provider(kms_server, cmk2))
    for k in kms_keys:
        if k != "cp/kjava":                         # oss2 reads only its own flavour
            assert cb.get_object(k).read() == mixed.data[k], k
    # the Java/Go flavour stays that flavour (SPEC A.10): ossencfs with only the new CMK
    proc = run_cli("cat", URL + "cp/kjava", "--kms-key", cmk2, *kms_opts(kms_server))
    assert proc.returncode == 0 and proc.stdout == mixed.data["cp/kjava"], proc.stderr
    proc = run_cli("verify", URL, "--kms-key", cmk2, *kms_opts(kms_server), "--json",
                   "--no-progress")
    recs = _records(proc)
    assert [recs[k]["kms_flavour"] for k in sorted(kms_keys)] == ["java", "oss2", "oss2"]
    assert {recs[k]["master"] for k in kms_keys} == {f"kms:{cmk2}"}

    # RSA -> KMS: unwrap locally, Encrypt the data key and the IV under the CMK
    before_calls = dict(kms_server.calls)
    proc = run_cli("rotate", URL + "a/", "--rsa-key", rsa_key_path, "--to-kms-key", cmk2,
                   *kms_opts(kms_server), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    calls = {k: v - before_calls.get(k, 0) for k, v in kms_server.calls.items()}
    assert calls.get("Encrypt") == 4 and not calls.get("Decrypt")
    for k in ("a/single", "a/multi"):
        assert cb.get_object(k).read() == mixed.data[k], k


def test_migrate_encrypts_plain_objects(run_cli, mixed, crypto_bucket, oss2_bucket, emulator,
                                        rsa_key_path):
    before = _heads(oss2_bucket, list(mixed.expect))
    ctype = oss2_bucket.head_object("plain/one").headers["Content-Type"]
    proc = run_cli("migrate", URL, "--rsa-key", rsa_key_path, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    after = _heads(oss2_bucket, list(mixed.expect))
    cb = crypto_bucket(rsa_provider_of(rsa_key_path))
    for k in ("plain/one", "plain/two"):
        assert cb.get_object(k).read() == mixed.data[k], k
        assert CSE + "key" in after[k]
        for n, v in before[k].items():
            if n != "etag":
                assert after[k][n] == v, (k, n)     # user and POSIX metadata kept
    assert oss2_bucket.head_object("plain/one").headers["Content-Type"] == ctype
    assert after["plain/dir/"] == before["plain/dir/"]          # directory marker left alone
    for k, e in mixed.expect.items():
        if e["kind"] != "plain":
            assert after[k] == before[k], k                     # encrypted ones skipped
    proc = run_cli("verify", URL + "plain/", "--rsa-key", rsa_key_path, "--deep", "--json",
                   "--no-progress")
    recs = _records(proc)
    assert recs["plain/one"]["md5_checked"] and recs["plain/one"]["opens"]


def test_rotate_killed_half_way_resumes_without_redoing(emulator, cli_env, oss2_bucket,
                                                        crypto_bucket, rsa_key_path,
                                                        second_rsa_key_path, tmp_path):
    cb_a = crypto_bucket(rsa_provider_of(rsa_key_path))
    keys = [f"many/{i:03d}" for i in range(40)]
    for i, k in enumerate(keys):
        cb_a.put_object(k, payload(300 + i, i))
    while sum(e[1] == "PutObject" for e in emulator.request_log) < len(keys):
        time.sleep(0.01)    # the emulator logs a request just after its answer went out
    checkpoint = str(tmp_path / "rotate.ckpt")
    argv = [sys.executable, "-m", "ossencfs", "rotate", URL + "many/", "--rsa-key", rsa_key_path,
            "--to-rsa-key", second_rsa_key_path, "--endpoint", emulator.endpoint,
            "--checkpoint", checkpoint, "--jobs", "2", "--no-progress"]
    emulator.reset_stats()
    emulator.set_faults(latency_ms=20)              # slow enough to be caught half-way
    child = subprocess.Popen(argv, env=cli_env, cwd=str(ROOT), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while emulator.request_counts.get("PutObject", 0) < 10:
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
        child.stdout.close()
        child.stderr.close()
    emulator.set_faults(latency_ms=0)
    puts_first = emulator.request_counts["PutObject"]
    assert 10 <= puts_first < len(keys)
    proc = subprocess.run(argv, env=cli_env, cwd=str(ROOT), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert b"finished earlier (checkpoint)" in proc.stderr
    # every object replaced exactly once over both runs (a PUT the kill cut short, whose
    # body never arrived, replaced nothing and is not counted)
    puts = [entry[4] for entry in emulator.request_log
            if entry[1] == "PutObject" and entry[5] == 200]
    assert sorted(puts) == keys
    cb_b = crypto_bucket(rsa_provider_of(second_rsa_key_path))
    for i, k in enumerate(keys):
        assert cb_b.get_object(k).read() == payload(300 + i, i)


def test_rotate_skips_an_object_changed_meanwhile(emulator, oss2_bucket, crypto_bucket,
                                                  rsa_key_path, second_rsa_key_path):
    """A writer replaces the object while rotate computes its new headers: the HEAD before
    the PUT sees it, and the writer's version stays."""
    import trio

    from ossencfs.bulk.rotate import CHANGED, Rotation
    from ossencfs.envelope.keys import KeyRing, RsaMasterKey
    from ossencfs.objects import EncryptedObjects
    from ossencfs.store import ObjectStore

    cb_a = crypto_bucket(rsa_provider_of(rsa_key_path))
    cb_a.put_object("race/k", b"old version")

    class WriterDuringWrap(RsaMasterKey):
        def wrap(self, material):
            cb_a.put_object("race/k", b"concurrent writer's version")
            return super().wrap(material)

    target = WriterDuringWrap.from_pem_file(second_rsa_key_path)
    store = ObjectStore.connect(emulator.endpoint, BUCKET, AK, SK)
    objects = EncryptedObjects(store, KeyRing([RsaMasterKey.from_pem_file(rsa_key_path)]))

    async def main():
        info = await store.head("race/k")
        return await Rotation(objects, target)(info)
    out = trio.run(main)
    assert (out.status, out.reason) == ("skipped", CHANGED)
    assert cb_a.get_object("race/k").read() == b"concurrent writer's version"
