"""Parse and emit the client-side-encryption (CSE) header sets of the OSS SDKs.

Two header sets exist (SPEC A.1, A.8): the current ``x-oss-meta-client-side-encryption-*`` set
that every SDK writes, and the legacy oss2 (2.6 .. 2.10) ``x-oss-meta-oss-crypto-*`` set. Names
are case-insensitive on read and always lower-case on write (Java's prefix check is
case-sensitive). Parsing is strict: a half-present or malformed set raises ``FormatError`` so
that such an object is never served as plaintext nor decrypted into garbage without a reason.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Mapping

from ..errors import FormatError

V2 = "x-oss-meta-client-side-encryption-"
LEGACY = "x-oss-meta-oss-crypto-"
LEGACY_CEK_ALG = "x-oss-meta-oss-cek-alg"
LEGACY_WRAP_ALG = "x-oss-meta-oss-wrap-alg"
# The legacy writer moved Content-Length/-MD5 here (no "oss-crypto-" infix); SPEC A.8.
LEGACY_WRITER_UNENC_LENGTH = "x-oss-meta-unencrypted-content-length"
LEGACY_WRITER_UNENC_MD5 = "x-oss-meta-unencrypted-content-md5"

WRAP_RSA_PKCS1 = "RSA/NONE/PKCS1Padding"
WRAP_RSA_OAEP = "RSA/NONE/OAEPWithSHA-1AndMGF1Padding"
WRAP_KMS = "KMS/ALICLOUD"
WRAP_LEGACY_RSA = "rsa"
WRAP_LEGACY_KMS = "kms"
CEK_AES_CTR = "AES/CTR/NoPadding"
CEK_LEGACY_GCM = "AES/GCM/NoPadding"  # legacy oss2 mislabel: the data is CTR

# Full lower-case names of the V2 set.
H_KEY = V2 + "key"
H_START = V2 + "start"
H_CEK_ALG = V2 + "cek-alg"
H_WRAP_ALG = V2 + "wrap-alg"
H_MATDESC = V2 + "matdesc"
H_UNENC_LENGTH = V2 + "unencrypted-content-length"
H_UNENC_MD5 = V2 + "unencrypted-content-md5"
H_DATA_SIZE = V2 + "data-size"
H_PART_SIZE = V2 + "part-size"
H_MAGIC_HMAC = V2 + "magic-number-hmac"  # C++ SDK only; carried by user metadata, not parsed

# Full lower-case names of the legacy set.
L_KEY = LEGACY + "key"
L_START = LEGACY + "start"
L_MATDESC = LEGACY + "matdesc"
L_UNENC_LENGTH = LEGACY + "unencrypted-content-length"
L_UNENC_MD5 = LEGACY + "unencrypted-content-md5"

_V2_CORE = (H_KEY, H_START, H_CEK_ALG, H_WRAP_ALG)
_LEGACY_CORE = (L_KEY, L_START, LEGACY_CEK_ALG, LEGACY_WRAP_ALG)
_LEGACY_CEK_ALGS = (CEK_LEGACY_GCM, CEK_AES_CTR)


@dataclass(frozen=True)
class CryptoHeaders:
    """One object's CSE header set, values as stored (wrapped key/start still base64)."""

    wrapped_key: str            # header value exactly as stored
    wrapped_start: str
    wrap_alg: str               # as stored (legacy values kept: "rsa"/"kms")
    cek_alg: str                # as stored ("AES/GCM/NoPadding" on legacy objects means CTR)
    legacy: bool
    matdesc: dict[str, str] | None = None
    data_size: int | None = None
    part_size: int | None = None
    unencrypted_content_length: int | None = None
    unencrypted_content_md5: str | None = None
    #: the matdesc exactly as the user gave it, written verbatim: the V2 Python SDK and the Go
    #: SDK look keys up by the raw string (SPEC A.6), so only the user knows the right bytes
    matdesc_text: str | None = None

    @property
    def wrap_family(self) -> str:
        """The wrap algorithm a reader has to apply (legacy names mapped as oss2 maps them)."""
        return canonical_wrap_alg(self.wrap_alg)

    def wrapped_key_bytes(self) -> bytes:
        """The key header's base64 decoded (FormatError if it is not base64)."""
        return _b64decode("key", self.wrapped_key)

    def wrapped_start_bytes(self) -> bytes:
        return _b64decode("start", self.wrapped_start)


