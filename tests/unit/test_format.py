"""CSE header sets: strict parsing of both sets, V2-only lower-case emission."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ossencfs.envelope import format as fmt
from ossencfs.envelope.format import (CryptoHeaders, emit_headers, is_encrypted, parse_headers,
                                      strip_crypto_headers)
from ossencfs.errors import FormatError

SDK = Path(__file__).resolve().parent.parent / "fixtures" / "sdk"
GO_META = json.loads((SDK / "encrypted_go_example_meta.json").read_text())
LEGACY_RSA_META = json.loads((SDK / "deprecated_encrypted_1MB_a_meta_rsa.json").read_text())
LEGACY_KMS_META = json.loads((SDK / "deprecated_encrypted_1MB_a_meta_kms.json").read_text())


def test_parse_go_vector():
    h = parse_headers(GO_META)
    assert h is not None and not h.legacy
    assert h.wrap_alg == fmt.WRAP_RSA_PKCS1 and h.cek_alg == fmt.CEK_AES_CTR
    assert h.wrapped_key == GO_META["x-oss-meta-client-side-encryption-key"]
    assert h.wrapped_start == GO_META["x-oss-meta-client-side-encryption-start"]
    assert h.matdesc is None and h.data_size is None and h.part_size is None
    assert len(h.wrapped_key_bytes()) == 128


def test_parse_is_case_insensitive():
    mixed = {k.upper() if i % 2 else k.title(): v for i, (k, v) in enumerate(GO_META.items())}
    assert parse_headers(mixed) == parse_headers(GO_META)


def test_parse_legacy_vectors():
    h = parse_headers(LEGACY_RSA_META)
    assert h.legacy and h.wrap_alg == "rsa" and h.cek_alg == "AES/GCM/NoPadding"
    assert h.wrap_family == fmt.WRAP_RSA_OAEP
    k = parse_headers(LEGACY_KMS_META)  # extra non-header keys in the JSON are ignored
    assert k.legacy and k.wrap_alg == "kms" and k.wrap_family == fmt.WRAP_KMS


def test_plain_objects():
    plain = {"Content-Type": "text/plain", "x-oss-meta-mode": "33188",
             "x-oss-meta-unencrypted-content-length": "5"}
    assert parse_headers(plain) is None
    assert parse_headers({}) is None
    assert not is_encrypted(plain)
    assert is_encrypted(GO_META) and is_encrypted(LEGACY_RSA_META)


@pytest.mark.parametrize("missing", ["key", "start", "cek-alg", "wrap-alg"])
def test_partial_v2_set_is_format_error(missing):
    headers = dict(GO_META)
    del headers[fmt.V2 + missing]
    assert is_encrypted(headers)  # never served as plaintext
    with pytest.raises(FormatError, match=missing):
        parse_headers(headers)


@pytest.mark.parametrize("missing", [fmt.L_KEY, fmt.L_START, fmt.LEGACY_CEK_ALG, fmt.LEGACY_WRAP_ALG])
def test_partial_legacy_set_is_format_error(missing):
    headers = dict(LEGACY_RSA_META)
    del headers[missing]
    with pytest.raises(FormatError, match="incomplete"):
        parse_headers(headers)


def test_lone_optional_header_is_partial_set():
    with pytest.raises(FormatError, match="incomplete"):
        parse_headers({fmt.H_DATA_SIZE: "100"})
    with pytest.raises(FormatError):
        parse_headers({fmt.H_KEY: GO_META[fmt.H_KEY]})


@pytest.mark.parametrize("name,value,match", [
    (fmt.H_CEK_ALG, "AES/GCM/NoPadding", "content cipher"),
    (fmt.H_CEK_ALG, "AES/CBC/PKCS5Padding", "content cipher"),
    (fmt.H_KEY, "not base64!!", "base64"),
    (fmt.H_START, "abc", "base64"),          # bad padding
    (fmt.H_KEY, "   ", "missing"),
    (fmt.H_DATA_SIZE, "12a", "integer"),
    (fmt.H_DATA_SIZE, "-1", "integer"),
    (fmt.H_PART_SIZE, "1.5", "integer"),
    (fmt.H_UNENC_LENGTH, "x", "integer"),
    (fmt.H_MATDESC, "{not json", "JSON"),
    (fmt.H_MATDESC, '["a"]', "object of strings"),
    (fmt.H_MATDESC, '{"a": 1}', "object of strings"),
])
def test_malformed_values(name, value, match):
    headers = dict(GO_META)
    headers[name] = value
    with pytest.raises(FormatError, match=match):
        parse_headers(headers)


def test_legacy_unknown_cek_alg():
    headers = dict(LEGACY_RSA_META)
    headers[fmt.LEGACY_CEK_ALG] = "DES"
    with pytest.raises(FormatError, match="content cipher"):
        parse_headers(headers)


def test_both_sets_is_ambiguous():
    with pytest.raises(FormatError, match="both"):
        parse_headers({**GO_META, **LEGACY_RSA_META})


def test_conflicting_duplicate_names():
    headers = dict(GO_META)
    headers["X-OSS-META-CLIENT-SIDE-ENCRYPTION-WRAP-ALG"] = fmt.WRAP_KMS
    with pytest.raises(FormatError, match="twice"):
        parse_headers(headers)


def test_unknown_wrap_alg_is_kept_not_format_error():
    headers = {**GO_META, fmt.H_WRAP_ALG: "FUTURE/WRAP"}
    assert parse_headers(headers).wrap_alg == "FUTURE/WRAP"


def test_optional_fields_and_matdesc_forms():
    headers = {**GO_META, fmt.H_DATA_SIZE: "1048576", fmt.H_PART_SIZE: "102400",
               fmt.H_UNENC_LENGTH: "1048576", fmt.H_UNENC_MD5: "1B2M2Y8AsgTpgAmY7PhCfg==",
               fmt.H_MATDESC: '{"b": "2", "a": "1"}'}   # oss2 style, with spaces
    h = parse_headers(headers)
    assert (h.data_size, h.part_size, h.unencrypted_content_length) == (1048576, 102400, 1048576)
    assert h.unencrypted_content_md5 == "1B2M2Y8AsgTpgAmY7PhCfg=="
    assert h.matdesc == {"a": "1", "b": "2"}
    compact = parse_headers({**headers, fmt.H_MATDESC: '{"a":"1","b":"2"}'})
    assert compact.matdesc == h.matdesc
    for empty in ("{}", "", " "):   # Java writes {} for "no description"
        assert parse_headers({**GO_META, fmt.H_MATDESC: empty}).matdesc is None


def test_legacy_optional_fields():
    h = parse_headers({**LEGACY_RSA_META, "x-oss-meta-unencrypted-content-length": "1048576",
                       fmt.L_MATDESC: '{"k": "v"}'})
    assert h.unencrypted_content_length == 1048576 and h.matdesc == {"k": "v"}


def _v2(**kw):
    base = dict(wrapped_key="a2V5", wrapped_start="c3RhcnQ=", wrap_alg=fmt.WRAP_RSA_PKCS1,
                cek_alg=fmt.CEK_AES_CTR, legacy=False)
    base.update(kw)
    return CryptoHeaders(**base)


def test_emit_minimal_set_lower_case():
    out = emit_headers(_v2())
    assert out == {
        "x-oss-meta-client-side-encryption-key": "a2V5",
        "x-oss-meta-client-side-encryption-start": "c3RhcnQ=",
        "x-oss-meta-client-side-encryption-cek-alg": "AES/CTR/NoPadding",
        "x-oss-meta-client-side-encryption-wrap-alg": "RSA/NONE/PKCS1Padding",
    }


def test_emit_optional_and_matdesc_compact_sorted():
    h = _v2(matdesc={"z": "1", "a": "ü"}, data_size=0, part_size=102400)
    out = emit_headers(h)
    assert out[fmt.H_MATDESC] == '{"a":"\\u00fc","z":"1"}'
    assert out[fmt.H_MATDESC].isascii()
    assert out[fmt.H_DATA_SIZE] == "0" and out[fmt.H_PART_SIZE] == "102400"
    assert all(k == k.lower() for k in out)
    assert parse_headers(out) == h


def test_emit_roundtrip_of_full_set():
    h = _v2(matdesc={"k": "v"}, data_size=5, part_size=16, unencrypted_content_length=5,
            unencrypted_content_md5="md5")
    assert parse_headers(emit_headers(h)) == h


def test_emit_refuses_legacy():
    with pytest.raises(ValueError):
        emit_headers(parse_headers(LEGACY_RSA_META))


def test_strip_crypto_headers():
    extra = {"Content-Type": "image/jpeg", "x-oss-meta-mode": "33188",
             "x-oss-meta-unencrypted-content-length": "7"}
    assert strip_crypto_headers({**GO_META, **extra,
                                 "X-OSS-META-CLIENT-SIDE-ENCRYPTION-MAGIC-NUMBER-HMAC": "x"}) == extra
    legacy = strip_crypto_headers({**LEGACY_RSA_META, **extra})
    assert legacy == {"Content-Type": "image/jpeg", "x-oss-meta-mode": "33188"}
    assert parse_headers(strip_crypto_headers(GO_META)) is None
