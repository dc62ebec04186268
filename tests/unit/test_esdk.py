"""The ESDK format module (ossencfs/envelope/esdk.py, der.py) on the vectors the Encryption
SDK's own Python code made (tests/fixtures/esdk/, origin in its README.md) and on tampered
copies of them. KMS is not involved: the data keys are opened offline (esdk_build)."""
from __future__ import annotations

import base64
import hashlib
import random

import pytest

from ossencfs.envelope import der, esdk
from ossencfs.errors import FormatError, IntegrityError
from tests import esdk_build as eb


def _layout(name: str, body: bytes | None = None, meta: dict | None = None) -> esdk.Layout:
    b, m, _ = eb.vector(name)
    body = b if body is None else body
    meta = m if meta is None else meta
    if meta:
        return esdk.parse_java(meta, len(body))
    return esdk.parse_python(body[:esdk.PROBE_SIZE], len(body))


def _key(layout: esdk.Layout) -> bytes:
    dk = layout.header.data_keys[0]
    return eb.offline_data_key(dk.blob, dict(layout.header.context))


def _parts(layout: esdk.Layout, body: bytes) -> tuple[bytes, bytes | None]:
    ct = body[layout.ct_start:layout.ct_start + layout.ct_len]
    tag = layout.tag if layout.kind == "java" else esdk.read_tag(layout, body[layout.tag_start - 2:])
    return ct, tag


def _plain_ok(name: str, plain: bytes) -> bool:
    return hashlib.sha256(plain).hexdigest() == eb.vector(name)[2]["plain_sha256"]


@pytest.mark.parametrize("name", eb.vector_names())
def test_vector_parses_and_decrypts(name: str) -> None:
    body, meta, entry = eb.vector(name)
    layout = _layout(name)
    assert layout.kind == entry["layout"]
    assert layout.algorithm.id == entry["algorithm_id"]
    assert layout.ct_start == entry["ct_start"] and layout.ct_len == entry["plain_size"]
    assert dict(layout.header.context) == entry["context"]
    assert [k.key_arn for k in layout.header.data_keys] == entry["key_ids"]
    assert layout.header.data_keys[0].region == eb.REGION
    key = _key(layout)
    layout.header.verify(key)
    ct, tag = _parts(layout, body)
    assert _plain_ok(name, esdk.decrypt_message(layout, key, ct, tag))


@pytest.mark.parametrize("name", ["python-gcm256-100k-ctx", "python-ctr256-100k5-ctx",
                                  "java-gcm256-100k"])
def test_ranges_decrypt_at_any_offset(name: str) -> None:
    body, _, _ = eb.vector(name)
    layout = _layout(name)
    key = _key(layout)
    ct, tag = _parts(layout, body)
    plain = esdk.decrypt_message(layout, key, ct, tag)
    rng = random.Random(7)
    for _ in range(50):
        off = rng.randrange(0, len(ct))
        n = rng.randrange(1, 5000)
        assert esdk.crypt_range(layout, key, off, ct[off:off + n]) == plain[off:off + n]


def test_writer_recreates_vector_headers() -> None:
    """esdk_build's DER writer gives the SDK's bytes: it may stand in for the SDK in tests."""
    for name in eb.vector_names():
        body, meta, _ = eb.vector(name)
        layout = _layout(name)
        if meta:
            assert eb.der_header(layout.header) == base64.b64decode(meta[esdk.H_HEADER])
        else:
            ct, tag = _parts(layout, body)
            assert eb.der_message(layout.header, layout.iv, ct, tag) == body


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def test_tampered_body_tag_or_iv_fails_verification() -> None:
    name = "python-gcm256-100k-ctx"
    body, _, _ = eb.vector(name)
    layout = _layout(name)
    key = _key(layout)
    ct, tag = _parts(layout, body)
    for bad_ct, bad_tag, bad_layout in (
            (_flip(ct, 5000), tag, layout),
            (ct, _flip(tag, 3), layout),
            (ct, tag, esdk.Layout(layout.kind, layout.header, _flip(layout.iv, 0),
                                  layout.ct_start, layout.ct_len, tag_start=layout.tag_start))):
        with pytest.raises(IntegrityError):
            esdk.decrypt_message(bad_layout, key, bad_ct, bad_tag)


def test_tampered_header_fails_its_tag() -> None:
    body, meta, _ = eb.vector("java-gcm256-100k")
    layout = _layout("java-gcm256-100k")
    key = _key(layout)
    h = layout.header
    bad = esdk.Header(h.version, h.algorithm, h.data_keys, (("a", "b"),), h.header_iv,
                      h.header_tag)
    with pytest.raises(IntegrityError):
        bad.verify(key)
    with pytest.raises(IntegrityError):
        esdk.Header(h.version, h.algorithm, h.data_keys, h.context, h.header_iv,
                    _flip(h.header_tag, 0)).verify(key)


