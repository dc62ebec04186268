"""Names <-> object keys: every key a listing shows is a name a program can use, and every
name a program can give is a key OSS takes, both ways without loss.

Why it is needed: OSS keys are UTF-8 strings of at most 1023 bytes in which any segment
between two ``/`` may be empty, ``.`` or ``..`` (SPEC D.5, DOC 185228), while a POSIX name is
any non-empty byte string without ``/`` other than ``.`` and ``..``. Old archives (Latin-1,
GBK, CP437) carry names that are not UTF-8; SDKs write keys like ``a//b.txt``.

The mapping (documented in the README, "Layout in the bucket"):

- Inside the mount a name is a ``str`` decoded from the kernel's bytes with
  ``surrogateescape`` (``from_bytes``): a byte that is not part of valid UTF-8 becomes a lone
  surrogate U+DC80..U+DCFF, and ``to_bytes`` gives the same bytes back.
- In a key, such a byte ``b`` is stored as the Private Use Area character U+F700 + ``b``
  (U+F780..U+F7FF), which is valid UTF-8; a listing turns it back into the byte.
- A key segment that cannot be a name is shown as a stand-in name: the empty segment as
  U+F700, ``.`` as U+F72E and ``..`` as U+F72E U+F72E (U+F700 + the byte of ``.``); the
  stand-ins given as names map back to those segments.
- A name that is valid UTF-8 but holds a character of U+F780..U+F7FF could not be told from
  an escaped byte; it is refused with EINVAL when it is created.
"""
from __future__ import annotations

_BASE = 0xF700
EMPTY = chr(_BASE)                       # the empty key segment (a//b)
DOT = chr(_BASE + ord("."))              # a "." key segment
DOTDOT = DOT * 2                         # a ".." key segment
_SEGMENT_OF = {EMPTY: "", DOT: ".", DOTDOT: ".."}
_NAME_OF = {v: k for k, v in _SEGMENT_OF.items()}
_TO_KEY = {c: _BASE + (c - 0xDC00) for c in range(0xDC80, 0xDD00)}     # surrogate -> PUA
_TO_NAME = {v: k for k, v in _TO_KEY.items()}                        # PUA -> surrogate


def from_bytes(raw: bytes) -> str:
    """A name from the kernel (any bytes) as the model knows it."""
    return raw.decode("utf-8", "surrogateescape")


def to_bytes(name: str) -> bytes:
    """The bytes the kernel gets for a name (``from_bytes`` undone)."""
    return name.encode("utf-8", "surrogateescape")


def segment(name: str) -> str:
    """The key segment of one name (as decoded from the kernel with surrogateescape)."""
    if name.isascii():
        return name
    seg = _SEGMENT_OF.get(name)
    return seg if seg is not None else name.translate(_TO_KEY)


def name(seg: str) -> str:
    """The name a listing shows for one key segment ("" for none: a segment always has one)."""
    if seg.isascii() and seg not in _NAME_OF:
        return seg
    shown = _NAME_OF.get(seg)
    return shown if shown is not None else seg.translate(_TO_NAME)


def key_path(path: str) -> str:
    """The key form of a mount path ``a/b/c`` (names joined by ``/``; "" is the root)."""
    if path.isascii():
        return path
    return "/".join(segment(n) for n in path.split("/"))


def path_of_key(rest: str) -> str:
    """The mount path of a key (without the mount prefix): the inverse of ``key_path``."""
    if rest.isascii() and "//" not in rest and "/./" not in rest and "/../" not in rest \
            and not rest.startswith(("/", "./", "../")):
        return rest
    return "/".join(name(seg) for seg in rest.split("/"))


def usable(name: str) -> bool:
    """False for a valid-UTF-8 name that holds a character of the escape range: it would
    list back as other bytes, so it cannot be created."""
    return name.isascii() or not any(0xF780 <= ord(c) <= 0xF7FF for c in name)
