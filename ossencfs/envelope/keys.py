"""Master keys and the KeyRing: which key opens an object, and what new objects are wrapped with.

A master key wraps each object's random data key and IV (SPEC A.3). RSA key pairs live here;
KMS CMKs plug in through the same ``MasterKey`` protocol (``ossencfs/kms.py``). Unwrapping may be
remote, slow and rate-limited (KMS), so the KeyRing keeps unwrapped material in a memory-only
LRU+TTL cache and lets concurrent opens of one object share a single unwrap (single-flight).
"""
from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Protocol, Sequence, runtime_checkable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import (FormatError, KeyFileError, KeyServiceUnavailableError, KeyUnavailableError,
                      OssEncError, WrongKeyError)
from .ctr import (BLOCK_SIZE, IV_SIZE, KEY_SIZE, CtrStream, counter_to_iv, crypt_at, iv_to_counter,
                  new_data_key, new_iv)
from .format import (CEK_AES_CTR, WRAP_LEGACY_RSA, WRAP_RSA_OAEP, WRAP_RSA_PKCS1, CryptoHeaders,
                     emit_headers, parse_headers)

log = logging.getLogger(__name__)

_COUNTER_LIMIT = 1 << 128
_MAX_KEY_FILE = 1 << 20


@dataclass(frozen=True, repr=False)
class ContentMaterial:
    """The plaintext data key of one object and its initial counter; repr never shows the key."""

    key: bytes                  # 32 bytes
    counter0: int               # initial 128-bit counter (IV as int; legacy: the decimal counter)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_SIZE:
            raise ValueError(f"data key must be {KEY_SIZE} bytes")
        if not 0 <= self.counter0 < _COUNTER_LIMIT:
            raise ValueError("counter0 must be a 128-bit unsigned integer")

    def __repr__(self) -> str:
        return "ContentMaterial(<secret>)"

    @property
    def iv(self) -> bytes:
        return counter_to_iv(self.counter0)

    def stream(self, offset: int = 0) -> CtrStream:
        """A cipher stream positioned at object offset ``offset``."""
        return CtrStream(self.key, self.counter0, offset)

    def crypt_at(self, offset: int, data: bytes) -> bytes:
        return crypt_at(self.key, self.counter0, offset, data)


@runtime_checkable
class MasterKey(Protocol):
    """What the KeyRing needs from a master key (RSA pair here, KMS CMK in ossencfs.kms)."""

    name: str                   # for logs: "rsa:<sha256 fp prefix>" / "kms:<cmk id>"; no secrets
    wrap_alg: str               # what it writes
    matdesc: dict[str, str] | None

    def can_unwrap(self, h: CryptoHeaders) -> bool:
        """Cheap, local: wrap-alg family, matdesc, has a private part. No I/O."""
        ...

    def unwrap(self, h: CryptoHeaders) -> ContentMaterial:
        """BLOCKING (may be remote). WrongKeyError / KeyUnavailableError / FormatError."""
        ...

    def wrap_new(self) -> tuple[ContentMaterial, CryptoHeaders]:
        """Fresh key + IV and the header set (BLOCKING; KMS may call out)."""
        ...

    def wrap(self, material: ContentMaterial) -> CryptoHeaders:
        """The header set for an *existing* data key: re-wrapping only, never new content."""
        ...

    # Optional: ``claims(h) -> bool``, True when the object names this very key (a KMS blob
    # carries its CMK id); the KeyRing tries such masters first, saving remote calls.


def matdesc_matches(master: Mapping[str, str] | None, obj: Mapping[str, str] | None) -> bool:
    """Whether a master with description ``master`` may be tried on an object with ``obj``.

    Chosen rule (SPEC A.6 compares as maps): when both have a description they must be equal
    as dicts; a master without one is a catch-all and may try any object; an object without
    one may be tried by every master (Java/Go write none by default, and a wrong key is caught
    by the unwrap itself). oss2 is stricter (absent != present); we only read more, never less.
    """
    if master is None or obj is None:
        return True
    return dict(master) == dict(obj)


