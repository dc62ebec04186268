"""Text from outside (object names, server messages) made safe for one-line logs and terminals.

An object key may hold any character, newlines and terminal escape sequences included; logged
as is, such a name forges whole log lines or rewrites the terminal. ``printable`` escapes every
control character (C0, DEL, C1), the Unicode line and paragraph separators and the bidirectional
overrides (which reorder what a reader sees) as ``\\n``, ``\\r``, ``\\t`` or ``\\xNN`` /
``\\uNNNN``; everything else, non-ASCII names included, is kept. ``SafeFormatter`` applies it to
every log record's message, so each record is one line whatever names it carries (a traceback
attached to a record stays as Python formats it).
"""
from __future__ import annotations

import logging
import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    if c in _SHORT:
        return _SHORT[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def printable(text: object) -> str:
    """``str(text)`` with control characters escaped (see the module docstring)."""
    return _UNSAFE.sub(_escape, str(text))


class SafeFormatter(logging.Formatter):
    """A Formatter whose records' messages (with their arguments) are always one printable line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)
