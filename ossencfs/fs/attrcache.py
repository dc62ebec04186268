"""POSIX attributes of objects, kept on local disk and validated by listings.

A listing names every object with its ETag, size and Last-Modified, but not the
``x-oss-meta-mode/uid/gid/mtime`` headers that hold its POSIX attributes: without this cache
``ls -l`` costs one HEAD per entry, on every mount. Any change to an object on OSS, be it new
content or a metadata-only self-copy (chmod, touch), gives it a new Last-Modified, so a record
whose (ETag, size, Last-Modified) equals what a fresh listing shows is still right: a listing
validates every record it names at no extra cost, and a remount finds them again.

What is kept: the object key, those three validators and the POSIX header values, which are
already stored unencrypted on OSS. Never object bodies, data keys or symlink targets (a
symlink target is an encrypted body).

A write through the mount knows its new ETag but not the Last-Modified OSS gave it (PutObject
does not return one), only an upper bound of it (OSS's clock when the reply came). Its record
adopts the first Last-Modified a listing shows with the same ETag and size, if not later than
that bound: a later one means another client changed the metadata since (a self-copy keeps
the ETag), and costs a HEAD. Last-Modified has whole seconds, so a metadata change by another
client within about a second of the version recorded here goes unseen until the object
changes again; that is the price of answering from the listing.

It also remembers the inode number given to each object key (a directory's key ends with
``/``), and the highest number ever handed out, so that ``fs.inodes`` gives an object the same
number at the next mount and new numbers never collide with remembered ones. Those records
follow renames made here (``move_inos``), are forgotten with the name (unlink) and pruned by
listings like the attributes.

New and changed rows are kept in memory and written with the commit each second (a first-sight
``ls -l`` records three rows per entry; a statement each on the trio thread cost more than
parsing the HEAD). Reads the same way: a complete listing of a directory loads the rows of its
entries with one query per table (``listed``), and the lookups of those entries that follow are
answered from memory. Each statement releases the GIL, and while 64 HEADs are parsed in worker
threads, getting it back made a 5 µs SELECT cost 60–80 µs on the trio thread: three per entry
were about a third of that thread's busy time in a first-sight ``ls -l`` (issue 17). This is a
cache: it is written without fsync, a damaged database is discarded and started again, and an
error while using it (a full disk) turns it off for the rest of the mount: all of which only
costs HEADs, never a failed file operation.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from typing import Any, Mapping

from .posix import POSIX_HEADERS
from .privatedir import open_private

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attrs (
    key TEXT PRIMARY KEY,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    lastmod REAL,
    not_after REAL,
    object_type TEXT NOT NULL,
    posix TEXT NOT NULL
)"""
_INO_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS inos (key TEXT PRIMARY KEY, ino INTEGER NOT NULL UNIQUE, "
    "kind INTEGER NOT NULL, parent TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS inos_parent ON inos (parent)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    # what a probe for an Encryption SDK message found (docs/esdk.md): the plaintext size of
    # this version, the stored size when it is no such object
    "CREATE TABLE IF NOT EXISTS sizes (key TEXT PRIMARY KEY, etag TEXT NOT NULL, "
    "size INTEGER NOT NULL, shown INTEGER NOT NULL)",
)
#: headers that prove an object is no Python-layout Encryption SDK message
NOT_ESDK_PYTHON = ("x-oss-meta-client-side-encryption-key", "x-oss-meta-x-oss-meta-header")


def _parent(key: str) -> str:
    """The directory prefix a key is listed under: ``a/b/`` for ``a/b/c`` and ``a/b/c/``."""
    head, sep, _ = key.rstrip("/").rpartition("/")
    return head + sep