def material_from_plaintext(h: CryptoHeaders, plain_key: bytes, plain_start: bytes) -> ContentMaterial:
    """Turn what a master key unwrapped into ContentMaterial, checking its shape.

    V2 objects wrap the raw 16-byte IV; legacy objects wrap an ASCII decimal counter (SPEC A.8).
    A wrong shape is what a wrong key (PKCS#1 v1.5 implicit rejection yields random bytes
    instead of an error) or a tampered header looks like, hence WrongKeyError.
    Shared with ossencfs.kms so every master applies the same checks.
    """
    if len(plain_key) != KEY_SIZE:
        raise WrongKeyError(f"unwrapped data key has {len(plain_key)} bytes, not {KEY_SIZE} "
                            "(wrong key or tampered header)")
    if h.legacy:
        text = plain_start.strip()
        if not (0 < len(text) <= 39 and text.isascii() and text.isdigit()):
            raise WrongKeyError("unwrapped legacy start is not a decimal counter "
                                "(wrong key or tampered header)")
        counter0 = int(text)
        if counter0 >= _COUNTER_LIMIT:
            raise WrongKeyError("unwrapped legacy counter exceeds 128 bits (tampered header)")
        return ContentMaterial(plain_key, counter0)
    if len(plain_start) != IV_SIZE:
        raise WrongKeyError(f"unwrapped IV has {len(plain_start)} bytes, not {IV_SIZE} "
                            "(wrong key or tampered header)")
    return ContentMaterial(plain_key, iv_to_counter(plain_start))


def _plausible(h: CryptoHeaders, material: ContentMaterial) -> bool:
    """Every known writer zeroes IV[8..11] (SPEC A.2). A PKCS#1 v1.5 unwrap with a wrong key
    returns random bytes of a random length, which are 32/16 long once in ~10^4..10^5 tries;
    such a result almost never has those four bytes zero, so it is tried last."""
    return h.legacy or (material.counter0 >> 32) & 0xFFFFFFFF == 0


_OAEP_SHA1 = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
_PKCS1 = padding.PKCS1v15()
_RSA_READ_ALGS = {WRAP_RSA_PKCS1: _PKCS1, WRAP_RSA_OAEP: _OAEP_SHA1, WRAP_LEGACY_RSA: _OAEP_SHA1}
_RSA_WRITE_ALGS = {WRAP_RSA_PKCS1: _PKCS1, WRAP_RSA_OAEP: _OAEP_SHA1}


