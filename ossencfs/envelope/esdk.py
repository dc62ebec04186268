"""Objects of the Alibaba Cloud Encryption SDK (ESDK) OSS samples: parse, locate, decrypt.

Pure code (no I/O); docs/esdk.md describes the format with its sources (SPEC B; ESDK-PY
``handle/format.py``, ``model.py``, ``provider/__init__.py``, ``kms/kms.py``).

Two layouts hold the same message ``ASN1Cipher ::= SEQUENCE { CipherHeader, CipherBody }``:

* ``python`` (``examples/src/oss/oss_encryption_sample.py``): the object body is the whole DER
  message; the ciphertext is the middle of ``CipherBody``, the GCM tag its last element.
* ``java`` (``OSSEncryptionSample.java``): the body is the ciphertext alone; the DER
  ``CipherHeader``, the body IV and the GCM tag are user metadata (base64), which reach OSS as
  ``x-oss-meta-x-oss-meta-header``, ``-iv``, ``-authtag`` (the Java OSS SDK prefixes again).

``CipherHeader ::= SEQUENCE { version INTEGER, algorithm INTEGER, SET OF SEQUENCE { key_arn
OCTET STRING, encrypted_data_key OCTET STRING }, SET OF SEQUENCE { key OCTET STRING, value
OCTET STRING }, header_iv OCTET STRING, header_auth_tag OCTET STRING }``;
``CipherBody ::= SEQUENCE { iv OCTET STRING, cipher_text OCTET STRING, auth_tag OCTET STRING }``.

Random access: GCM's keystream is AES-CTR from counter block ``iv(12) || BE32(2)`` (J0 + 1),
so the plaintext at any offset is available without the tag -- *unverified*. Only a pass
over the whole ciphertext (``GcmVerifier``) checks the tag. CTR (ids 7/8) uses the 16-byte IV
as its first counter block (128-bit increment); CBC (ids 3-6) decrypts block i from
ciphertext blocks i-1 and i, so a range needs one block before it.
"""
from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import FormatError, IntegrityError
from . import der

H_HEADER = "x-oss-meta-x-oss-meta-header"
H_IV = "x-oss-meta-x-oss-meta-iv"
H_TAG = "x-oss-meta-x-oss-meta-authtag"
JAVA_HEADERS = (H_HEADER, H_IV, H_TAG)

VERSION = 1                 # ESDK-PY constants.SDK_VERSION; no other version exists
HEADER_IV_LEN = 12          # ESDK-PY model.CipherHeader.HEADER_IV_LEN
HEADER_TAG_LEN = 16
BLOCK = 16
#: A first read of this many bytes of a Python-layout object holds the header of every message
#: with a few data keys; a longer header costs a second read (``parse_python`` says how long).
PROBE_SIZE = 4096
#: The smallest Python-layout message: 2 small data keys and nothing else is well above this.
MIN_PYTHON_SIZE = 64


@dataclass(frozen=True)
class Algorithm:
    """One row of ESDK-PY ``model.Algorithm``: id, mode, key/IV/tag lengths, padding."""

    id: int
    name: str
    mode: str               # "gcm" | "cbc" | "ctr"
    key_len: int
    iv_len: int
    tag_len: int
    pkcs5: bool = False


ALGORITHMS = {a.id: a for a in (
    Algorithm(1, "AES_GCM_NOPADDING_128", "gcm", 16, 12, 16),
    Algorithm(2, "AES_GCM_NOPADDING_256", "gcm", 32, 12, 16),
    Algorithm(3, "AES_CBC_NOPADDING_128", "cbc", 16, 16, 0),
    Algorithm(4, "AES_CBC_NOPADDING_256", "cbc", 32, 16, 0),
    Algorithm(5, "AES_CBC_PKCS5_128", "cbc", 16, 16, 0, pkcs5=True),
    Algorithm(6, "AES_CBC_PKCS5_256", "cbc", 32, 16, 0, pkcs5=True),
    Algorithm(7, "AES_CTR_NOPADDING_128", "ctr", 16, 16, 0),
    Algorithm(8, "AES_CTR_NOPADDING_256", "ctr", 32, 16, 0),
)}


@dataclass(frozen=True)
class DataKey:
    """One encrypted data key: the CMK that wrapped it (an ARN ``acs:kms:REGION:UID:key/ID``
    or a bare key id) and the raw KMS CiphertextBlob bytes (the blob is their base64)."""

    key_arn: str
    blob: bytes

    @property
    def region(self) -> str | None:
        """The KMS region named by the ARN; None for a bare key id."""
        parsed = parse_arn(self.key_arn)
        return parsed[0] if parsed else None

    @property
    def ciphertext_blob(self) -> str:
        """The CiphertextBlob parameter for KMS Decrypt (ESDK-PY ``_parse_asn1_header``)."""
        return base64.b64encode(self.blob).decode("ascii")


