"""The local KMS's ciphertext blobs: sealing a plaintext under a CMK and opening a blob again.

Why it exists: blobs are real AES-256-GCM encryptions, so a blob from another installation or
a changed context is refused as a real KMS refuses it. A blob is ``b64(ascii(key id) +
b64(nonce + ciphertext + tag))``, which, like a real blob, starts with the key UUID once decoded
(SPEC A.8). The EncryptionContext (``""`` or ``{}`` = none; otherwise a JSON object, compared as
a map) is bound as associated data, so Decrypt with another context fails with
``InvalidParameter``.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .kms_errors import invalid, key_not_found
from .kms_keys import KeyRecord, KeyStore, usable

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_AAD_PREFIX = b"ossencfs-local-kms-v1\0"


def canonical_context(raw: str | None) -> str:
    """EncryptionContext as bound to a blob: "" for none, else sorted compact JSON of the map."""
    if raw is None or raw == "":
        return ""
    try:
        obj = json.loads(raw)
    except ValueError:
        raise invalid("EncryptionContext", "It must be a JSON object.") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise invalid("EncryptionContext", "It must be a JSON object.")
    if not obj:
        return ""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _aad(key_id: str, context: str) -> bytes:
    return _AAD_PREFIX + key_id.encode() + b"\0" + context.encode()


def seal(rec: KeyRecord, plaintext: str, context: str) -> str:
    """The blob of ``plaintext`` (text, as KMS takes it) under key ``rec`` and ``context``."""
    nonce = os.urandom(12)
    ct = AESGCM(base64.b64decode(rec["Material"])).encrypt(nonce, plaintext.encode("utf-8"), _aad(rec["KeyId"], context))
    inner = base64.b64encode(nonce + ct).decode()
    return base64.b64encode((rec["KeyId"] + inner).encode()).decode()


def open_blob(store: KeyStore, blob: str, context: str) -> tuple[KeyRecord, str]:
    """(key, plaintext) of ``blob`` under ``context``: a recorded answer if there is one, else
    the blob opened with the key whose id it starts with. 400 InvalidParameter for a blob that
    is not one of ours or does not open, 404 Forbidden.KeyNotFound for one of an unknown key
    UUID, the key's rejection (``usable``) for a disabled or pending-deletion key."""
    bad = invalid("CiphertextBlob")
    recorded = store.recorded.get(blob)
    if recorded is not None:
        rec = store.get(recorded["KeyId"])
        usable(rec)
        if recorded["Context"] is not None and recorded["Context"] != context:
            raise bad
        return rec, recorded["Plaintext"]
    try:
        text = base64.b64decode(blob, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    owner = store.owner_of(text)
    if owner is None:
        if UUID_RE.match(text):
            raise key_not_found()
        raise bad
    rec = owner
    usable(rec)
    inner = text[len(rec["KeyId"]):]
    if not _B64_RE.match(inner):
        raise bad
    try:
        raw = base64.b64decode(inner, validate=True)
        pt = AESGCM(base64.b64decode(rec["Material"])).decrypt(raw[:12], raw[12:], _aad(rec["KeyId"], context))
        return rec, pt.decode("utf-8")
    except (binascii.Error, InvalidTag, ValueError, UnicodeDecodeError):
        raise bad from None


def blob_key_id(blob: str) -> str | None:
    """The key UUID a blob starts with once decoded, None when it does not start with one."""
    try:
        text = base64.b64decode(blob, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    m = UUID_RE.match(text)
    return m.group(0) if m else None
