"""A local OSS server for tests and benchmarks: real HTTP, real signatures, data on disk.

``Emulator`` runs a threaded HTTP/1.1 keep-alive server in background threads. Bodies are
streamed (``os.sendfile`` for GET, large ``readinto`` for PUT), so the emulator is not what
limits a benchmark. Faults (latency before the first response byte, a per-connection bandwidth
cap in both directions, a fraction of requests answered 503 before any effect, a fraction of
connections dropped mid-response) can be changed while it runs, in-process with
``set_faults(...)`` or from another process through the admin endpoint:

    POST http://127.0.0.1:PORT/-/admin/faults?latency_ms=50&bandwidth_mbps=100&fail_rate=0.1&drop_rate=0
         (also fail_code=<503/429 Code or "mixed">, copy_limit=<bytes>, restore_seconds=<s>)
    GET  http://127.0.0.1:PORT/-/admin/faults        -> current faults (JSON)
    GET  http://127.0.0.1:PORT/-/admin/stats         -> request counters and byte counts (JSON)
    POST http://127.0.0.1:PORT/-/admin/stats/reset

The admin endpoint answers only loopback clients that send the emulator's admin token in an
``X-Admin-Token`` header; the token is made at start and written to ``DATA_DIR/admin-token``
(mode 0600, readable only by the emulator's user), so other local users cannot change faults.
It cannot collide with a bucket (bucket names never start with ``-``). ``bandwidth_mbps`` is in
megabits per second.
"""
from __future__ import annotations

import collections
import os
import re
import threading
from dataclasses import asdict
from typing import Sequence

from .admin import write_admin_token
from .auth import Verifier
from .connections import HEADER_TIMEOUT, IDLE_TIMEOUT, default_max_connections
from .faults import FAIL_CODE_MIXED, FAIL_CODES, Faults, Stats, StatsSnapshot
from .kms import KmsServer
from .oss_handler import OssServer
from .ops import Ops
from .ops_base import DEFAULT_COPY_LIMIT, DEFAULT_RESTORE_SECONDS
from .storage import Storage
from .sts import CredentialEndpoints, StsIssuer

__all__ = ["Emulator"]


