"""The log guard of the mount fixture (``conftest.log_problems``) itself."""
from __future__ import annotations

from tests.mount.conftest import log_problems, log_records

LOG = """ossencfs: INFO: mounted oss://test-bucket/ on /mnt
ossencfs: ERROR: getattr oss://test-bucket/d/f1: unexpected KeyError
Traceback (most recent call last):
  File "/x/ossencfs/fs/model.py", line 381, in _stat_ahead
KeyError: 'f4'
ossencfs: ERROR: read oss://test-bucket/x: network unreachable
ossencfs: INFO: a file failed unexpectedly? no: that is another word
Exception in thread Thread-3:
Traceback (most recent call last):
ValueError: boom
ossencfs: INFO: unmounted /mnt
"""


def test_records_keep_their_tracebacks():
    records = log_records(LOG)
    assert len(records) == 5
    assert records[1].endswith("KeyError: 'f4'") and records[3].endswith("ValueError: boom")


def test_unexpected_exceptions_and_tracebacks_are_found_unless_allowed():
    found = log_problems(LOG, [])
    assert [r.splitlines()[0] for r in found] == [
        "ossencfs: ERROR: getattr oss://test-bucket/d/f1: unexpected KeyError",
        "ossencfs: INFO: a file failed unexpectedly? no: that is another word"]
    assert "ValueError: boom" in found[1]        # not "unexpectedly": the thread's traceback
    assert [r.splitlines()[0] for r in log_problems(LOG, [r"KeyError: 'f4'", "boom"])] == []
    assert log_problems("ossencfs: ERROR: read x: network unreachable\n", []) == []
