"""What one object is, and whether the configured keys open it (``ossencfs verify``).

Each object kind is a ``Kind`` in ``KINDS``: the first whose ``detect`` accepts the object
(HEAD headers and size) inspects it. A new object format is one more entry in ``KINDS``,
placed before ``PlainKind``, which accepts everything. ``EsdkKind`` (Encryption SDK objects,
docs/esdk.md) needs the run's ``EsdkObjects``: without one it claims nothing.

A ``Record`` never holds key material: the data key an inspection unwraps is handed back
separately (``Inspection.material``) for a ``--deep`` check or a rotation, never printed.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator, Protocol

import trio

from ..aio import first_error
from ..envelope import format as fmt
from ..envelope.keys import ContentMaterial, KeyRing, MasterKey
from ..envelope import esdk as esdk_format
from ..errors import (FormatError, IntegrityError, KeyUnavailableError, OssEncError,
                      WrongKeyError)
from ..esdk_objects import EsdkObjects, EsdkReader
from ..kms import blob_key_id, looks_oss2_flavour
from ..objects import ObjectReader
from ..store import ObjectInfo, ObjectStore

# Problems (the values of ``Record.problems``): stable strings, summarised by the CLI.
NO_KEY = "no configured key"
DAMAGED = "header damaged"
KEY_UNAVAILABLE = "key unavailable"
SIZE_MISMATCH = "size mismatch"
MD5_MISMATCH = "md5 mismatch"
READ_FAILED = "read failed"
INTEGRITY = "integrity check failed"     # --deep: an Encryption SDK object's GCM tag
#: problems that mean the object does not open (verify's exit status is 1 with any of them);
#: a size mismatch is one: ossencfs refuses to serve a torn body (``objects.check_length``)
UNREADABLE = frozenset({NO_KEY, DAMAGED, KEY_UNAVAILABLE, SIZE_MISMATCH, MD5_MISMATCH,
                        READ_FAILED, INTEGRITY})

_HEX_MD5 = re.compile(r"^[0-9A-Fa-f]{32}$")
DEEP_CHUNK = 4 << 20        # bytes per ranged GET of ``--deep`` (memory: 2 x parallel x this)


@dataclass
class Record:
    """One object as ``verify --json`` prints it (no key material, ever)."""

    key: str
    size: int
    etag: str
    kind: str                               # "plain" | "cse" | "cse-legacy" | "esdk"
    wrap_alg: str | None = None             # as stored
    kms_flavour: str | None = None          # "oss2" | "java" | "legacy" for KMS-wrapped objects
    master: str | None = None               # "rsa:<fp>" / "kms:<cmk id>" that opens it
    problems: list[str] = field(default_factory=list)
    detail: str = ""                        # why, for the first problem
    md5_checked: bool = False               # --deep compared the content with a stored MD5
    # Encryption SDK objects ("esdk") only:
    layout: str | None = None               # "python" (DER message body) | "java" (metadata)
    algorithm: str | None = None            # e.g. "AES_GCM_NOPADDING_256"
    cmk_arn: str | None = None              # the CMK that opened it, else the header's first
    kms_region: str | None = None           # the region whose KMS decrypts its data key
    plain_size: int | None = None           # plaintext bytes

    @property
    def opens(self) -> bool:
        return not UNREADABLE.intersection(self.problems)

    def problem(self, what: str, detail: str = "") -> None:
        self.problems.append(what)
        if detail and not self.detail:
            self.detail = detail

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "opens": self.opens}


@dataclass
class Inspection:
    """A record plus what a later step (deep check, rotate) needs; the key stays in memory."""

    record: Record
    info: ObjectInfo | None = None          # with the HEAD's headers
    headers: fmt.CryptoHeaders | None = None
    material: ContentMaterial | None = None
    opener: MasterKey | None = None
    esdk_layout: esdk_format.Layout | None = None
    reader: EsdkReader | None = None        # an opened Encryption SDK object (holds its key)


class Kind(Protocol):
    """One object format the bulk tools know."""

    name: str

    def detect(self, info: ObjectInfo, esdk: EsdkObjects | None) -> bool:
        """Cheap, local (no request): does this kind claim the object (its HEAD headers,
        size)? ``esdk``: the run's Encryption SDK readers, None when it has none."""
        ...

    async def inspect(self, info: ObjectInfo, keyring: KeyRing | None, *,
                      unwrap: bool = True, esdk: EsdkObjects | None = None) -> Inspection:
        """Classify the object; with ``unwrap``, open its data key when a configured key can
        (else ``Record.master`` is only what the headers name, e.g. a KMS blob's CMK)."""
        ...


