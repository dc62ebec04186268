"""``ossencfs status [MOUNTPOINT] [--cache-dir DIR] [--json]``.

Reads the state file each mount process rewrites every second (next to its pid file), so it
never talks to the mount and cannot hang on it: pending uploads with progress, retries and
their last error, recent failures and conflict copies, quarantined journal entries, and cache
use. ``--cache-dir`` also inspects cache directories of mounts that are not running (journal
entries waiting for the next mount, quarantine).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from typing import TextIO

from .procs import StateDoc, pid_alive, read_state


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _load(path: str) -> StateDoc | None:
    """The state of a running mount (None: no state file, or its process is gone)."""
    state = read_state(path)
    if state is None or not pid_alive(int(state.get("pid", 0) or 0)):
        return None
    return state


def _run_dirs() -> list[str]:
    import tempfile
    return [d for d in ("/run/ossencfs",
                        os.path.join(os.environ.get("XDG_RUNTIME_DIR", "") or "/nonexistent",
                                     "ossencfs"),
                        os.path.join(tempfile.gettempdir(), f"ossencfs-{os.getuid()}"))
            if os.path.isdir(d)]


def running_mounts() -> list[StateDoc]:
    """The state (``fs.state.snapshot``) of every running mount this user can see."""
    states = []
    for d in _run_dirs():
        for path in sorted(glob.glob(os.path.join(d, "*.json"))):
            state = _load(path)
            if state is not None:
                states.append(state)
    return states


def _offline_dir(base: str) -> dict[str, object]:
    """What a cache directory of a mount that is not running holds."""
    from ..fs.journal import list_quarantine
    staging = os.path.join(base, "staging")
    entries = []
    for path in sorted(glob.glob(os.path.join(staging, "*.json"))):
        try:
            with open(path, "rb") as f:
                e = json.loads(f.read())
            entries.append({"key": e.get("key"), "size": e.get("size", 0),
                            "committed": e.get("committed"),
                            "url": "oss://{bucket}/{prefix}".format(**e.get("mount", {}))})
        except (OSError, ValueError, KeyError, AttributeError):
            entries.append({"key": os.path.basename(path), "size": 0, "committed": None,
                            "url": "?"})
    return {"cache_dir": base, "journal": entries,
            "quarantine": list_quarantine(os.path.join(base, "quarantine"))}


def _print_state(s: StateDoc, out: TextIO) -> None:
    wb = s.get("write_back") or 0
    mode = f"write-back {wb:g} s" if wb else "upload on close"
    age = time.time() - s.get("updated", time.time())
    print(f"{s['url']} on {s['mountpoint']} (pid {s['pid']}, {mode}; "
          f"state {age:.1f} s old)", file=out)
    pending = s.get("pending") or []
    total = sum(p["size"] for p in pending)
    sent = sum(p["sent"] for p in pending)
    print(f"  pending uploads: {len(pending)} ({_size(total)}, {_size(sent)} sent)", file=out)
    for p in pending:
        pct = 100.0 * p["sent"] / p["size"] if p["size"] else 0.0
        if p["state"] == "waiting":
            what = f"waiting, upload in {p['due_in']:.0f} s"
        elif p["state"] == "retrying":
            what = (f"retry {p['attempts']} in {p['due_in']:.0f} s, last error: "
                    f"{p['last_error']}")
        else:
            what = "uploading"
        if p.get("kind") == "metadata":
            what += " (metadata change: re-upload of the stored bytes)"
        if p["state"] != "uploading" and p.get("journaled") is False:
            what += " (in memory only: the journal could not be written)"
        print(f"    {p['path']}  {_size(p['size'])}  {pct:.0f}%  {what}", file=out)
    failures = s.get("failures") or []
    if failures:
        print(f"  recent upload failures: {len(failures)}", file=out)
        for f in failures[-5:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(f["time"]))
            print(f"    {stamp} {f['key']}: {f['error']}", file=out)
    for c in s.get("conflicts") or []:
        if c.get("copy"):
            print(f"  conflict: {c['key']} changed by another client; local version saved as "
                  f"{c['copy']}", file=out)
        else:
            print(f"  conflict: {c['key']} changed or deleted by another client; a metadata "
                  f"change made here was dropped", file=out)
    _print_quarantine(s.get("quarantine") or [], out)
    for o in s.get("other_journals") or []:
        print(f"  journal of another mount: {o['entries']} entr"
              f"{'y' if o['entries'] == 1 else 'ies'} of {o.get('url', '?')} in {o['dir']}",
              file=out)
    c = s.get("cache") or {}
    line = (f"  cache: {_size(c.get('block_bytes', 0))} blocks on disk, "
            f"{_size(c.get('memory_bytes', 0))} in memory, "
            f"{_size(c.get('staged_bytes', 0))} staged of {_size(c.get('limit', 0))} limit")
    disk = c.get("disk")
    if disk:
        line += f"; disk free {_size(disk['free'])}"
    print(line + f"  [{s.get('cache_dir')}]", file=out)


def _print_quarantine(items: list[StateDoc], out: TextIO) -> None:
    if not items:
        return
    print(f"  quarantined journal entries: {len(items)}", file=out)
    for q in items:
        key = f" ({q['key']})" if q.get("key") else ""
        print(f"    {q['dir']}{key}: {q.get('reason')}", file=out)


def _status(args: argparse.Namespace) -> int:
    from ..fs.mountpaths import pidfile_for
    from ..fs.state import state_path_for
    states: list[StateDoc] = []
    if args.mountpoint:
        mp = os.path.abspath(args.mountpoint)
        state = _load(state_path_for(pidfile_for(mp)))
        if state is None and not args.cache_dir:
            print(f"ossencfs: {mp} is not mounted by a running ossencfs", file=sys.stderr)
            return 1
        if state is not None:
            states.append(state)
    else:
        states = running_mounts()
    offline: list[StateDoc] = []
    if args.cache_dir:
        live = {os.path.realpath(s["cache_dir"]) for s in states}
        root = os.path.abspath(args.cache_dir)
        for base in sorted(glob.glob(os.path.join(root, "*", "staging"))):
            base = os.path.dirname(base)
            if os.path.realpath(base) not in live:
                offline.append(_offline_dir(base))
    if args.json:
        json.dump({"mounts": states, "cache_dirs": offline}, sys.stdout, indent=2)
        print()
        return 0
    if not states and not offline:
        print("no ossencfs mounts running")
        return 0
    for s in states:
        _print_state(s, sys.stdout)
    for o in offline:
        print(f"{o['cache_dir']} (not mounted)")
        if o["journal"]:
            total = sum(e["size"] or 0 for e in o["journal"])
            print(f"  journaled, waiting for the next mount: {len(o['journal'])} "
                  f"({_size(total)})")
            for e in o["journal"]:
                print(f"    {e['url']} {e['key']}  {_size(e['size'] or 0)}")
        _print_quarantine(o["quarantine"], sys.stdout)
    return 0


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser(
        "status", help="pending uploads, failures, quarantined journals and cache use",
        description="Show what a running mount (or every running mount) is doing: pending "
                    "uploads with progress, retries and their reasons, conflict copies, "
                    "quarantined journal entries, cache use.")
    p.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="also inspect cache directories under DIR of mounts not running")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_status)