def parse_arn(arn: str) -> tuple[str, str, str] | None:
    """``acs:kms:REGION:UID:key/ID`` -> (region, uid, key id); None when ``arn`` is not an
    ARN (ESDK-PY ``provider.CmkId``); FormatError for a malformed one."""
    if not arn.startswith("acs"):
        return None
    parts = arn.split(":")
    if (len(parts) != 5 or parts[0] != "acs" or parts[1] != "kms" or not parts[2]
            or not parts[3] or not parts[4].startswith("key/") or len(parts[4]) == 4):
        raise FormatError(f"malformed CMK ARN {arn!r} (expected acs:kms:REGION:UID:key/ID)")
    return parts[2], parts[3], parts[4][4:]


@dataclass(frozen=True)
class Header:
    """A parsed CipherHeader. ``context`` keeps the header's order of entries."""

    version: int
    algorithm: Algorithm
    data_keys: tuple[DataKey, ...]
    context: tuple[tuple[str, str], ...]
    header_iv: bytes
    header_tag: bytes

    def kms_context(self) -> str:
        """EncryptionContext for KMS Decrypt: ``json.dumps(ctx)`` as ESDK-PY ``kms/kms.py``
        sends it, "" for none."""
        return json.dumps(dict(self.context)) if self.context else ""

    def context_bytes(self) -> bytes:
        """ESDK-PY ``model.serialize_context``: empty, or BE32 count then per entry sorted by
        UTF-8 key bytes: BE32 len | key | BE32 len | value. Also the body's GCM AAD."""
        if not self.context:
            return b""
        items = sorted((k.encode(), v.encode()) for k, v in self.context)
        out = bytearray(struct.pack(">I", len(items)))
        for k, v in items:
            out += struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v
        return bytes(out)

    def auth_fields(self) -> bytes:
        """The header tag's AAD (ESDK-PY ``CipherHeader._serialize_authenticated_fields``):
        BE32 version | BE32 alg | BE32 #context | context bytes | BE32 #keys | per key sorted by
        ARN: BE32 len | ARN | BE32 len | base64(blob)."""
        ctx = self.context_bytes()
        out = bytearray(struct.pack(">3I", self.version, self.algorithm.id, len(self.context)))
        out += ctx + struct.pack(">I", len(self.data_keys))
        for dk in sorted(self.data_keys, key=lambda d: d.key_arn.encode()):
            arn, blob = dk.key_arn.encode(), dk.ciphertext_blob.encode()
            out += struct.pack(">I", len(arn)) + arn + struct.pack(">I", len(blob)) + blob
        return bytes(out)

    def verify(self, data_key: bytes) -> None:
        """Check the header auth tag (GCM over empty plaintext); IntegrityError if wrong."""
        check_key(self.algorithm, data_key)
        enc = Cipher(algorithms.AES(data_key), modes.GCM(self.header_iv)).encryptor()
        enc.authenticate_additional_data(self.auth_fields())
        enc.finalize()
        if enc.tag != self.header_tag:
            raise IntegrityError("ESDK header auth tag mismatch (tampered header)")


def check_key(alg: Algorithm, data_key: bytes) -> None:
    if len(data_key) != alg.key_len:
        raise FormatError(f"{alg.name} needs a {alg.key_len}-byte data key, KMS gave "
                          f"{len(data_key)} bytes")


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"ESDK header {what} is not UTF-8") from None


def _read_header(r: der.Reader) -> Header:
    seq = r.element(der.SEQUENCE)
    h = r.inside(seq)
    version = h.integer()
    if version != VERSION:
        raise FormatError(f"ESDK header version {version} (only {VERSION} exists)")
    alg_id = h.integer()
    alg = ALGORITHMS.get(alg_id)
    if alg is None:
        raise FormatError(f"unknown ESDK algorithm id {alg_id}")
    keys = []
    ks = h.inside(h.element(der.SET))
    while not ks.at_end():
        one = ks.inside(ks.element(der.SEQUENCE))
        arn, blob = _utf8(one.octets(), "key id"), one.octets()
        one.done()
        parse_arn(arn)
        keys.append(DataKey(arn, blob))
    if not keys:
        raise FormatError("ESDK header has no encrypted data key")
    ctx = []
    cs = h.inside(h.element(der.SET))
    while not cs.at_end():
        one = cs.inside(cs.element(der.SEQUENCE))
        ctx.append((_utf8(one.octets(), "context key"), _utf8(one.octets(), "context value")))
        one.done()
    header_iv, header_tag = h.octets(), h.octets()
    h.done()
    if len(header_iv) != HEADER_IV_LEN or len(header_tag) != HEADER_TAG_LEN:
        raise FormatError("ESDK header IV/tag lengths are not 12/16")
    return Header(version, alg, tuple(keys), tuple(ctx), header_iv, header_tag)