COMMIT_EVERY = 1.0        # seconds between commits (a crash loses at most this much cache)
PENDING_MAX = 4096        # upserts kept in memory before they are executed anyway
WINDOW_MAX = 10_000       # rows per table of a listed directory kept in memory (``listed``)
#: the tables whose rows are replaced whole by key, and how (``AttrCache._upsert``)
_UPSERT = {"attrs": "INSERT OR REPLACE INTO attrs VALUES (?, ?, ?, ?, ?, ?, ?)",
           "sizes": "INSERT OR REPLACE INTO sizes VALUES (?, ?, ?, ?)",
           "inos": "INSERT OR REPLACE INTO inos VALUES (?, ?, ?, ?)"}


class AttrCache:
    def __init__(self, path: str | None) -> None:
        """``path`` None keeps the cache in memory (read-only cache directories, tests)."""
        self.path = path
        self.db = self._open(path)
        self._dirty = False
        self._last_commit = time.monotonic()
        self.hits = 0
        self.misses = 0
        self.broken = False
        self._ino_high = 0           # highest inode number handed out, not yet written
        #: upserts not executed yet, by table and key (``_upsert``)
        self._pending: dict[str, dict[str, tuple[Any, ...]]] = {t: {} for t in _UPSERT}
        #: every row of the direct children of the directory ``_window_prefix``, by table and
        #: key (``listed``): a key below that prefix and not here has no row
        self._window_prefix: str | None = None
        self._window: dict[str, dict[str, tuple[Any, ...]]] = {t: {} for t in _UPSERT}

    def _failed(self, exc: sqlite3.Error) -> None:
        if not self.broken:
            log.warning("attribute cache %s: %s; going on without it", self.path or "(memory)", exc)
        self.broken = True

    @staticmethod
    def _open(path: str | None) -> sqlite3.Connection:
        target = path or ":memory:"
        for attempt in (1, 2):
            try:
                if path is not None:   # made 0600 here, never through a symlink; sqlite gives
                    os.close(open_private(path, os.O_RDWR | os.O_CREAT))   # -wal/-shm its mode
                db = sqlite3.connect(target, isolation_level="DEFERRED", check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")
                db.execute(_SCHEMA)
                for sql in _INO_SCHEMA:
                    db.execute(sql)
                db.execute("SELECT count(*) FROM attrs").fetchone()
                db.execute("SELECT count(*) FROM inos").fetchone()
                return db
            except sqlite3.DatabaseError as exc:
                if path is None:
                    raise
                if attempt == 2:
                    log.warning("attribute cache %s: %s; keeping it in memory", path, exc)
                    return AttrCache._open(None)
                log.warning("attribute cache %s is damaged (%s); starting a new one", path, exc)
                for suffix in ("", "-wal", "-shm"):
                    try:
                        os.unlink(path + suffix)
                    except FileNotFoundError:
                        pass
        raise AssertionError("unreachable")

    def lookup(self, key: str, etag: str | None, size: int, lastmod: float) -> tuple[dict[str, str], str] | None:
        """(POSIX headers, object type) recorded for this exact version of ``key``, or None."""
        if not etag or self.broken:
            return None
        try:
            row = self._row("attrs", key)
            if row is None or row[0] != etag or row[1] != size:
                self.misses += 1
                return None
            if row[2] is None and (row[3] is None or lastmod <= row[3]):
                # our own write: adopt the Last-Modified OSS gave it
                self._upsert("attrs", (key, row[0], row[1], lastmod, *row[3:]))
            elif row[2] is None or abs(row[2] - lastmod) > 0.5:
                self.misses += 1
                return None
            posix = json.loads(row[5])
        except (sqlite3.Error, ValueError) as exc:
            self._failed(sqlite3.Error(str(exc)))
            return None
        self.hits += 1
        return posix, row[4]

    def record(self, key: str, etag: str | None, size: int, headers: Mapping[str, str],
               object_type: str = "Normal", *, lastmod: float | None = None,
               not_after: float | None = None) -> None:
        """Remember the POSIX headers of this version of ``key``: seen by a HEAD (``lastmod``)
        or just written (``not_after``: OSS's clock, at most, when the write was answered)."""
        if not etag:
            return
        lowered = {k.lower(): v for k, v in headers.items()}
        posix = {k: v for k, v in lowered.items() if k in POSIX_HEADERS}
        self._upsert("attrs", (key, etag, size, lastmod, not_after, object_type,
                               json.dumps(posix, sort_keys=True)))
        if any(h in lowered for h in NOT_ESDK_PYTHON):
            self.record_probe(key, etag, size, size)    # no probe needed at the next mount

    def forget(self, key: str) -> None:
        self._write("DELETE FROM attrs WHERE key=?", (key,))
        self._write("DELETE FROM sizes WHERE key=?", (key,))

    def probed_size(self, key: str, etag: str, size: int) -> int | None:
        """The size a probe found for this version of ``key`` (its plaintext size, or ``size``
        when it is no Encryption SDK message); None when it was never probed."""
        if not etag or self.broken:
            return None
        try:
            row = self._row("sizes", key)
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        if row is None or row[0] != etag or row[1] != size:
            return None
        return int(row[2])

    def record_probe(self, key: str, etag: str | None, size: int, shown: int) -> None:
        if etag:
            self._upsert("sizes", (key, etag, size, shown))

    def forget_under(self, prefix: str) -> None:
        """Everything below a directory prefix (``a/b/``), e.g. after it was renamed."""
        self._write("DELETE FROM attrs WHERE key >= ? AND key < ?", (prefix, prefix + "\U0010ffff"))
        self._write("DELETE FROM sizes WHERE key >= ? AND key < ?", (prefix, prefix + "\U0010ffff"))

    # -- inode numbers (fs.inodes.InodeNumbers) ---------------------------------------------
    def ino_of(self, key: str) -> tuple[int, int] | None:
        """(inode number, file type) remembered for ``key``."""
        if self.broken:
            return None
        try:
            row = self._row("inos", key)
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        return (row[0], row[1]) if row is not None else None

    def remember_ino(self, key: str, ino: int, kind: int) -> None:
        self._ino_high = max(self._ino_high, ino)
        # (numbers handed out here are new: no other key's row has this one)
        self._upsert("inos", (key, ino, kind, _parent(key)))

    def forget_ino(self, key: str, ino: int) -> None:
        self._write("DELETE FROM inos WHERE key=? AND ino=?", (key, ino))

    def move_inos(self, old: str, new: str) -> None:
        """``old`` renamed to ``new``: the key itself and, for a directory, every key below."""
        end = "\U0010ffff"
        self._write("DELETE FROM inos WHERE key=? OR (key >= ? AND key < ?)",
                    (new, new + "/", new + "/" + end))
        for suffix in ("", "/"):                     # the file, or the directory itself
            self._write("UPDATE inos SET key=?, parent=? WHERE key=?",
                        (new + suffix, _parent(new), old + suffix))
        self._write("UPDATE inos SET key=? || substr(key, ?), parent=? || substr(parent, ?) "
                    "WHERE key > ? AND key < ?",
                    (new + "/", len(old) + 2, new + "/", len(old) + 2, old + "/", old + "/" + end))

    def listed(self, prefix: str, files: set[str], names: set[str]) -> None:
        """A complete listing of the directory ``prefix`` (``a/b/``) showed the objects
        ``files`` (keys) and the names ``names`` (keys, a directory's ending in ``/``).
        Records of its other direct children are of objects deleted elsewhere and go (so the
        cache does not grow with every key ever seen); the rows of those present stay in
        memory for the lookups of its entries that follow (one directory at a time, up to
        ``WINDOW_MAX`` rows per table)."""
        self._window_prefix = None
        if self.broken or not self._flush():
            return
        # direct children only: rows below its subdirectories stay in the database
        children = "key > ? AND key < ? AND instr(substr(key, ?), '/') = 0"
        args = (prefix, prefix + "\U0010ffff", len(prefix) + 1)
        queries = (("attrs", f"SELECT * FROM attrs WHERE {children}", args, files),
                   ("sizes", f"SELECT * FROM sizes WHERE {children}", args, files),
                   ("inos", "SELECT * FROM inos WHERE parent=?", (prefix,), names))
        window: dict[str, dict[str, tuple[Any, ...]]] | None = {t: {} for t in _UPSERT}
        gone: list[tuple[str, str]] = []
        try:
            for table, sql, params, present in queries:
                for row in self.db.execute(sql, params):     # row by row: a directory may be huge
                    if row[0] not in present:
                        gone.append((table, row[0]))
                    elif window is not None:
                        window[table][row[0]] = row
                        if len(window[table]) > WINDOW_MAX:
                            window = None
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        for table, key in gone:
            self._write(f"DELETE FROM {table} WHERE key=?", (key,))
        if window is not None:
            self._window_prefix, self._window = prefix, window

    def _row(self, table: str, key: str) -> tuple[Any, ...] | None:
        """``table``'s row of ``key`` without the key: a pending upsert, the listed
        directory's rows (``listed``), or a query."""
        row = self._pending[table].get(key)
        if row is None:
            if self._window_prefix is not None and _parent(key) == self._window_prefix:
                row = self._window[table].get(key)
            else:
                row = self.db.execute(f"SELECT * FROM {table} WHERE key=?", (key,)).fetchone()
        return None if row is None else row[1:]

    def ino_high_water(self) -> int:
        """The highest inode number ever handed out with this cache (0: none)."""
        if self.broken:
            return self._ino_high
        try:
            row = self.db.execute("SELECT max(value) FROM counters WHERE name='ino'").fetchone()
            top = self.db.execute("SELECT max(ino) FROM inos").fetchone()
        except sqlite3.Error as exc:
            self._failed(exc)
            return self._ino_high
        return max(self._ino_high, row[0] or 0, top[0] or 0)

    def _upsert(self, table: str, row: tuple[Any, ...]) -> None:
        """Replace ``table``'s row of key ``row[0]``, in memory until the next commit: a stat
        walk (``ls -l`` of a directory never seen) records several rows per entry, and a
        statement each on the trio thread cost more than the HEAD's own parsing. Reads
        look here first; every other statement runs after them (``_flush``)."""
        if self.broken:
            return
        pending = self._pending[table]
        pending[row[0]] = row
        if self._window_prefix is not None and _parent(row[0]) == self._window_prefix:
            self._window[table][row[0]] = row
        if len(pending) >= PENDING_MAX:
            self._flush()
        self._touch()

    def _flush(self) -> bool:
        """Execute the pending upserts (False: the cache broke)."""
        try:
            for table, rows in self._pending.items():
                if rows:
                    self.db.executemany(_UPSERT[table], list(rows.values()))
                    rows.clear()
        except sqlite3.Error as exc:
            for rows in self._pending.values():
                rows.clear()
            self._failed(exc)
            return False
        return True

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        """A statement other than an upsert (a delete, a move): the window of a listed
        directory no longer holds (``listed``)."""
        self._window_prefix = None
        if self.broken or not self._flush():
            return
        try:
            self.db.execute(sql, params)
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        self._touch()

    def _touch(self) -> None:
        self._dirty = True
        if time.monotonic() - self._last_commit >= COMMIT_EVERY:
            self.commit()

    def commit(self) -> None:
        """Make the records so far survive the mount (called every second and at unmount)."""
        if self._dirty and not self.broken and self._flush():
            try:
                if self._ino_high:       # in the same transaction as the numbers it covers
                    self.db.execute("INSERT INTO counters VALUES ('ino', ?) ON CONFLICT(name) "
                                    "DO UPDATE SET value=max(value, excluded.value)",
                                    (self._ino_high,))
                self.db.commit()
            except sqlite3.Error as exc:
                self._failed(exc)
            self._dirty = False
        self._last_commit = time.monotonic()

    def close(self) -> None:
        self.commit()
        self.db.close()
