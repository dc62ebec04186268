"""A small, strict reader of the DER subset the Encryption SDK writes (docs/esdk.md).

Only what ``ASN1Cipher`` uses: SEQUENCE (0x30), SET OF (0x31), INTEGER (0x02) and OCTET
STRING (0x04), definite lengths in their shortest form (X.690 10.1), no trailing bytes.

Why not asn1crypto or pyasn1: a ranged reader needs the *offsets* of the ciphertext inside the
object, and must parse a message whose ciphertext it has not downloaded (a prefix of the
object). Both libraries want the whole encoding in memory and hide offsets; this reader is
~100 lines, has no dependency and refuses anything outside the subset (BER lengths,
indefinite lengths, long-form tags) with ``FormatError``, which a tampered header must meet.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import FormatError

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
OCTET_STRING = 0x04

#: The longest length field we accept (4 bytes: up to 4 GiB - 1 of content).
_MAX_LENGTH_BYTES = 4


class Truncated(FormatError):
    """The bytes end inside an element; ``needed`` is how many bytes of the whole encoding
    (from offset 0 of the buffer given to ``Reader``) would let the parse go on."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


@dataclass(frozen=True)
class Element:
    """One TLV: ``start`` = offset of its tag byte, ``body`` = offset of its content,
    ``end`` = offset just past its content (all offsets in the buffer given to the Reader)."""

    tag: int
    start: int
    body: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.body


class Reader:
    """Reads TLVs from ``data`` in ``[pos, limit)``; ``total`` is the length of the whole
    encoding when ``data`` is only a prefix of it (then ``Truncated`` says how much more is
    needed), else ``len(data)``."""

    def __init__(self, data: bytes | memoryview, pos: int = 0, limit: int | None = None,
                 total: int | None = None) -> None:
        self.data = memoryview(data)
        self.pos = pos
        self.total = len(data) if total is None else total
        self.limit = self.total if limit is None else limit

    def at_end(self) -> bool:
        return self.pos >= self.limit

    def _byte(self, at: int) -> int:
        if at >= self.limit:
            raise FormatError(f"DER element runs past its container at byte {at}")
        if at >= len(self.data):
            raise Truncated(f"DER cut at byte {at}", at + 1)
        return self.data[at]

    def element(self, tag: int) -> Element:
        """The next element, which must have ``tag``; its content is skipped, not read."""
        start = self.pos
        got = self._byte(start)
        if got != tag:
            raise FormatError(f"DER tag 0x{got:02x} at byte {start}, expected 0x{tag:02x}")
        first = self._byte(start + 1)
        if first < 0x80:
            length, body = first, start + 2
        else:
            count = first & 0x7F
            if count == 0 or count > _MAX_LENGTH_BYTES:
                raise FormatError(f"DER length form 0x{first:02x} at byte {start + 1} "
                                  f"(indefinite or too long)")
            raw = bytes(self._byte(start + 2 + i) for i in range(count))
            length = int.from_bytes(raw, "big")
            if raw[0] == 0 or length < 0x80:
                raise FormatError(f"DER length at byte {start + 1} is not in shortest form")
            body = start + 2 + count
        end = body + length
        if end > self.limit:
            raise FormatError(f"DER element at byte {start} ({length} bytes) runs past its "
                              f"container (ends at {self.limit})")
        self.pos = end
        return Element(tag, start, body, end)

    def inside(self, el: Element) -> "Reader":
        """A reader of ``el``'s content."""
        return Reader(self.data, el.body, el.end, self.total)

    def value(self, el: Element) -> bytes:
        """The content bytes of ``el`` (Truncated when they are not in the buffer)."""
        if el.end > len(self.data):
            raise Truncated(f"DER content cut at byte {len(self.data)}", el.end)
        return bytes(self.data[el.body:el.end])

    def octets(self) -> bytes:
        el = self.element(OCTET_STRING)
        return self.value(el)

    def integer(self) -> int:
        """A non-negative INTEGER in minimal encoding."""
        raw = self.value(self.element(INTEGER))
        if not raw or (len(raw) > 1 and raw[0] == 0 and raw[1] < 0x80) or raw[0] >= 0x80:
            raise FormatError("DER INTEGER is empty, negative or not minimal")
        if len(raw) > 4:
            raise FormatError("DER INTEGER too large")
        return int.from_bytes(raw, "big")

    def done(self) -> None:
        if self.pos != self.limit:
            raise FormatError(f"{self.limit - self.pos} unexpected bytes after DER element "
                              f"at byte {self.pos}")