class CseKind:
    """The OSS SDK client-side-encryption format, current and legacy header sets (SPEC A)."""

    name = "cse"

    def detect(self, info: ObjectInfo, esdk: EsdkObjects | None) -> bool:
        return fmt.is_encrypted(info.headers)

    async def inspect(self, info: ObjectInfo, keyring: KeyRing | None, *,
                      unwrap: bool = True, esdk: EsdkObjects | None = None) -> Inspection:
        rec = Record(info.key, info.size, info.etag, "cse")
        try:
            h = fmt.parse_headers(info.headers)
        except FormatError as exc:
            rec.problem(DAMAGED, str(exc))
            return Inspection(rec, info)
        assert h is not None
        rec.kind = "cse-legacy" if h.legacy else "cse"
        rec.wrap_alg = h.wrap_alg
        rec.kms_flavour = kms_flavour(h)
        _check_sizes(rec, h, info.size)
        rec.master = key_identity(h)
        ins = Inspection(rec, info, h)
        if unwrap:
            await open_data_key(ins, keyring)
        return ins


async def open_data_key(ins: Inspection, keyring: KeyRing | None) -> None:
    """Unwrap the data key of an encrypted object's inspection with whichever configured key
    opens it; records the opener (``Record.master``) or the reason none does."""
    rec, h = ins.record, ins.headers
    assert h is not None
    if keyring is None:
        rec.problem(NO_KEY, "no master key given")
        return
    what = f"oss://{rec.key}"
    try:
        material, opener = await trio.to_thread.run_sync(
            functools.partial(keyring.open_with, h, object_name=what))
    except WrongKeyError as exc:
        rec.problem(NO_KEY, _strip(str(exc), what))
    except FormatError as exc:
        rec.problem(DAMAGED, _strip(str(exc), what))
    except KeyUnavailableError as exc:
        rec.problem(KEY_UNAVAILABLE, _strip(str(exc), what))
    else:
        ins.material, ins.opener = material, opener
        rec.master = key_identity(h) or opener.name


class PlainKind:
    """Anything no other kind claims: stored as it is."""

    name = "plain"

    def detect(self, info: ObjectInfo, esdk: EsdkObjects | None) -> bool:
        return True

    async def inspect(self, info: ObjectInfo, keyring: KeyRing | None, *,
                      unwrap: bool = True, esdk: EsdkObjects | None = None) -> Inspection:
        return Inspection(Record(info.key, info.size, info.etag, "plain"), info)


