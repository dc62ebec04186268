"""Progress of a bulk run: a tqdm bar (objects, bytes, rate) on a terminal, a plain line
every ``interval`` seconds otherwise (logs of cron jobs and schedulers), nothing when off."""
from __future__ import annotations

import sys
import time
from typing import IO


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class BulkProgress:
    def __init__(self, desc: str, *, enabled: bool = True, interval: float = 5.0,
                 stream: IO[str] | None = None) -> None:
        self.desc = desc
        self.stream = stream or sys.stderr
        self.objects = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._interval = interval
        self._next = self.started + interval
        self._enabled = enabled
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm
            self._bar = tqdm(desc=desc, unit="obj", file=self.stream, leave=False,
                             dynamic_ncols=True)

    def add_bytes(self, n: int) -> None:
        self.bytes += n

    def object_done(self) -> None:
        self.objects += 1
        if self._bar is not None:
            self._bar.set_postfix_str(f"{human_bytes(self.bytes)}, {self._rate()}", refresh=False)
            self._bar.update(1)
        elif self._enabled and time.monotonic() >= self._next:
            self._next = time.monotonic() + self._interval
            print(f"ossencfs: {self.desc}: {self.objects} objects, {human_bytes(self.bytes)}, "
                  f"{self._rate()}", file=self.stream, flush=True)

    def _rate(self) -> str:
        secs = max(1e-6, time.monotonic() - self.started)
        return f"{self.objects / secs:.1f} obj/s, {human_bytes(self.bytes / secs)}/s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