class Emulator:
    """Local OSS (and optionally KMS) server in background threads; a context manager."""

    def __init__(self, data_dir: str, *, host: str = "127.0.0.1", port: int = 0,
                 credentials: dict[str, str], sts_tokens: dict[str, str] | None = None,
                 buckets: Sequence[str] = (), latency_ms: float = 0, bandwidth_mbps: float = 0.0,
                 fail_rate: float = 0.0, kms_port: int | None = None, drop_rate: float = 0.0,
                 fsync: bool = True, crc: bool = True, region: str = "oss-cn-hangzhou",
                 fail_code: str = "ServiceUnavailable", copy_limit: int = DEFAULT_COPY_LIMIT,
                 restore_seconds: float = DEFAULT_RESTORE_SECONDS, max_connections: int | None = None,
                 idle_timeout: float = IDLE_TIMEOUT, header_timeout: float = HEADER_TIMEOUT,
                 sts_lifetime: float | None = None, credentials_port: int | None = None,
                 s3_compat: bool = False) -> None:
        self.data_dir = os.path.abspath(str(data_dir))
        self.max_connections = max_connections or default_max_connections()
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.host = host
        self.port = port
        self.credentials = dict(credentials)
        self.sts_tokens = dict(sts_tokens or {})
        self.buckets = list(buckets)
        self.kms_port = kms_port
        self.fsync = fsync
        self.crc = crc
        self.region = region
        #: accept AWS Signature V4 requests (OSS's S3-compatible access: ``s3compat``)
        self.s3_compat = s3_compat
        self._faults = Faults(float(latency_ms), float(bandwidth_mbps), float(fail_rate), float(drop_rate))
        self.set_faults(fail_code=fail_code, copy_limit=copy_limit, restore_seconds=restore_seconds)
        self._stats = Stats()
        self._verifier = Verifier(self.credentials, self.sts_tokens, region=self.region)
        #: temporary credentials (``sts_lifetime`` seconds each) and where they are handed out
        self.sts: StsIssuer | None = StsIssuer(sts_lifetime) if sts_lifetime else None
        self.credential_endpoints: CredentialEndpoints | None = None
        if self.sts is not None:
            self.sts.targets.append((self._verifier.credentials, self._verifier.sts_tokens))
            if credentials_port is not None:
                self.credential_endpoints = CredentialEndpoints(self.sts, host, credentials_port)
        self._server: OssServer | None = None
        self._thread: threading.Thread | None = None
        self._kms: KmsServer | None = None
        self.endpoint = ""
        self.kms_endpoint: str | None = None
        self.storage: Storage | None = None
        self.admin_token = ""

    @property
    def admin_headers(self) -> dict[str, str]:
        """The header that authorises admin endpoint requests (valid while this emulator runs)."""
        return {"X-Admin-Token": self.admin_token}

    def start(self) -> "Emulator":
        if self._server is not None:
            return self
        os.makedirs(self.data_dir, exist_ok=True)
        self.admin_token = write_admin_token(self.data_dir)
        self.storage = Storage(os.path.join(self.data_dir, "oss"), fsync=self.fsync, crc=self.crc)
        for b in self.buckets:
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", b):   # oss2 itself needs >= 3 chars
                raise ValueError(f"invalid bucket name: {b!r}")
            self.storage.create_bucket(b)
        self._ops = Ops(self.storage, region=self.region, endpoint_host=self.host, settings=self._faults)
        if self.kms_port is not None:
            self._kms = KmsServer(os.path.join(self.data_dir, "kms"), host=self.host, port=self.kms_port,
                                  credentials=self.credentials, sts_tokens=self.sts_tokens or None)
            self._kms.start()
            self.kms_endpoint = self._kms.endpoint
            if self.sts is not None:
                self.sts.targets.append((self._kms.credentials, self._kms.sts_tokens))
                self._kms.token_expired = self.sts.expired
        if self.credential_endpoints is not None:
            self.credential_endpoints.start()
        try:
            self._server = OssServer((self.host, self.port), self)
        except BaseException:
            if self._kms is not None:
                self._kms.stop()
            if self.credential_endpoints is not None:
                self.credential_endpoints.stop()
            raise
        self.port = self._server.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.endpoint = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"oss-emulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
            srv.close_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.credential_endpoints is not None:
            self.credential_endpoints.stop()
        if self._kms is not None:
            try:
                self._kms.stop()
            finally:
                self._kms = None

    @property
    def kms_service(self) -> KmsServer | None:
        """The KmsServer this emulator runs (``kms_port``), or None."""
        return self._kms

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults and stats ----------------------------------------------------------------
    def set_faults(self, *, latency_ms: float | None = None, bandwidth_mbps: float | None = None,
                   fail_rate: float | None = None, drop_rate: float | None = None, fail_code: str | None = None,
                   copy_limit: int | None = None, restore_seconds: float | None = None,
                   deny_writes: bool | None = None) -> None:
        """Change faults and limits while running; None leaves a setting unchanged.

        ``fail_code`` picks what injected failures answer: one of ``faults.FAIL_CODES`` (503
        ServiceUnavailable (default), TotalQpsLimitExceeded, MetaOperationQpsLimitExceeded,
        DownloadTrafficRateLimitExceeded, UploadTrafficRateLimitExceeded, ActiveRequestLimitExceeded;
        429 QpsLimitExceeded) or "mixed". ``copy_limit``: CopyObject source size limit in bytes.
        ``restore_seconds``: how long a RestoreObject takes. ``deny_writes``: every request
        that is not a GET or HEAD is refused with 403 AccessDenied, as for credentials whose
        RAM policy allows reads only (error page "AccessDenied", SPEC D.5).
        """
        if deny_writes is not None:
            self._faults.deny_writes = bool(deny_writes)
        for name, v in (("latency_ms", latency_ms), ("bandwidth_mbps", bandwidth_mbps),
                        ("fail_rate", fail_rate), ("drop_rate", drop_rate), ("restore_seconds", restore_seconds)):
            if v is None:
                continue
            v = float(v)
            if v < 0 or (name in ("fail_rate", "drop_rate") and v > 1):
                raise ValueError(f"{name} out of range: {v}")
            setattr(self._faults, name, v)
        if copy_limit is not None:
            if int(copy_limit) < 0:
                raise ValueError(f"copy_limit out of range: {copy_limit}")
            self._faults.copy_limit = int(copy_limit)
        if fail_code is not None:
            if fail_code != FAIL_CODE_MIXED and fail_code not in FAIL_CODES:
                raise ValueError(f"unknown fail_code: {fail_code!r} (one of {sorted(FAIL_CODES)} or 'mixed')")
            self._faults.fail_code = fail_code

    @property
    def faults(self) -> dict[str, object]:
        return asdict(self._faults)

    @property
    def stats(self) -> StatsSnapshot:
        """{"requests": {op: count}, "total_requests", "bytes_sent", "bytes_received"}."""
        return self._stats.snapshot()

    @property
    def request_counts(self) -> collections.Counter[str]:
        return collections.Counter(self._stats.snapshot()["requests"])

    @property
    def request_log(self) -> list[tuple[float, str, str, str | None, str, int]]:
        """(time, operation, method, bucket, key, status) of recent requests, oldest first."""
        with self._stats._lock:
            return list(self._stats.log)

    def reset_stats(self) -> None:
        self._stats.reset()
