"""The mount caps glibc's malloc arenas before its threads start (``fs.daemon``): peak RSS of
a 1 GiB copy ~140 -> ~97 MiB (scripts/bench.py reports it; no memory assertion here)."""
from __future__ import annotations

import subprocess
import sys


def test_the_arena_cap_reaches_glibc():
    # in a fresh interpreter: the setting is process-wide
    code = "from ossencfs.fs.daemon import limit_malloc_arenas as f; raise SystemExit(0 if f() else 1)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
