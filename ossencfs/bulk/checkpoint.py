"""The checkpoint file of a bulk run: what is finished, so that a second run after a kill
goes on where the first stopped and does nothing twice.

JSON lines, appended and flushed as objects finish (a SIGKILL loses at most the line being
written; the object it names is then found already done by its own check, e.g. "already under
the target key"):

* first line: ``{"checkpoint": 1, "run": {...}}``, what the run is (command, bucket, prefix,
  shard, target key name); a checkpoint of another run is refused;
* ``{"done": KEY}``: KEY is finished (done, or skipped for good);
* ``{"below": KEY}``: every key up to and including KEY, in listing order, is finished: a
  resumed listing starts after it (ListObjectsV2 ``start-after``).

Failed objects are never recorded, so a second run retries them; the watermark stops at
them. Loading compacts the file (header, last watermark, done keys above it), so memory
stays at the keys finished out of order since the last watermark.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from ..atomicfile import replace_file
from ..errors import OssEncError

VERSION = 1


class Checkpoint:
    def __init__(self, path: str, run: Mapping[str, Any]) -> None:
        self.path = path
        self.run = dict(run)
        self.below = ""
        self.done: set[str] = set()
        self._f: Any = None

    def open(self) -> "Checkpoint":
        """Load what an earlier run finished (if the file exists), compact, open for append."""
        if os.path.exists(self.path):
            self._load()
        lines = [{"checkpoint": VERSION, "run": self.run}]
        if self.below:
            lines.append({"below": self.below})
        lines += [{"done": k} for k in sorted(self.done)]
        data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
        replace_file(self.path, data.encode("utf-8", "surrogatepass"), durable=True)
        self._f = open(self.path, "a", encoding="utf-8", errors="surrogatepass")
        return self

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="surrogatepass") as f:
                first = f.readline()
                try:
                    head = json.loads(first)
                except ValueError:
                    raise OssEncError(f"{self.path}: not a checkpoint file") from None
                if not isinstance(head, dict) or head.get("checkpoint") != VERSION:
                    raise OssEncError(f"{self.path}: not a checkpoint file")
                if head.get("run") != self.run:
                    raise OssEncError(f"{self.path}: checkpoint of another run "
                                      f"({head.get('run')}); use another file")
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue            # the line a kill cut short
                    if "below" in entry and entry["below"] > self.below:
                        self.below = entry["below"]
                    elif "done" in entry:
                        self.done.add(entry["done"])
        except OSError as exc:
            raise OssEncError(f"{self.path}: cannot read checkpoint: {exc.strerror}") from None
        self.done = {k for k in self.done if k > self.below}

    def finished(self, key: str) -> bool:
        return key <= self.below or key in self.done

    def mark_done(self, key: str) -> None:
        self._write({"done": key})

    def advance(self, key: str) -> None:
        """Every key up to ``key`` is finished."""
        if key > self.below:
            self.below = key
            self._write({"below": key})

    def _write(self, entry: Mapping[str, str]) -> None:
        if self._f is not None:
            self._f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
