"""Fault and traffic accounting state of the emulator, shared by all connections.

``Faults`` is read on every request, so changing it (``Emulator.set_faults`` or the admin
endpoint) takes effect immediately; ``Throttle`` paces one direction of one connection;
``Stats`` counts requests per OSS operation and body bytes, which the benchmark reads.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypedDict


# What an injected failure answers (status, Code, Message). Messages: help.aliyun.com/zh/oss/support/
# http-status-code-503 (English messages on the zh page) and help.aliyun.com/en/oss/user-guide/429-error.
FAIL_CODES: dict[str, tuple[int, str]] = {
    "ServiceUnavailable": (503, "Thread pool is almost full, please retry later"),
    "TotalQpsLimitExceeded": (503, "Max total qps limit is exceeded"),
    "MetaOperationQpsLimitExceeded": (503, "Qps limit for the meta operation is exceeded"),
    "DownloadTrafficRateLimitExceeded": (503, "Please reduce your download request traffic"),
    "UploadTrafficRateLimitExceeded": (503, "Please reduce your upload request traffic"),
    "ActiveRequestLimitExceeded": (503, "Max active request limit is exceeded"),
    "QpsLimitExceeded": (429, "Please reduce your request rate."),
}
FAIL_CODE_MIXED = "mixed"          # each injected failure picks one of FAIL_CODES at random


@dataclass
class Faults:
    """Run-time settings (all changeable through ``Emulator.set_faults`` and the admin endpoint)."""

    latency_ms: float = 0.0
    bandwidth_mbps: float = 0.0
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    fail_code: str = "ServiceUnavailable"   # a FAIL_CODES name or "mixed"
    copy_limit: int = 10 ** 9               # CopyObject source size limit in bytes (ops_base.DEFAULT_COPY_LIMIT)
    restore_seconds: float = 1.0            # RestoreObject completes this long after the request
    deny_writes: bool = False               # every write is 403 AccessDenied (a read-only RAM policy)


class StatsSnapshot(TypedDict):
    """Counters at one moment: requests per operation, their total, body bytes each way."""
    requests: dict[str, int]
    total_requests: int
    bytes_sent: int
    bytes_received: int


class Stats:
    """Per-operation request counters and byte counts (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: collections.Counter[str] = collections.Counter()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.log: collections.deque[tuple[float, str, str, str | None, str, int]] = collections.deque(maxlen=100000)

    def count(self, op: str) -> None:
        with self._lock:
            self.requests[op] += 1

    def done(self, op: str, method: str, bucket: str | None, key: str, status: int, sent: int, received: int) -> None:
        with self._lock:
            self.bytes_sent += sent
            self.bytes_received += received
            self.log.append((time.time(), op, method, bucket, key, status))

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return {"requests": dict(self.requests), "total_requests": sum(self.requests.values()),
                    "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received}

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_sent = self.bytes_received = 0
            self.log.clear()


class Throttle:
    """Caps one direction of one connection at the current ``bandwidth_mbps``."""

    def __init__(self, faults: Faults, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.faults = faults
        self.next = 0.0
        self._sleep, self._clock = sleep, clock

    def rate(self) -> float:
        """Bytes per second; 0 = unlimited."""
        return self.faults.bandwidth_mbps * 125000.0

    def consume(self, n: int) -> None:
        rate = self.rate()
        if rate <= 0 or n <= 0:
            return
        now = self._clock()
        if self.next < now:
            self.next = now
        self.next += n / rate
        delay = self.next - now
        if delay > 0:
            self._sleep(delay)