def parse_header(data: bytes) -> Header:
    """A DER CipherHeader standing alone (the Java layout's metadata); FormatError if bad."""
    r = der.Reader(data)
    header = _read_header(r)
    r.done()
    return header


@dataclass(frozen=True)
class Layout:
    """Where an ESDK object's parts are. ``ct_start``/``ct_len``: the ciphertext's place in the
    object body. ``tag``: the GCM tag when known (Java layout: from metadata); for the Python
    layout ``tag_start`` is where it sits (the body's last ``tag_len`` bytes)."""

    kind: str                   # "python" | "java"
    header: Header
    iv: bytes
    ct_start: int
    ct_len: int
    tag: bytes | None = None
    tag_start: int = 0

    @property
    def algorithm(self) -> Algorithm:
        return self.header.algorithm


def _check_body_lengths(alg: Algorithm, iv_len: int, tag_len: int, ct_len: int) -> None:
    if iv_len != alg.iv_len:
        raise FormatError(f"ESDK body IV is {iv_len} bytes, {alg.name} uses {alg.iv_len}")
    if tag_len != alg.tag_len:
        raise FormatError(f"ESDK body tag is {tag_len} bytes, {alg.name} uses {alg.tag_len}")
    if alg.mode == "cbc" and ct_len % BLOCK:
        raise FormatError(f"CBC ciphertext of {ct_len} bytes is not whole blocks")


def parse_python(prefix: bytes, size: int) -> Layout:
    """The layout of a Python-layout object of ``size`` bytes from its first bytes.

    Needs the bytes up to the ciphertext's start (``PROBE_SIZE`` is enough for usual headers);
    raises ``der.Truncated`` (with ``needed``) when ``prefix`` is too short, FormatError when the
    body is not an ESDK message (its outer SEQUENCE must span exactly ``size`` bytes).
    """
    r = der.Reader(prefix, total=size)
    outer = r.element(der.SEQUENCE)
    if outer.start != 0 or outer.end != size:
        raise FormatError("not an ESDK message: the DER SEQUENCE does not span the object")
    m = r.inside(outer)
    header = _read_header(m)
    body = m.inside(m.element(der.SEQUENCE))
    m.done()
    iv = body.octets()
    ct = body.element(der.OCTET_STRING)
    # The tag's TLV follows the ciphertext, beyond the prefix: the rest of the body must be
    # exactly 04 LL + LL bytes (LL <= 16, short form); ``read_tag`` checks those two bytes.
    tag_len = body.limit - ct.end - 2
    _check_body_lengths(header.algorithm, len(iv), tag_len, ct.length)
    return Layout("python", header, iv, ct.body, ct.length, tag_start=ct.end + 2)


def read_tag(layout: Layout, tail: bytes) -> bytes:
    """The GCM tag of a Python-layout object from its last bytes ``tail`` (the object from
    ``layout.tag_start - 2`` to its end: the tag's TLV); FormatError if it is not one."""
    want = layout.algorithm.tag_len
    if len(tail) != want + 2 or tail[0] != der.OCTET_STRING or tail[1] != want:
        raise FormatError("ESDK body does not end with its auth tag")
    return tail[2:]


def looks_like_message(prefix: bytes) -> bool:
    """Whether a body starts as an ESDK message does: SEQUENCE { SEQUENCE { INTEGER 1,
    INTEGER ... (the CipherHeader's version and algorithm). Other objects (plain, OSS-SDK)
    read as they are; one that starts like this but does not parse is a broken message."""
    r = der.Reader(prefix, total=1 << 62)
    try:
        m = r.inside(r.element(der.SEQUENCE))
        h = m.inside(m.element(der.SEQUENCE))
        return h.integer() == VERSION and h.integer() >= 0
    except FormatError:
        return False


def has_java_headers(headers: Mapping[str, str]) -> bool:
    """Whether the object carries the Java sample's metadata (all three, any case)."""
    names = {k.lower() for k in headers}
    return all(h in names for h in JAVA_HEADERS)


def parse_java(headers: Mapping[str, str], size: int) -> Layout:
    """The layout of a Java-layout object (body = ciphertext, ``size`` bytes)."""
    low = {k.lower(): v for k, v in headers.items()}
    try:
        raw = {h: base64.b64decode(low[h], validate=True) for h in JAVA_HEADERS}
    except (binascii.Error, ValueError):
        raise FormatError("ESDK metadata (header/iv/authTag) is not base64") from None
    header = parse_header(raw[H_HEADER])
    tag = raw[H_TAG]
    _check_body_lengths(header.algorithm, len(raw[H_IV]), len(tag), size)
    return Layout("java", header, raw[H_IV], 0, size, tag=tag if tag else None)