class RsaMasterKey:
    """An RSA key pair (or public key only) used as a CSE master key.

    Writes ``RSA/NONE/PKCS1Padding`` (the one RSA wrapping every SDK reads); reads PKCS#1 v1.5,
    OAEP-SHA1 (oss2 LocalRsaProvider) and the legacy ``rsa`` form. A public-only key can wrap
    new objects but opens nothing.
    """

    LOCAL_WRAP = True        # wrap_new is CPU only (KeyRing.local_writer)

    def __init__(self, private_key: rsa.RSAPrivateKey | None = None,
                 public_key: rsa.RSAPublicKey | None = None, *,
                 matdesc: Mapping[str, str] | None = None, write_alg: str = WRAP_RSA_PKCS1,
                 source: str = "") -> None:
        if private_key is None and public_key is None:
            raise ValueError("need a private or a public key")
        if write_alg not in _RSA_WRITE_ALGS:
            raise ValueError(f"cannot write wrap-alg {write_alg!r} with RSA")
        if private_key is not None:
            derived = private_key.public_key()
            if public_key is not None and public_key.public_numbers() != derived.public_numbers():
                raise ValueError("public key does not belong to the private key")
            public_key = derived
        assert public_key is not None
        self._private = private_key
        self._public = public_key
        self.wrap_alg = write_alg
        self.matdesc: dict[str, str] | None = dict(matdesc) if matdesc else None
        der = public_key.public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        self.fingerprint = hashlib.sha256(der).hexdigest()
        self.name = "rsa:" + self.fingerprint[:16]
        self.source = source

    def __repr__(self) -> str:
        kind = "private" if self._private is not None else "public"
        return f"RsaMasterKey({self.name}, {kind}, {self.key_size} bits)"

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def generate(cls, bits: int = 3072, **kw: object) -> "RsaMasterKey":
        if bits not in (2048, 3072, 4096):
            raise ValueError("RSA key size must be 2048, 3072 or 4096 bits")
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits), **kw)  # type: ignore[arg-type]

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None, *,
                 matdesc: Mapping[str, str] | None = None, source: str = "key") -> "RsaMasterKey":
        """PKCS#1 / PKCS#8 private (optionally encrypted) or PKCS#1 / SPKI public PEM."""
        if b"PRIVATE KEY-----" in data:
            key = _load_private(data, passphrase, source)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise KeyFileError(f"{source}: not an RSA private key")
            master = cls(key, matdesc=matdesc, source=source)
        elif b"PUBLIC KEY-----" in data:
            try:
                pub = serialization.load_pem_public_key(data)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise KeyFileError(f"{source}: not a valid PEM public key") from None
            if not isinstance(pub, rsa.RSAPublicKey):
                raise KeyFileError(f"{source}: not an RSA public key")
            master = cls(public_key=pub, matdesc=matdesc, source=source)
        else:
            raise KeyFileError(f"{source}: not a PEM RSA key (no 'PRIVATE KEY' or 'PUBLIC KEY' block)")
        if master.key_size < 1024:
            raise KeyFileError(f"{source}: RSA key of {master.key_size} bits is too small")
        return master

    @classmethod
    def from_pem_file(cls, path: str, passphrase: bytes | None = None, *,
                      matdesc: Mapping[str, str] | None = None) -> "RsaMasterKey":
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_KEY_FILE + 1)
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from None
        if len(data) > _MAX_KEY_FILE:
            raise KeyFileError(f"{path}: too large for a key file")
        return cls.from_pem(data, passphrase, matdesc=matdesc, source=str(path))

    # -- export (keygen) ------------------------------------------------------------------
    def private_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM (read by oss2, Java and Go; Go cannot read an encrypted one)."""
        if self._private is None:
            raise ValueError("no private key")
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase
            else serialization.NoEncryption())
        return self._private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8, enc)

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM ("PUBLIC KEY"), the form every SDK reads."""
        return self._public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)

    # -- MasterKey protocol ---------------------------------------------------------------
    @property
    def has_private(self) -> bool:
        return self._private is not None

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def can_unwrap(self, h: CryptoHeaders) -> bool:
        if self._private is None or h.wrap_alg not in _RSA_READ_ALGS:
            return False
        if h.wrap_alg == WRAP_LEGACY_RSA and not h.legacy:
            return False
        return matdesc_matches(self.matdesc, h.matdesc)

    def unwrap(self, h: CryptoHeaders) -> ContentMaterial:
        if self._private is None:
            raise WrongKeyError("public key only; opening objects needs the private key")
        pad = _RSA_READ_ALGS.get(h.wrap_alg)
        if pad is None:
            raise WrongKeyError(f"RSA key cannot unwrap wrap-alg {h.wrap_alg!r}")
        plain_key = self._decrypt(h.wrapped_key_bytes(), pad, "data key")
        plain_start = self._decrypt(h.wrapped_start_bytes(), pad, "start")
        return material_from_plaintext(h, plain_key, plain_start)

    def _decrypt(self, blob: bytes, pad: padding.AsymmetricPadding, what: str) -> bytes:
        assert self._private is not None
        try:
            return self._private.decrypt(blob, pad)
        except (ValueError, TypeError):
            # Deliberately no detail: padding-oracle style messages help nobody here.
            raise WrongKeyError(f"wrapped {what} does not decrypt with this key "
                                "(wrong key or tampered header)") from None

    def wrap_new(self) -> tuple[ContentMaterial, CryptoHeaders]:
        material = ContentMaterial(new_data_key(), iv_to_counter(new_iv()))
        return material, self.wrap(material)

    def wrap(self, material: ContentMaterial) -> CryptoHeaders:
        """The V2 header set for an *existing* data key (re-wrapping under this master).

        Used by ``objects.rewrap``. Never use it to give new content an old key.
        """
        pad = _RSA_WRITE_ALGS[self.wrap_alg]
        return CryptoHeaders(
            wrapped_key=base64.b64encode(self._public.encrypt(material.key, pad)).decode("ascii"),
            wrapped_start=base64.b64encode(self._public.encrypt(material.iv, pad)).decode("ascii"),
            wrap_alg=self.wrap_alg,
            cek_alg=CEK_AES_CTR,
            legacy=False,
            matdesc=dict(self.matdesc) if self.matdesc else None,
        )


