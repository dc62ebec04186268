"""The KeyRing: which master key opens an object, and what new objects are wrapped with.

A master key wraps each object's random data key and IV (SPEC A.3): RSA key pairs
(``rsakey.py``) and KMS CMKs (``ossencfs/kms``) plug in through the ``MasterKey`` protocol
(``material.py``). Unwrapping may be remote, slow and rate-limited (KMS), so the KeyRing keeps
unwrapped material in a memory-only LRU+TTL cache and lets concurrent opens of one object share
a single unwrap (single-flight). The names of ``material.py`` and ``rsakey.py`` are importable
from here too (``from ossencfs.envelope.keys import KeyRing, RsaMasterKey``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Callable, Mapping, Sequence

from ..errors import (FormatError, KeyServiceUnavailableError, KeyUnavailableError, OssEncError,
                      WrongKeyError)
from .ctr import BLOCK_SIZE
from .format import CryptoHeaders, emit_headers, parse_headers
from .material import ContentMaterial, MasterKey, matdesc_matches, material_from_plaintext
from .rsakey import RsaMasterKey

__all__ = ["CacheKey", "ContentMaterial", "KeyRing", "MasterKey", "RsaMasterKey",
           "matdesc_matches", "material_from_plaintext"]

log = logging.getLogger(__name__)


def _plausible(h: CryptoHeaders, material: ContentMaterial) -> bool:
    """Every known writer zeroes IV[8..11] (SPEC A.2). A PKCS#1 v1.5 unwrap with a wrong key
    returns random bytes of a random length, which are 32/16 long once in ~10^4..10^5 tries;
    such a result almost never has those four bytes zero, so it is tried last."""
    return h.legacy or (material.counter0 >> 32) & 0xFFFFFFFF == 0


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

    def forget(self, headers: Mapping[str, str]) -> None:
        """Drop the cached data key of the object these headers (``new_object``'s) would
        carry: one made for an object that was never written (``fs.keypool``)."""
        h = parse_headers(headers)
        if h is not None:
            with self._lock:
                self._cache.pop(self.cache_key(h), None)

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

    def open_with(self, h: CryptoHeaders, *, object_name: str = "") -> tuple[ContentMaterial, MasterKey]:
        """The data key and the master key that opened it (BLOCKING; no cache, no single-flight).

        For bulk tools (``ossencfs verify``/``rotate``) that must know *which* key opens an
        object; raises like ``open``.
        """
        return self._unwrap_with(h, object_name or "object")

    def _unwrap(self, h: CryptoHeaders, what: str) -> ContentMaterial:
        return self._unwrap_with(h, what)[0]

    def _unwrap_with(self, h: CryptoHeaders, what: str) -> tuple[ContentMaterial, MasterKey]:
        candidates = self._candidates(h)
        if not candidates:
            desc = f" and matdesc {h.matdesc}" if h.matdesc else ""
            public_only = [m.name for m in self.masters if getattr(m, "has_private", True) is False]
            hint = f" (public-only, cannot decrypt: {', '.join(public_only)})" if public_only else ""
            raise WrongKeyError(f"{what}: no configured master key opens wrap-alg "
                                f"{h.wrap_alg!r}{desc}{hint}")
        failures: list[tuple[MasterKey, OssEncError]] = []
        weak: tuple[ContentMaterial, MasterKey] | None = None
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
                return material, m
            if weak is None:
                weak = material, m
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