class EsdkKind:
    """Alibaba Cloud Encryption SDK objects (docs/esdk.md): the Java layout by its three
    metadata headers, the Python layout by the DER message at the start of the body (one
    ranged GET of ``esdk.PROBE_SIZE`` bytes; an object that is no such message is plain).

    The layout's parse checks the sizes that can be checked: a Python-layout message's DER
    lengths must span the object exactly, CBC ciphertext must be whole blocks; a failure is
    "header damaged", as are an unknown algorithm id and (when opened) a wrong header auth
    tag. Unwrapping asks the KMS of the region each data key's CMK ARN names."""

    name = "esdk"

    def detect(self, info: ObjectInfo, esdk: EsdkObjects | None) -> bool:
        return esdk is not None and (esdk_format.has_java_headers(info.headers)
                                     or esdk.may_be_python(info.size, info.headers))

    async def inspect(self, info: ObjectInfo, keyring: KeyRing | None, *,
                      unwrap: bool = True, esdk: EsdkObjects | None = None) -> Inspection:
        assert esdk is not None
        java = esdk_format.has_java_headers(info.headers)
        rec = Record(info.key, info.size, info.etag, "esdk", layout="java" if java else "python")
        try:
            layout = await esdk.layout(info)
        except FormatError as exc:
            rec.problem(DAMAGED, _strip(str(exc), esdk.where(info.key)))
            return Inspection(rec, info)
        if layout is None:
            return await PlainKind().inspect(info, keyring, unwrap=unwrap)
        rec.algorithm = layout.algorithm.name
        _name_cmk(rec, layout.header.data_keys[0], esdk)
        rec.plain_size = layout.ct_len
        ins = Inspection(rec, info, esdk_layout=layout)
        if unwrap:
            await open_esdk(ins, esdk)
        return ins


async def open_esdk(ins: Inspection, esdk: EsdkObjects) -> None:
    """Open an Encryption SDK object's data key (KMS of its CMK's region, header tag
    checked); records the CMK that opened it (``Record.master``) or why none did."""
    rec, info, layout = ins.record, ins.info, ins.esdk_layout
    assert info is not None and layout is not None
    what = esdk.where(info.key)
    try:
        reader = await esdk.open(info, layout)
    except WrongKeyError as exc:
        rec.problem(NO_KEY, _strip(str(exc), what))
    except FormatError as exc:                  # IntegrityError: the header auth tag
        rec.problem(DAMAGED, _strip(str(exc), what))
    except OssEncError as exc:                  # refused by KMS, KMS unreachable
        rec.problem(KEY_UNAVAILABLE, _strip(str(exc), what))
    else:
        ins.reader = reader
        rec.plain_size = reader.size
        if reader.opened_by is not None:
            _name_cmk(rec, reader.opened_by, esdk)
            rec.master = f"kms:{reader.opened_by.key_arn}"


def _name_cmk(rec: Record, key: esdk_format.DataKey, esdk: EsdkObjects) -> None:
    rec.cmk_arn = key.key_arn
    rec.kms_region = key.region or (esdk.keys.regions.default_region if esdk.keys else None)


#: tried in order; the first whose ``detect`` is true inspects the object
KINDS: tuple[Kind, ...] = (CseKind(), EsdkKind(), PlainKind())


def kms_flavour(h: fmt.CryptoHeaders) -> str | None:
    """How a KMS-wrapped header set stores its blobs (SPEC A.3, A.8, A.10), None if not KMS."""
    if h.wrap_family != fmt.WRAP_KMS:
        return None
    if h.legacy:
        return "legacy"
    return "oss2" if looks_oss2_flavour(h.wrapped_key) else "java"


def key_identity(h: fmt.CryptoHeaders) -> str | None:
    """``kms:<CMK id>`` a KMS blob names (real blobs start with it, SPEC A.8), else None.

    Any configured KMS key can open a blob of any CMK the credentials may use, so the CMK
    the blob names, not the configured key that asked KMS, is what protects the object."""
    if h.wrap_family != fmt.WRAP_KMS:
        return None
    candidates = [h.wrapped_key]
    if not h.legacy and looks_oss2_flavour(h.wrapped_key):
        candidates.insert(0, base64.b64decode(h.wrapped_key).decode("ascii"))
    for blob in candidates:
        cmk = blob_key_id(blob)
        if cmk:
            return f"kms:{cmk}"
    return None


def _check_sizes(rec: Record, h: fmt.CryptoHeaders, size: int) -> None:
    """CTR adds no bytes: the recorded plaintext length must equal the body's (SPEC A.7)."""
    for name, value in (("unencrypted-content-length", h.unencrypted_content_length),
                        ("data-size", h.data_size)):
        if value is not None and value != size:
            rec.problem(SIZE_MISMATCH, f"{name} {value} but the body has {size} bytes")