def _load_private(data: bytes, passphrase: bytes | None, source: str) -> object:
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        # cryptography raises TypeError both for "encrypted but no password" and for
        # "password given but the key is not encrypted".
        if passphrase is None:
            raise KeyFileError(f"{source}: private key is passphrase-protected; "
                               "give its passphrase") from None
        try:
            return serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyFileError(f"{source}: not a valid PEM private key") from None
    except (ValueError, UnsupportedAlgorithm):
        hint = "wrong passphrase or " if passphrase is not None or b"ENCRYPTED" in data else ""
        raise KeyFileError(f"{source}: cannot load private key ({hint}not a valid PEM key)") from None


class _Flight:
    """One unwrap in progress; followers wait on ``done`` and take its outcome."""

    __slots__ = ("done", "result", "error", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.done = threading.Event()
        self.result: ContentMaterial | None = None
        self.error: OssEncError | None = None


def _copy_error(exc: OssEncError, old_name: str, new_name: str) -> OssEncError:
    """A fresh exception for another caller, naming that caller's object.

    Fresh because raising one object in many threads tangles tracebacks; renamed because two
    objects can share a wrapped key (a server-side copy), and the log must name the one read.
    The same object's failure again is a ``repeat`` (logged once, by whoever saw it first).
    """
    msg = str(exc)
    if msg.startswith(old_name + ": "):
        msg = new_name + ": " + msg[len(old_name) + 2:]
    try:
        err = type(exc)(msg)
    except Exception:  # pragma: no cover - exotic subclass signature
        err = OssEncError(msg)
    err.repeat = exc.repeat or old_name == new_name
    return err


CacheKey = tuple[str, str, str]


def _claims(master: MasterKey, h: CryptoHeaders) -> bool:
    claims = getattr(master, "claims", None)
    try:
        return bool(claims(h)) if callable(claims) else False
    except Exception:  # a misbehaving plug-in only loses its priority
        return False


class KeyRing:
    """Opens objects with whichever configured master key fits; wraps new ones with ``writer``.

    Thread-safe. ``open`` may block for a remote unwrap; callers on an event loop run it in a
    worker thread. Unwrapped material is cached in memory only (never on disk), bounded by
    ``cache_entries`` (LRU) and ``cache_ttl`` seconds; ``cache_entries=0`` disables the cache.
    Permanent failures (WrongKeyError, FormatError: the masters never change) are remembered
    for ``negative_ttl`` seconds so that re-reading an object nobody can open does not hit a
    rate-limited KMS again and again; transient ones (KeyUnavailableError) never are.
    """

    def __init__(self, masters: Sequence[MasterKey], *, cache_entries: int = 4096,
                 cache_ttl: float = 3600.0, negative_ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not masters:
            raise ValueError("a KeyRing needs at least one master key")
        self.masters: tuple[MasterKey, ...] = tuple(masters)
        self.writer: MasterKey = self.masters[0]
        #: ``new_object`` needs no I/O (the writer wraps locally): callers on an event loop
        #: may call it there instead of in a worker thread
        self.local_writer = bool(getattr(self.writer, "LOCAL_WRAP", False))
        self._cache_entries = max(0, int(cache_entries))
        self._cache_ttl = float(cache_ttl)
        self._negative_ttl = float(negative_ttl)
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[CacheKey, tuple[ContentMaterial, float]] = OrderedDict()
        self._failed: OrderedDict[CacheKey, tuple[OssEncError, str, float]] = OrderedDict()
        self._inflight: dict[CacheKey, _Flight] = {}
        self.unwrap_calls = 0       # MasterKey.unwrap invocations (cache misses x keys tried)
        self.cache_hits = 0

    # -- cache ----------------------------------------------------------------------------
    @staticmethod
    def cache_key(h: CryptoHeaders) -> CacheKey:
        return (h.wrap_alg, h.wrapped_key, h.wrapped_start)

    def _cache_get(self, ck: CacheKey) -> ContentMaterial | None:
        entry = self._cache.get(ck)
        if entry is None:
            return None
        material, expires = entry
        if expires <= self._clock():
            del self._cache[ck]
            return None
        self._cache.move_to_end(ck)
        return material

    def _cache_put(self, ck: CacheKey, material: ContentMaterial) -> None:
        if self._cache_entries <= 0 or self._cache_ttl <= 0:
            return
        self._cache[ck] = (material, self._clock() + self._cache_ttl)
        self._cache.move_to_end(ck)
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)

    def _failure_get(self, ck: CacheKey) -> tuple[OssEncError, str] | None:
        entry = self._failed.get(ck)
        if entry is None:
            return None
        if entry[2] <= self._clock():
            del self._failed[ck]
            return None
        return entry[0], entry[1]

    def _failure_put(self, ck: CacheKey, exc: OssEncError, what: str) -> None:
        if self._cache_entries <= 0 or self._negative_ttl <= 0:
            return
        if not isinstance(exc, (WrongKeyError, FormatError)):
            return
        self._failed[ck] = (exc, what, self._clock() + self._negative_ttl)
        self._failed.move_to_end(ck)
        while len(self._failed) > self._cache_entries:
            self._failed.popitem(last=False)

    def clear_cache(self) -> None:
        """Drop every cached data key and remembered failure (e.g. after a key was revoked)."""
        with self._lock:
            self._cache.clear()
            self._failed.clear()

    @property
    def cache_size(self) -> int:
        with self._lock:
            return len(self._cache)

    # -- reading --------------------------------------------------------------------------
    def open(self, headers: Mapping[str, str] | CryptoHeaders, *, object_name: str = "") -> ContentMaterial:
        """The data key of the object with these headers.

        Concurrent calls for the same wrapped key share one unwrap: N readers opening one
        object cost one (possibly remote, rate-limited) call, not N.
        """
        what = object_name or "object"
        if isinstance(headers, CryptoHeaders):
            h: CryptoHeaders | None = headers
        else:
            try:
                h = parse_headers(headers)
            except FormatError as exc:
                raise FormatError(f"{what}: {exc}") from None
        if h is None:
            raise FormatError(f"{what}: object is not client-side encrypted")
        ck = self.cache_key(h)
        with self._lock:
            hit = self._cache_get(ck)
            if hit is not None:
                self.cache_hits += 1
                return hit
            failed = self._failure_get(ck)
            if failed is not None:
                raise _copy_error(failed[0], failed[1], what)
            flight = self._inflight.get(ck)
            leader = flight is None
            if flight is None:
                flight = self._inflight[ck] = _Flight(what)
        if not leader:
            flight.done.wait()
            if flight.result is not None:
                return flight.result
            assert flight.error is not None
            raise _copy_error(flight.error, flight.what, what)
        try:
            material = self._unwrap(h, what)
            flight.result = material
        except OssEncError as exc:
            flight.error = exc
            raise
        except BaseException:
            flight.error = KeyUnavailableError(f"{what}: data key unwrap was interrupted")
            raise
        finally:
            with self._lock:
                if flight.result is not None:
                    self._cache_put(ck, flight.result)
                elif flight.error is not None:
                    self._failure_put(ck, flight.error, what)
                del self._inflight[ck]
            flight.done.set()
        return material

    def _candidates(self, h: CryptoHeaders) -> list[MasterKey]:
        exact: list[MasterKey] = []
        loose: list[MasterKey] = []
        for m in self.masters:
            try:
                usable = matdesc_matches(m.matdesc, h.matdesc) and m.can_unwrap(h)
            except Exception as exc:  # a misbehaving plug-in must not kill the caller
                log.warning("%s.can_unwrap failed (%s); skipping it", m.name, type(exc).__name__)
                usable = False
            if not usable:
                continue
            (exact if h.matdesc is not None and m.matdesc is not None else loose).append(m)
        return sorted(exact + loose, key=lambda m: not _claims(m, h))  # stable: claimed first

    def _unwrap(self, h: CryptoHeaders, what: str) -> ContentMaterial:
        candidates = self._candidates(h)
        if not candidates:
            desc = f" and matdesc {h.matdesc}" if h.matdesc else ""
            public_only = [m.name for m in self.masters if getattr(m, "has_private", True) is False]
            hint = f" (public-only, cannot decrypt: {', '.join(public_only)})" if public_only else ""
            raise WrongKeyError(f"{what}: no configured master key opens wrap-alg "
                                f"{h.wrap_alg!r}{desc}{hint}")
        failures: list[tuple[MasterKey, OssEncError]] = []
        weak: ContentMaterial | None = None
        for m in candidates:
            with self._lock:
                self.unwrap_calls += 1
            try:
                material = m.unwrap(h)
                if not isinstance(material, ContentMaterial):
                    raise KeyUnavailableError(f"returned {type(material).__name__}, not ContentMaterial")
            except OssEncError as exc:
                log.debug("%s: %s could not unwrap: %s", what, m.name, exc)
                failures.append((m, exc))
                continue
            except Exception as exc:  # a misbehaving plug-in must not kill the caller
                log.warning("%s: %s failed unexpectedly (%s)", what, m.name, type(exc).__name__)
                failures.append((m, KeyUnavailableError(f"unexpected {type(exc).__name__}")))
                continue
            if _plausible(h, material):
                log.debug("%s: opened with %s", what, m.name)
                return material
            if weak is None:
                weak = material
        if weak is not None:
            log.debug("%s: only an implausible IV unwrapped; using it", what)
            return weak
        reasons = "; ".join(f"{m.name}: {exc}" for m, exc in failures)
        for kind in (KeyServiceUnavailableError, KeyUnavailableError, FormatError):   # outage (EIO) first
            if any(isinstance(exc, kind) for _, exc in failures):
                err = kind(f"{what}: cannot unwrap the data key: {reasons}")
                err.repeat = all(exc.repeat for _, exc in failures)
                raise err
        raise WrongKeyError(f"{what}: wrong key ({len(failures)} tried): {reasons}")

    # -- writing --------------------------------------------------------------------------
    def new_object(self, *, data_size: int | None = None,
                   part_size: int | None = None) -> tuple[ContentMaterial, dict[str, str]]:
        """Fresh material for a new object and the lower-case CSE headers to send with it.

        data-size/part-size appear only when given (multipart uploads need both). The new
        material is cached, so reading back what was just written costs no unwrap.
        """
        if part_size is not None and (part_size <= 0 or part_size % BLOCK_SIZE):
            raise ValueError("part_size must be a positive multiple of 16")
        if data_size is not None and data_size < 0:
            raise ValueError("data_size must be >= 0")
        material, h = self.writer.wrap_new()
        h = replace(h, data_size=data_size, part_size=part_size)
        with self._lock:
            self._cache_put(self.cache_key(h), material)
        return material, emit_headers(h)
