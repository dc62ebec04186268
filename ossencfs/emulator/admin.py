"""The emulator's admin endpoint (``/-/admin/...``): faults and request counters over HTTP, so
another process (a benchmark, a shell) can change faults while the emulator runs.

It answers only loopback clients that send the token written at start to
``DATA_DIR/admin-token`` (mode 0600) in an ``X-Admin-Token`` header. Kept apart from the OSS
request handling (``oss_handler.py``) because it is not part of the OSS API.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from typing import TYPE_CHECKING, Mapping

from .routing import is_ip

if TYPE_CHECKING:
    from .server import Emulator

ADMIN_PREFIX = "/-/admin/"          # cannot collide with a bucket: bucket names never start with "-"
ADMIN_TOKEN_FILE = "admin-token"
_FLOAT_SETTINGS = ("latency_ms", "bandwidth_mbps", "fail_rate", "drop_rate", "restore_seconds")


def write_admin_token(data_dir: str) -> str:
    """A fresh random token in DATA_DIR/admin-token, created 0600 (never through a symlink)."""
    token = secrets.token_hex(24)
    path = os.path.join(data_dir, ADMIN_TOKEN_FILE)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def admin_answer(emu: Emulator, command: str, path: str, query: dict[str, str], client_host: str,
                 token: str) -> tuple[int, Mapping[str, object]]:
    """(HTTP status, JSON document) for one admin request from ``client_host`` carrying
    ``token`` (the X-Admin-Token header): 403 unless loopback with the right token, 400 for a
    fault setting out of range, 404 for an unknown path."""
    status: int = 200
    payload: Mapping[str, object] = {}
    if not is_ip(client_host) or not ipaddress.ip_address(client_host).is_loopback:
        status, payload = 403, {"error": "admin endpoint is loopback-only"}
    elif not hmac.compare_digest(token.encode("latin-1", "replace"), emu.admin_token.encode()):
        status, payload = 403, {"error": "admin endpoint needs the X-Admin-Token header "
                                         f"(the token is in {ADMIN_TOKEN_FILE} in the data directory)"}
    elif path == "/-/admin/faults":
        if command == "POST":
            try:
                _set_faults(emu, query)
            except ValueError as e:
                status, payload = 400, {"error": str(e)}
        if status == 200:
            payload = emu.faults
    elif path == "/-/admin/stats":
        payload = emu.stats
    elif path == "/-/admin/stats/reset" and command == "POST":
        emu.reset_stats()
        payload = {"ok": True}
    else:
        status, payload = 404, {"error": "unknown admin path"}
    return status, payload


def _set_faults(emu: Emulator, q: dict[str, str]) -> None:
    """``POST /-/admin/faults?...``: the settings named in the query; ValueError when one is not
    a number or out of range."""
    floats = {k: float(v) for k, v in q.items() if k in _FLOAT_SETTINGS}
    emu.set_faults(latency_ms=floats.get("latency_ms"), bandwidth_mbps=floats.get("bandwidth_mbps"),
                   fail_rate=floats.get("fail_rate"), drop_rate=floats.get("drop_rate"),
                   restore_seconds=floats.get("restore_seconds"),
                   copy_limit=int(q["copy_limit"]) if "copy_limit" in q else None,
                   fail_code=q.get("fail_code"),
                   deny_writes=q["deny_writes"].lower() in ("1", "true", "yes") if "deny_writes" in q else None)