def _b64decode(what: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"wrapped {what} is not valid base64") from None


def canonical_wrap_alg(wrap_alg: str) -> str:
    """Map legacy wrap-alg values to the current name of the same wrapping (oss2 models.py)."""
    if wrap_alg == WRAP_LEGACY_RSA:
        return WRAP_RSA_OAEP
    if wrap_alg == WRAP_LEGACY_KMS:
        return WRAP_KMS
    return wrap_alg


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str):
            raise FormatError(f"header name {name!r} is not a string")
        low = name.lower()
        if _is_crypto_name(low) and not isinstance(value, str):
            raise FormatError(f"header {low} is not a string")
        if low in out and out[low] != value and _is_crypto_name(low):
            raise FormatError(f"header {low} appears twice with different values")
        out[low] = value
    return out


def _is_crypto_name(low: str) -> bool:
    return (low.startswith(V2) or low.startswith(LEGACY)
            or low in (LEGACY_CEK_ALG, LEGACY_WRAP_ALG))


def is_encrypted(headers: Mapping[str, str]) -> bool:
    """True when any CSE header is present, even a partial set.

    A partial set must never be served as plaintext, so it counts as encrypted here and
    ``parse_headers`` then says what is wrong with it.
    """
    return any(isinstance(n, str) and _is_crypto_name(n.lower()) for n in headers)


def _b64(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise FormatError(f"header {name} is empty")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"header {name} is not valid base64") from None
    if not decoded:
        raise FormatError(f"header {name} is empty")
    return value


