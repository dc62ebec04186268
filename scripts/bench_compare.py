"""Before/after table of two ``scripts/bench.py --json`` files (Markdown, to stdout).

Usage: .venv/bin/python scripts/bench_compare.py BEFORE.json AFTER.json

One row per workload (and per variant such as ``--write-back``) and profile found in both:
the mount's rate and its ratio against oss2 CryptoBucket (x(b), measured side by side within
each run), before and after; ``ls -l`` rows also give the time against the listing requests
alone; random reads give the bytes fetched per read.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Iterator


def rows(report: dict[str, Any]) -> Iterator[tuple[tuple[str, str], dict[str, Any], str]]:
    for profile, p in report["profiles"].items():
        for w, e in p["workloads"].items():
            unit = e["unit"]
            m = dict(e["systems"]["mount"], ratio=e["ratio_vs_crypto_bucket"])
            yield (profile, w), m, unit
            for v, rec in e.get("variants", {}).items():
                yield (profile, f"{w} ({v.removeprefix('mount_')})"), \
                    dict(rec, ratio=rec["ratio_vs_crypto_bucket"]), unit


def extra(rec: dict[str, Any]) -> str:
    if "time_vs_listing_requests" in rec:
        return f"{rec['time_vs_listing_requests']:.2f}x listing"
    if "bytes_from_oss_per_read" in rec:
        return f"{rec['bytes_from_oss_per_read'] / 1024:.0f} KiB/read"
    return ""


def main(before_path: str, after_path: str) -> int:
    before = {k: (r, u) for k, r, u in rows(json.load(open(before_path)))}
    after = list(rows(json.load(open(after_path))))
    print("| profile | workload | before: mount | before: x(b) | after: mount | after: x(b) | note before → after |")
    print("|---|---|---|---|---|---|---|")
    for key, rec, unit in after:
        if key not in before:
            continue
        old, _ = before[key]
        note = " → ".join(x for x in (extra(old), extra(rec)) if x)
        print(f"| {key[0]} | {key[1]} | {old['rate']:,.1f} {unit} | {old['ratio']:.2f} | "
              f"{rec['rate']:,.1f} {unit} | **{rec['ratio']:.2f}** | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
