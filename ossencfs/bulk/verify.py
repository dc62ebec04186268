"""``ossencfs verify``: classify every object and check that it opens (``classify``), with
``deep`` also that its content matches the stored MD5; tallies by key and by problem."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable

from ..envelope.keys import KeyRing
from ..esdk_objects import EsdkObjects
from ..store import ObjectInfo, ObjectStore
from .classify import Record, deep_check, inspect
from .progress import human_bytes
from .walk import DONE, FAILED, Outcome

PLAIN_ROW = "(plain)"
NO_ROW = "(not opened)"


@dataclass
class Verification:
    store: ObjectStore
    keyring: KeyRing | None
    deep: bool = False
    parallel: int = 4
    on_bytes: Callable[[int], None] | None = None
    esdk: EsdkObjects | None = None     # Encryption SDK objects: found and opened with these

    async def __call__(self, listed: ObjectInfo) -> Outcome:
        ins = await inspect(self.store, listed, self.keyring, esdk=self.esdk)
        if self.deep:
            await deep_check(self.store, ins, parallel=self.parallel, progress=self.on_bytes)
        rec = ins.record
        return Outcome(rec.key, DONE if rec.opens else FAILED,
                       rec.problems[0] if rec.problems else "", rec.detail, rec.size, rec)


@dataclass
class Tally:
    """Objects and bytes per key (``Record.master``, or a row for plain / unopened ones) and
    objects per problem."""

    by_key: collections.Counter[str] = field(default_factory=collections.Counter)
    bytes_by_key: collections.Counter[str] = field(default_factory=collections.Counter)
    by_problem: collections.Counter[str] = field(default_factory=collections.Counter)
    unreadable: int = 0
    md5_checked: int = 0

    def add(self, rec: Record) -> None:
        row = rec.master or (PLAIN_ROW if rec.kind == "plain" else NO_ROW)
        if not rec.opens and rec.master is None:
            row = NO_ROW
        self.by_key[row] += 1
        self.bytes_by_key[row] += rec.size
        for p in rec.problems:
            self.by_problem[p] += 1
        self.unreadable += not rec.opens
        self.md5_checked += rec.md5_checked

    def table(self) -> str:
        lines = [f"{'key':<52} {'objects':>9} {'bytes':>12}"]
        for row, n in sorted(self.by_key.items()):
            lines.append(f"{row:<52} {n:>9} {human_bytes(self.bytes_by_key[row]):>12}")
        lines.append("")
        lines.append(f"{'problem':<52} {'objects':>9}")
        if not self.by_problem:
            lines.append(f"{'(none)':<52} {0:>9}")
        for p, n in sorted(self.by_problem.items()):
            lines.append(f"{p:<52} {n:>9}")
        return "\n".join(lines)