def _int(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise FormatError(f"header {name} is not a non-negative integer")
    return int(text)


def parse_matdesc(value: str | None, name: str = H_MATDESC) -> dict[str, str] | None:
    """A matdesc value as a dict; empty (absent, "" or "{}") means no description.

    SDKs serialise it differently (oss2 ``{"k": "v"}``, Go/Java compact), so it is compared as
    a JSON object, never as a string (SPEC A.6). Java writes ``{}`` for an empty description.
    """
    if value is None or not value.strip():
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        raise FormatError(f"header {name} is not valid JSON") from None
    if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
        raise FormatError(f"header {name} is not a JSON object of strings")
    return parsed or None


def matdesc_option(value: Mapping[str, str] | str | None) -> tuple[dict[str, str] | None, str | None]:
    """A master key's matdesc as (dict for comparing, exact text for writing or None).

    A string is what the user typed (``--matdesc``, config ``matdesc``): it must be a JSON
    object of strings and is written byte for byte; a mapping is written as compact JSON."""
    if isinstance(value, str):
        parsed = parse_matdesc(value, "--matdesc")
        return parsed, (value.strip() if parsed else None)
    return (dict(value) if value else None), None


def dump_matdesc(matdesc: Mapping[str, str]) -> str:
    """Compact JSON with sorted keys (Go's json.Marshal form for plain ASCII strings).

    Non-ASCII stays \\u-escaped: header values must be ASCII on the wire.
    """
    return json.dumps(dict(matdesc), sort_keys=True, separators=(",", ":"))


def parse_headers(headers: Mapping[str, str]) -> CryptoHeaders | None:
    """The CSE header set of an object, None for a plain object.

    Raises FormatError for a partial or malformed set, for an unknown content cipher, and for
    an object carrying both the current and the legacy set (which one is true is unknowable).
    An unknown wrap-alg is *not* a format error: it is kept, and the KeyRing reports that no
    master key handles it (a newer SDK may add wrap algorithms).
    """
    low = _lower(headers)
    has_v2 = any(n.startswith(V2) for n in low)
    has_legacy = any(n.startswith(LEGACY) or n in (LEGACY_CEK_ALG, LEGACY_WRAP_ALG) for n in low)
    if not has_v2 and not has_legacy:
        return None
    if has_v2 and has_legacy:
        raise FormatError("object carries both the current and the legacy encryption header set")
    core = _LEGACY_CORE if has_legacy else _V2_CORE
    missing = [n for n in core if not low.get(n, "").strip()]
    if missing:
        raise FormatError("incomplete encryption header set: missing " + ", ".join(missing))
    key_name, start_name, cek_name, wrap_name = core
    cek_alg = low[cek_name].strip()
    wrap_alg = low[wrap_name].strip()
    if has_legacy:
        if cek_alg not in _LEGACY_CEK_ALGS:
            raise FormatError(f"unsupported content cipher {cek_alg!r} in {cek_name}")
        matdesc = parse_matdesc(low.get(L_MATDESC), L_MATDESC)
        length_name = L_UNENC_LENGTH if L_UNENC_LENGTH in low else LEGACY_WRITER_UNENC_LENGTH
        md5_name = L_UNENC_MD5 if L_UNENC_MD5 in low else LEGACY_WRITER_UNENC_MD5
        return CryptoHeaders(
            wrapped_key=_b64(key_name, low[key_name]),
            wrapped_start=_b64(start_name, low[start_name]),
            wrap_alg=wrap_alg,
            cek_alg=cek_alg,
            legacy=True,
            matdesc=matdesc,
            unencrypted_content_length=_int(length_name, low.get(length_name)),
            unencrypted_content_md5=low.get(md5_name),
        )
    if cek_alg != CEK_AES_CTR:
        raise FormatError(f"unsupported content cipher {cek_alg!r} in {cek_name}")
    return CryptoHeaders(
        wrapped_key=_b64(key_name, low[key_name]),
        wrapped_start=_b64(start_name, low[start_name]),
        wrap_alg=wrap_alg,
        cek_alg=cek_alg,
        legacy=False,
        matdesc=parse_matdesc(low.get(H_MATDESC)),
        data_size=_int(H_DATA_SIZE, low.get(H_DATA_SIZE)),
        part_size=_int(H_PART_SIZE, low.get(H_PART_SIZE)),
        unencrypted_content_length=_int(H_UNENC_LENGTH, low.get(H_UNENC_LENGTH)),
        unencrypted_content_md5=low.get(H_UNENC_MD5),
    )


def emit_headers(h: CryptoHeaders) -> dict[str, str]:
    """The lower-case V2 header set to send for ``h``.

    Only the current set is ever written: legacy objects are read-only (re-wrapping one means
    ``wrap_new`` style fresh V2 headers). Optional headers appear only when set, and matdesc
    only when configured — its absence is what every SDK reads most easily (SPEC A.6).
    """
    if h.legacy:
        raise ValueError("legacy header sets are read-only; emit a V2 set instead")
    out = {
        H_KEY: h.wrapped_key,
        H_START: h.wrapped_start,
        H_CEK_ALG: h.cek_alg,
        H_WRAP_ALG: h.wrap_alg,
    }
    if h.matdesc:
        out[H_MATDESC] = h.matdesc_text or dump_matdesc(h.matdesc)
    if h.unencrypted_content_length is not None:
        out[H_UNENC_LENGTH] = str(h.unencrypted_content_length)
    if h.unencrypted_content_md5 is not None:
        out[H_UNENC_MD5] = h.unencrypted_content_md5
    if h.data_size is not None:
        out[H_DATA_SIZE] = str(h.data_size)
    if h.part_size is not None:
        out[H_PART_SIZE] = str(h.part_size)
    return out


def strip_crypto_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers without any CSE header (names and values otherwise kept as given).

    Used before re-wrapping or copying so that no stale half of an old set survives. The legacy
    writer's ``x-oss-meta-unencrypted-content-*`` names are removed only when the legacy set is
    present, since on a plain object they would be ordinary user metadata.
    """
    names = [n.lower() for n in headers]
    legacy = any(n.startswith(LEGACY) or n in (LEGACY_CEK_ALG, LEGACY_WRAP_ALG) for n in names)
    drop_extra = (LEGACY_WRITER_UNENC_LENGTH, LEGACY_WRITER_UNENC_MD5) if legacy else ()
    return {n: v for n, v in headers.items()
            if not _is_crypto_name(n.lower()) and n.lower() not in drop_extra}
