"""``scripts/bench_mounts.py`` runs end to end (quick mode) against s3fs and rclone.

No timing assertions. What it proves: both S3 tools (installed by ``scripts/setup.sh``) mount
the emulator through its S3-compatible access and do every workload, their data checked in the
bucket by the script; and the JSON carries every figure of the README's table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_bench_quick import ROOT, _PROXY_VARS, _fuse_ok

WORKLOADS = ("seq_write", "seq_read", "random_read", "small_create", "small_read", "ls_l", "cp_a", "mv_dir")
SYSTEMS = ("ossencfs", "ossencfs-wb", "s3fs", "rclone")
WRITES = ("seq_write", "small_create", "cp_a", "mv_dir")       # all that ossencfs-wb does


@pytest.mark.mount
@pytest.mark.timeout(200)
def test_quick_mount_comparison_runs_every_workload_on_every_mount(tmp_path: Path) -> None:
    if not _fuse_ok():
        pytest.skip("needs root, /dev/fuse and fusermount3")
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    out = tmp_path / "mounts.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_mounts.py"), "--quick", "--profile",
                        "loopback", "--json", str(out), "--workdir", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=190, cwd=str(ROOT), env=env)
    assert r.returncode == 0, f"bench_mounts failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "left out" not in r.stdout, r.stdout         # s3fs and rclone are on the PATH
    data = json.loads(out.read_text())
    assert data["systems"] == list(SYSTEMS)
    assert data["versions"]["s3fs"] and data["versions"]["rclone"]
    res = data["profiles"]["loopback"]["workloads"]
    for w in WORKLOADS:
        for s in SYSTEMS:
            if s == "ossencfs-wb" and w not in WRITES:
                assert s not in res[w]
                continue
            rec = res[w][s]
            assert rec["seconds"] > 0 and rec["total_requests"] > 0 and rec["peak_rss_bytes"] > 0, (w, s)
        assert res[w]["ratio_s3fs"] > 0 and res[w]["ratio_rclone"] > 0
        assert (w in WRITES) == ("ratio_rclone_vs_write_back" in res[w])
    assert res["random_read"]["ossencfs"]["requests"]["GetObject"] > 2     # 20 reads, not one
    writes = res["small_create"]
    for s in SYSTEMS:                                    # every file was sent by a PUT of its own
        assert writes[s]["requests"].get("PutObject", 0) >= 20, (s, writes[s]["requests"])
    assert all(res["peak_rss_bytes"][s] > 0 for s in SYSTEMS)
