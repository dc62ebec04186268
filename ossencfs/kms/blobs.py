"""KMS ciphertext blobs in object headers: the two header flavours (SPEC A.3, A.10: ``oss2``
writes ``b64(CiphertextBlob)``, ``java`` the blob itself), the CMK a blob names (SPEC A.8), the
EncryptionContext parameter, and Decrypt's base64 Plaintext. Pure: no I/O.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Mapping

from ..errors import FormatError

FLAVOURS = ("oss2", "java")
_B64_TEXT = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_UUID_PREFIX = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def context_string(context: Mapping[str, str] | None) -> str:
    """The EncryptionContext parameter: "" for none (oss2 sends it empty), else compact JSON.

    For ``{"x-passphrase": p}`` this is byte-identical to what oss2's AliKMSProvider sends.
    """
    if not context:
        return ""
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def blob_key_id(blob: str) -> str | None:
    """The CMK UUID a real KMS blob starts with once base64-decoded (SPEC A.8), if visible."""
    try:
        text = base64.b64decode(blob, validate=True)[:36].decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    m = _UUID_PREFIX.match(text)
    return m.group(0) if m else None


def looks_oss2_flavour(header: str) -> bool:
    """SPEC A.10 reading rule 2: one b64decode of an oss2 header is itself pure base64 text;
    a Java/Go header decodes to the raw blob bytes (real blobs contain the key UUID's '-')."""
    try:
        raw = base64.b64decode(header, validate=True)
        text = raw.decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return len(text) % 4 == 0 and bool(_B64_TEXT.match(text))


def b64decode_plaintext(pt: str, what: str, cmk: str) -> bytes:
    """Decrypt's Plaintext is b64(raw key / raw IV) in every flavour (SPEC A.3)."""
    try:
        return base64.b64decode(pt, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"CMK {cmk}: the {what} KMS returned is not base64") from None


def blob_from_header(header: str, oss2_style: bool) -> str | None:
    """The CiphertextBlob in a key or start header of the given flavour; None when an oss2
    header is not base64 of ASCII text."""
    if not oss2_style:
        return header
    try:
        return base64.b64decode(header, validate=True).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