def test_truncated_and_malformed_der() -> None:
    body, _, _ = eb.vector("python-gcm256-1b")
    for cut in (1, 2, 50, 200, len(body) - 1):
        with pytest.raises(FormatError):
            esdk.parse_python(body[:cut], cut)
    with pytest.raises(der.Truncated) as exc:
        esdk.parse_python(body[:100], len(body))
    assert exc.value.needed > 100
    with pytest.raises(FormatError):                 # outer length != object size
        esdk.parse_python(body + b"\0", len(body) + 1)
    with pytest.raises(FormatError):                 # not DER at all
        esdk.parse_python(b"hello world" * 10, 110)
    # the 1-byte object's header starts at byte 4 (30 82 LL LL 30 82 ...); version at 8
    assert body[4] == 0x30
    long_form = body[:1] + b"\x83\x00" + body[2:]    # non-minimal outer length
    with pytest.raises(FormatError):
        esdk.parse_python(long_form, len(long_form))


def test_unknown_algorithm_id() -> None:
    _, meta, _ = eb.vector("java-gcm256-100k")
    raw = bytearray(base64.b64decode(meta[esdk.H_HEADER]))
    # SEQUENCE(30 82 LL LL) INTEGER version (02 01 01) INTEGER algorithm (02 01 ID)
    assert raw[4:7] == b"\x02\x01\x01" and raw[7:9] == b"\x02\x01"
    raw[9] = 9
    bad = dict(meta, **{esdk.H_HEADER: base64.b64encode(bytes(raw)).decode()})
    with pytest.raises(FormatError, match="unknown ESDK algorithm id 9"):
        esdk.parse_java(bad, 102400)


def test_java_metadata_checks() -> None:
    _, meta, _ = eb.vector("java-gcm256-100k")
    assert esdk.has_java_headers(meta)
    assert not esdk.has_java_headers({k: v for k, v in meta.items() if "iv" not in k})
    with pytest.raises(FormatError):
        esdk.parse_java(dict(meta, **{esdk.H_IV: "AAAA"}), 102400)   # 3-byte IV
    with pytest.raises(FormatError):
        esdk.parse_java(dict(meta, **{esdk.H_IV: "not base64!"}), 102400)


def test_arn() -> None:
    assert esdk.parse_arn(eb.ARN) == (eb.REGION, "1234567890123456", eb.KEY_ID)
    assert esdk.parse_arn(eb.KEY_ID) is None
    for bad in ("acs:kms:cn-hangzhou:1:alias/x", "acs:kms::1:key/x", "acs:ecs:r:1:key/x"):
        with pytest.raises(FormatError):
            esdk.parse_arn(bad)


@pytest.mark.parametrize("alg_id", [1, 3, 4, 5, 6, 7])
def test_other_algorithms_roundtrip_and_ranges(alg_id: int) -> None:
    alg = esdk.ALGORITHMS[alg_id]
    key = bytes(range(alg.key_len))
    plain = bytes(random.Random(alg_id).randrange(256) for _ in range(1000 if alg.pkcs5 or
                                                                      alg.mode != "cbc" else 1024))
    h, iv, ct, tag = eb.encrypt(plain, key, [esdk.DataKey(eb.ARN, b"blob")], {"k": "v"}, alg_id)
    msg = eb.der_message(h, iv, ct, tag)
    layout = esdk.parse_python(msg[:esdk.PROBE_SIZE], len(msg))
    h.verify(key)
    assert esdk.decrypt_message(layout, key, ct, tag) == plain
    if alg.mode == "cbc":
        got = esdk.crypt_range(layout, key, 32, ct[32:64], before=ct[16:32])
        assert got == plain[32:64]
        assert esdk.unpad_length(layout, esdk.crypt_range(layout, key, len(ct) - 16, ct[-16:],
                                                          before=ct[-32:-16])) == len(ct) - len(plain)
    else:
        assert esdk.crypt_range(layout, key, 17, ct[17:300]) == plain[17:300]


def test_only_objects_without_other_encryption_headers_may_be_probed():
    """``EsdkObjects.may_be_python``: a probe (a GET of the object's first bytes) is for
    objects that may be Python-layout messages: large enough, and carrying neither CSE
    headers (the Go SDK's set from the vectors, any case, even a broken part of it) nor the
    Java sample's. Headers not known yet (from a listing) may be probed."""
    import json
    from pathlib import Path

    from ossencfs.esdk_objects import EsdkObjects
    cse = json.loads((Path(__file__).parents[1] / "fixtures" / "sdk"
                      / "encrypted_go_example_meta.json").read_text())
    objects = EsdkObjects(None, None)                  # (it asks the store nothing here)
    big = esdk.MIN_PYTHON_SIZE
    assert objects.may_be_python(big, None)
    assert objects.may_be_python(big, {"x-oss-meta-mode": "33188", "etag": "x"})
    assert not objects.may_be_python(big - 1, None)
    assert not objects.may_be_python(big, cse)
    assert not objects.may_be_python(big, {k.upper(): v for k, v in cse.items()})
    broken = {k: v for k, v in cse.items() if k.endswith("-key")}
    assert not objects.may_be_python(big, broken)
    assert not objects.may_be_python(big, {h: "x" for h in esdk.JAVA_HEADERS})
    assert not EsdkObjects(None, None, probe=False).may_be_python(big, None)