# ----------------------------------------------------------------------------- decryption

def _ctr(data_key: bytes, counter_block: bytes) -> Cipher:
    return Cipher(algorithms.AES(data_key), modes.CTR(counter_block))


def crypt_range(layout: Layout, data_key: bytes, offset: int, cipher: bytes | memoryview,
                before: bytes | None = None) -> bytes:
    """Plaintext of ``cipher``, the ciphertext at ``offset`` (any alignment) -- *unverified*.

    GCM: AES-CTR from counter block ``iv || BE32(2 + offset // 16)`` (the Java sample's
    ranged read); CTR: from ``iv + offset // 16`` (128-bit). CBC: ``offset`` and
    ``len(cipher)`` must be block-aligned and ``before`` is the ciphertext block before
    ``offset`` (None at 0: the IV); padding is left in place (``unpad_length`` says how
    much of the last block it is)."""
    alg = layout.algorithm
    block, skip = divmod(offset, BLOCK)
    if alg.mode == "cbc":
        if skip or len(cipher) % BLOCK:
            raise ValueError("CBC ranges are whole blocks")
        prev = layout.iv if offset == 0 else before
        if prev is None or len(prev) != BLOCK:
            raise ValueError("CBC range needs the block before it")
        dec = Cipher(algorithms.AES(data_key), modes.CBC(prev)).decryptor()
        return dec.update(bytes(cipher)) + dec.finalize()
    if alg.mode == "gcm":
        counter = layout.iv + struct.pack(">I", (2 + block) & 0xFFFFFFFF)
    else:
        counter = ((int.from_bytes(layout.iv, "big") + block) % (1 << 128)).to_bytes(16, "big")
    ctx = _ctr(data_key, counter).decryptor()
    if skip:
        ctx.update(bytes(skip))
    return ctx.update(cipher)


def unpad_length(layout: Layout, last_plain_block: bytes) -> int:
    """How many padding bytes end a CBC-PKCS5 plaintext whose last block is given."""
    if not layout.algorithm.pkcs5:
        return 0
    n = last_plain_block[-1] if last_plain_block else 0
    if not 1 <= n <= BLOCK or last_plain_block[-n:] != bytes([n]) * n:
        raise IntegrityError("CBC padding is invalid (tampered object or wrong key)")
    return n


class GcmVerifier:
    """Checks an object's GCM tag over its whole ciphertext, fed in order.

    ``update(ct)`` takes the next ciphertext bytes (its plaintext output is discarded: the
    caller decrypts ranges itself); ``finish(tag)`` raises IntegrityError on a mismatch.
    AAD = the header's serialized encryption context (ESDK-PY ``handle/encryption.py``)."""

    def __init__(self, layout: Layout, data_key: bytes) -> None:
        self.position = 0
        self._dec = Cipher(algorithms.AES(data_key), modes.GCM(layout.iv)).decryptor()
        self._dec.authenticate_additional_data(layout.header.context_bytes())
        self._tag_len = layout.algorithm.tag_len

    def update(self, cipher: bytes | memoryview) -> None:
        self._dec.update(bytes(cipher))
        self.position += len(cipher)

    def finish(self, tag: bytes) -> None:
        if len(tag) != self._tag_len:
            raise IntegrityError("GCM tag has the wrong length")
        try:
            self._dec.finalize_with_tag(tag)
        except InvalidTag:
            raise IntegrityError("GCM auth tag mismatch (tampered object, tag or IV)") from None


def decrypt_message(layout: Layout, data_key: bytes, cipher: bytes, tag: bytes | None) -> bytes:
    """The whole plaintext, verified for GCM, unpadded for CBC-PKCS5 (for tests and small
    objects)."""
    alg = layout.algorithm
    check_key(alg, data_key)
    if alg.mode == "gcm":
        v = GcmVerifier(layout, data_key)
        v.update(cipher)
        v.finish(tag or b"")
        return crypt_range(layout, data_key, 0, cipher)
    if alg.mode == "cbc":
        plain = crypt_range(layout, data_key, 0, cipher)
        if alg.pkcs5:
            unpadder = padding.PKCS7(128).unpadder()
            try:
                return unpadder.update(plain) + unpadder.finalize()
            except ValueError:
                raise IntegrityError("CBC padding is invalid (tampered object or wrong key)") from None
        return plain
    return crypt_range(layout, data_key, 0, cipher)
