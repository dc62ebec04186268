"""What ``ossencfs status`` and ``ossencfs umount`` read: the mount's state as a JSON file.

The mount process rewrites it atomically (tmp + rename) every second; readers never talk to
the mount process, so a busy or hung mount cannot hang ``status``. It holds names, sizes,
progress and error texts only (no keys, no content). Written in the run directory beside the
pid file (so a full cache disk does not stop it) and removed at a clean exit.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import TYPE_CHECKING

import trio

from ..atomicfile import replace_file
from .journal import list_quarantine

if TYPE_CHECKING:
    from .mounter import Mount

log = logging.getLogger(__name__)

INTERVAL = 1.0
COALESCE = 0.05      # at least this long after a change before the next snapshot
SHARE = 0.01         # ... and long enough that snapshots take at most this share of the loop


def state_path_for(pidfile: str) -> str:
    return pidfile[:-4] + ".json" if pidfile.endswith(".pid") else pidfile + ".json"


def snapshot(mount: Mount) -> dict[str, object]:
    """The state file's JSON document (read back by ``cli.statuscmd``): names, sizes,
    progress, errors; no keys, no content."""
    model = mount.model
    wb = model.writeback
    now_trio = trio.current_time()
    uploader = model.uploader
    inflight = {p.key: p for p in uploader.pending.values()}
    pending: list[dict[str, object]] = []
    seen: set[int] = set()
    for job in list(wb.jobs.values()) if wb is not None else []:
        node = job.node
        st = node.staging
        key = st.key if st is not None else model.okey(node.path)
        prog = inflight.get(key)
        seen.add(id(node))
        pending.append({
            "path": node.path, "key": key, "size": st.size if st is not None else node.size,
            "sent": prog.sent if prog is not None else 0,
            "state": "uploading" if job.running and prog is not None else
                     ("retrying" if job.attempts else "waiting"),
            "attempts": job.attempts, "last_error": job.last_error,
            "due_in": max(0.0, job.due_trio - now_trio), "since": job.since_wall,
            "kind": "metadata" if st is not None and st.relay else "data",
            "journaled": st is not None and st.committed,
        })
    for p in uploader.pending.values():          # uploads at close/fsync (not queued)
        if not any(e["key"] == p.key for e in pending):
            pending.append({"path": p.key[len(model.prefix):], "key": p.key, "size": p.size,
                            "sent": p.sent, "state": "uploading", "attempts": 0,
                            "last_error": None, "due_in": 0.0, "since": p.started_wall,
                            "journaled": p.journaled})
    try:
        usage = shutil.disk_usage(mount.base_dir)
        disk = {"total": usage.total, "free": usage.free}
    except OSError:
        disk = None
    return {
        "pid": os.getpid(), "updated": time.time(), "running": True,
        "url": f"oss://{mount.bucket}/{mount.prefix}", "endpoint": mount.config.endpoint,
        "mountpoint": mount.mountpoint, "cache_dir": mount.base_dir,
        "write_back": model.write_back,
        "pending": pending,
        "failures": [{"time": t, "key": k, "error": e} for t, k, e in uploader.failures[-20:]],
        "conflicts": uploader.conflicts[-20:],
        "quarantine": list_quarantine(mount.quarantine_dir),
        "other_journals": mount.other_journals,
        "uploads_done": uploader.uploads,
        "cache": {"limit": model.staging.limit, "staged_bytes": model.staging.used,
                  "block_bytes": model.cache.disk_bytes,
                  "memory_bytes": model.cache.memory_bytes, "disk": disk},
    }


def write_state(path: str, state: dict[str, object]) -> None:
    try:
        replace_file(path, json.dumps(state).encode(), mode=0o600)
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)


async def publish(mount: Mount, path: str) -> None:
    """Every second, and soon after the upload queue changes, until cancelled."""
    wb = mount.model.writeback
    assert wb is not None                # (set by ``Mount._build`` before this runs)
    while True:
        started = time.perf_counter()
        try:
            mount.model.attr_cache.commit()
            write_state(path, snapshot(mount))
        except Exception as exc:      # the state file is a convenience; never kill the mount
            log.debug("state snapshot failed: %s", exc)
        cost = time.perf_counter() - started
        with trio.move_on_after(INTERVAL):
            await wb.changed.wait()
        # coalesce bursts of changes: a snapshot costs O(pending) on the event loop, and a
        # stream of small files changes the queue hundreds of times a second
        await trio.sleep(max(COALESCE, cost / SHARE))
