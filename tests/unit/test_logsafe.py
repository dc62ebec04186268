"""Outside text is one printable line in logs (ossencfs/logsafe.py, issue 13 item 6)."""
from __future__ import annotations

import io
import logging

from ossencfs.logsafe import SafeFormatter, printable


def test_printable_escapes_controls_and_keeps_other_text():
    assert printable("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert printable("\x00\x1b[2K\x7f\x85") == "\\x00\\x1b[2K\\x7f\\x85"
    assert printable("x\u2028y\u202ez") == "x\\u2028y\\u202ez"
    assert printable("日本語/ü space+%") == "日本語/ü space+%"


def test_safe_formatter_keeps_each_record_on_one_line():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeFormatter("ossencfs: %(levelname)s: %(message)s"))
    log = logging.getLogger("test-logsafe")
    log.addHandler(handler)
    try:
        log.error("read %s: %s", "oss://b/x\nossencfs: ERROR: forged", ValueError("bad\nvalue"))
    finally:
        log.removeHandler(handler)
    assert out.getvalue() == "ossencfs: ERROR: read oss://b/x\\nossencfs: ERROR: forged: bad\\nvalue\n"
