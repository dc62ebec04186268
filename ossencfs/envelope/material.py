"""What a master key unwraps and the protocol every master key follows.

``ContentMaterial`` is one object's plaintext data key and initial counter (SPEC A.3);
``MasterKey`` is what the KeyRing (``keys.py``) needs from an RSA pair (``rsakey.py``) or a KMS
CMK (``ossencfs/kms``); ``material_from_plaintext`` checks what any of them unwrapped, so every
master applies the same shape checks. Pure: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, runtime_checkable

from ..errors import WrongKeyError
from .ctr import IV_SIZE, KEY_SIZE, CtrStream, counter_to_iv, crypt_at, iv_to_counter
from .format import CryptoHeaders

_COUNTER_LIMIT = 1 << 128


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
    """What the KeyRing needs from a master key: an RSA pair (``rsakey.py``) or a KMS CMK
    (``ossencfs.kms``)."""

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