def _strip(msg: str, what: str) -> str:
    return msg[len(what) + 2:] if msg.startswith(what + ": ") else msg


def kind_of(info: ObjectInfo, esdk: EsdkObjects | None = None) -> Kind:
    return next(k for k in KINDS if k.detect(info, esdk))


async def inspect(store: ObjectStore, info: ObjectInfo, keyring: KeyRing | None, *,
                  unwrap: bool = True, esdk: EsdkObjects | None = None) -> Inspection:
    """HEAD the object when ``info`` came from a listing, then let its kind classify it
    (``esdk``: the Encryption SDK readers; without them such objects count as plain)."""
    if not info.headers:
        headed = await store.head(info.key)
        if headed is None:
            rec = Record(info.key, info.size, info.etag, "gone")
            rec.problem(READ_FAILED, "deleted since it was listed")
            return Inspection(rec)
        info = headed
    return await kind_of(info, esdk).inspect(info, keyring, unwrap=unwrap, esdk=esdk)


def expected_md5(ins: Inspection) -> bytes | None:
    """The MD5 the content must have: unencrypted-content-md5 (b64, the caller's Content-MD5,
    SPEC A.7) of an encrypted object; a plain single-PUT object's ETag (its content MD5)."""
    if ins.headers is not None:
        value = ins.headers.unencrypted_content_md5
        if not value:
            return None
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except ValueError:
            return None
        return raw if len(raw) == 16 else None
    info = ins.info
    if ins.record.kind == "plain" and info is not None and info.object_type == "Normal" and _HEX_MD5.match(info.etag):
        return bytes.fromhex(info.etag)
    return None


def _content(store: ObjectStore, ins: Inspection, parallel: int) -> AsyncIterator[bytes] | None:
    """The plaintext of an object that opens, in ``DEEP_CHUNK`` pieces; None if it does not.
    An Encryption SDK object's reader checks the GCM tag before its last piece (CTR/CBC:
    decrypted whole, nothing to check)."""
    if ins.info is None or not ins.record.opens:
        return None
    if ins.esdk_layout is not None:
        if ins.reader is None:
            return None
        return ins.reader.chunks(chunk_size=DEEP_CHUNK, parallelism=parallel)
    if ins.headers is not None and ins.material is None:
        return None
    reader = ObjectReader(store, ins.info, ins.material)
    return reader.chunks(chunk_size=DEEP_CHUNK, parallelism=parallel)


async def deep_check(store: ObjectStore, ins: Inspection, *,
                     parallel: int = 4, progress: Any = None) -> None:
    """Read the whole content of an object that opens (parallel ranged GETs of
    ``DEEP_CHUNK`` = 4 MiB, pinned to the ETag, decrypted in order and hashed while the next
    ranges download; memory about 2 x ``parallel`` x ``DEEP_CHUNK``) and compare its MD5
    with ``expected_md5`` where there is one. Adds MD5_MISMATCH, INTEGRITY (an Encryption
    SDK object's GCM tag) or READ_FAILED to the record."""
    rec = ins.record
    content = _content(store, ins, parallel)
    if content is None:
        return
    want = expected_md5(ins)
    digest = hashlib.md5()
    send, recv = trio.open_memory_channel[bytes](parallel)

    async def fetch() -> None:      # the next ranges download while this task hashes
        async with send:
            async for piece in content:
                await send.send(piece)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            async with recv:
                async for piece in recv:
                    await trio.to_thread.run_sync(digest.update, piece)  # drops the GIL
                    if progress is not None:
                        progress(len(piece))
    except BaseExceptionGroup as eg:
        exc = first_error(eg)
        if not isinstance(exc, OssEncError):
            raise
        rec.problem(INTEGRITY if isinstance(exc, IntegrityError) else READ_FAILED,
                    _strip(str(exc), f"oss://{store.name}/{rec.key}"))
        return
    if want is None:
        return
    rec.md5_checked = True
    if digest.digest() != want:
        rec.problem(MD5_MISMATCH, "decrypted content does not match the stored MD5")
