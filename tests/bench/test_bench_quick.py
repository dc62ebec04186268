"""The benchmark script runs end to end (quick mode) and reports every figure.

No timing assertions: speed is measured by ``scripts/bench.py``, never asserted. This test only
proves that the script drives every workload through every system, that the reads really went
to OSS, and that the JSON carries what the README table is made from.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("seq_write", "seq_read", "random_read_4k", "small_create", "small_read", "ls_l", "cp_a", "mv_dir",
             "kms", "chmod_large")
SYSTEMS = ("mount", "crypto_bucket", "plain_bucket")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def _fuse_ok() -> bool:
    return os.path.exists("/dev/fuse") and os.geteuid() == 0 and shutil.which("fusermount3") is not None


def _bench(tmp_path: Path, *args: str, timeout: float = 140) -> subprocess.CompletedProcess[str]:
    """scripts/bench.py on the loopback profile, its JSON to ``tmp_path / "bench.json"``
    (skips without FUSE)."""
    if not _fuse_ok():
        pytest.skip("needs root, /dev/fuse and fusermount3")
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--profile", "loopback", *args,
                           "--json", str(tmp_path / "bench.json"), "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=timeout, cwd=str(ROOT), env=env)


@pytest.mark.mount
@pytest.mark.timeout(150)
def test_quick_bench_reports_every_workload_for_every_system(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = _bench(tmp_path, "--quick")
    assert r.returncode == 0, f"bench failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "ls -l" in r.stdout and "(a) mount" in r.stdout            # the terminal table was printed
    data = json.loads(out.read_text())

    dt.datetime.fromisoformat(data["date"])
    machine = data["machine"]
    assert machine["nproc"] >= 1 and machine["memory_bytes"] > 0 and "cpu_model" in machine
    assert data["parameters"]["quick"] is True
    probe = data["profiles"]["loopback"]["cpu_probe"]                # the CPU's speed around the runs
    for when in ("before", "after"):
        assert probe[when]["python_loop_seconds"] > 0 and probe[when]["aes_ctr_mb_per_s"] > 0, when
    assert "CPU probe" in r.stdout

    workloads = data["profiles"]["loopback"]["workloads"]
    assert set(WORKLOADS) <= set(workloads)
    size = data["parameters"]["size"]
    for w in WORKLOADS:
        entry = workloads[w]
        assert entry["ratio_vs_crypto_bucket"] > 0 and entry["ratio_vs_plain_bucket"] > 0, w
        for s in SYSTEMS:
            rec = entry["systems"][s]
            assert rec["seconds"] > 0, (w, s)
            assert rec["rate"] > 0, (w, s)
            assert rec["total_requests"] > 0, (w, s)               # counted by the emulator
            assert rec["total_requests"] == sum(rec["requests"].values()), (w, s)

    for s in SYSTEMS:
        # every system really wrote and read the whole file through OSS
        assert workloads["seq_write"]["systems"][s]["bytes_to_oss"] >= size, s
        assert workloads["seq_read"]["systems"][s]["bytes_from_oss"] >= size, s
        assert workloads["random_read_4k"]["systems"][s]["bytes_from_oss_per_byte_read"] >= 1.0, s
        assert workloads["ls_l"]["systems"][s]["entries"] == data["parameters"]["ls_entries"], s
    for w in ("small_create", "cp_a"):                              # the --write-back mount, beside the default
        wb = workloads[w]["variants"]["mount_write_back"]
        assert wb["seconds"] > 0 and wb["rate"] > 0 and wb["total_requests"] > 0, w
        assert wb["bytes_to_oss"] > 0, w
    cp_a = workloads["cp_a"]
    for name, rec in (*cp_a["systems"].items(), *cp_a["variants"].items()):  # requests per file, by operation
        per = rec["requests_per_file"]
        assert per.get("PutObject", 0) >= 1, name
        assert abs(sum(per.values()) * rec["files"] - rec["total_requests"]) < 1e-6, name

    for name, rec in workloads["mv_dir"]["systems"].items():         # one CopyObject per file, server-side
        assert rec["requests"].get("CopyObject") == data["parameters"]["mv_files"] == rec["files"], name
        assert rec["bytes_from_oss"] < rec["files"] * 4096, name

    chmod = workloads["chmod_large"]
    csize = data["parameters"]["chmod_size"]
    crypto = chmod["systems"]["crypto_bucket"]                       # the SDK user moved the whole object
    assert crypto["bytes_from_oss"] >= csize and crypto["bytes_to_oss"] >= csize
    assert chmod["systems"]["plain_bucket"]["requests"] == {"CopyObject": 1}
    for rec in (chmod["systems"]["mount"], chmod["variants"]["mount_fsync"]):
        assert rec["bench_head_polls"] >= 1 and rec["bytes_moved"] >= 0
    assert chmod["variants"]["mount_fsync"]["head_polls_after_fsync"] == 1   # stored when fsync returned

    assert workloads["seq_write"]["systems"]["mount"]["peak_rss_bytes"] > 0
    assert workloads["seq_read"]["systems"]["mount"]["peak_rss_bytes"] > 0
    ls_mount = workloads["ls_l"]["systems"]["mount"]
    assert ls_mount["listing_requests_seconds"] > 0 and ls_mount["time_vs_listing_requests"] > 0
    entries = data["parameters"]["ls_entries"]
    # first sight: attributes by one request per entry (a HEAD, or a GET of the first bytes
    # that also answers the Encryption SDK probe: esdk_objects.EsdkObjects.head)
    first_sight = ls_mount["requests"].get("HeadObject", 0) + ls_mount["requests"].get("GetObject", 0)
    assert first_sight >= entries
    for v in ("mount_warm", "mount_listing_attrs"):                  # no request per file
        req = workloads["ls_l"]["variants"][v]["requests"]
        assert req.get("HeadObject", 0) + req.get("GetObject", 0) <= 1, v

    kms = workloads["kms"]["systems"]
    for s in ("mount", "crypto_bucket"):
        assert kms[s]["kms_calls_per_object_write"] > 0, s           # counted at the KMS server
        assert kms[s]["kms_calls_per_object_open"] > 0, s
        assert kms[s]["kms_calls_per_object_reopen"] >= 0, s
    assert kms["plain_bucket"]["kms_calls_per_object_write"] == 0


def test_scale_records_of_several_runs_merge_into_medians() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from bench_scale import median_of_runs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    runs = [{"size": 8, "name": "x", "flag": True, "w": {"seconds": s, "requests": {"Put": 2}}}
            for s in (3.0, 1.0, 2.0, 10.0)]
    got = median_of_runs(runs)
    assert got["size"] == 8 and "size_runs" not in got and got["name"] == "x" and got["flag"] is True
    assert got["w"]["seconds"] == 2.5 and got["w"]["seconds_runs"] == [3.0, 1.0, 2.0, 10.0]
    assert got["w"]["requests"] == {"Put": 2}


@pytest.mark.mount
@pytest.mark.timeout(150)
def test_scale_only_runs_and_seeds_the_named_scale_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    base = ["--only", "", "--runs", "3", "--scale", "--scale-entries", "30", "--scale-dirs", "3",
            "--scale-per-dir", "4"]
    r = _bench(tmp_path, *base, "--scale-only", "many_dirs,big_dir")
    assert r.returncode == 0, f"bench failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    scale = json.loads(out.read_text())["profiles"]["loopback"]["scale"]
    assert {"big_dir", "many_dirs"} <= set(scale) and not {"huge_file", "parallel"} & set(scale)
    assert scale["big_dir"]["ls_l_cold"]["lines"] == 31                  # "total" + 30 entries
    assert scale["big_dir"]["rss_bytes_per_known_inode"] > 0
    assert scale["many_dirs"]["lines"] == 1 + 3 * (1 + 4)
    # three runs each, medians: the time of every run is kept (times differ; counts do not)
    assert scale["runs"] == 3 and "lines_runs" not in scale["many_dirs"]
    assert len(scale["many_dirs"]["seconds_runs"]) == 3
    assert scale["many_dirs"]["seconds"] == sorted(scale["many_dirs"]["seconds_runs"])[1]
    assert len(scale["big_dir"]["find"]["seconds_runs"]) == 3
    assert "directory of 30 objects" in r.stdout and "huge file" not in r.stdout
    bad = _bench(tmp_path, *base, "--scale-only", "big_dir,nope", timeout=60)
    assert bad.returncode != 0 and "unknown nope" in bad.stderr
