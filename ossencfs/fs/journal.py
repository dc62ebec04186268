"""The write-back journal: one durable JSON entry per staged file, beside its ciphertext.

Why it looks like this:
- An entry is the staging manifest (object key, base ETag, size, staged extents, the *wrapped*
  key headers exactly as the object header will carry them, POSIX headers) plus the identity
  of the mount it belongs to and a SHA-256 over its own canonical JSON. It never holds the
  data key: after a crash the key is unwrapped again with the KeyRing, so the journal is as
  safe to leave on disk as the object header is in the bucket.
- ``write`` is tmp-file + fsync + rename + fsync(directory): an acknowledged close/fsync
  survives kill -9 and a power cut; a torn write leaves the previous entry (or a ``.tmp``
  that is ignored). Only an entry that replaces nothing acknowledged (one not ``committed``)
  is overwritten in place instead (``in_place``): a torn one is corrupt and goes to
  quarantine, as the uncommitted one would have.
- Files are not created and deleted one by one: a removed entry or data file (of at most
  ``SPARE_BYTES``) is kept as a *spare* (``*.spare``, at most ``SPARES`` of them), and the
  next new file (data file, or the temporary file of an entry) is a spare renamed and
  overwritten in place. On ext4 without a journal every inode allocation scans the recently
  deleted inodes of its group, which with a stream of small files was most of the mount's
  system time; and a block overwritten needs no allocation when it is fsynced. A spare keeps
  its old bytes until it is reused: ciphertext, or an entry (wrapped keys only), no more
  than the journal itself holds; a data file may so hold stale ciphertext past what its
  staging wrote, which is never read (only ranges in its extents are). Spares stay after
  an unmount; ``scan`` takes those of an earlier run up again (a spare is never trusted
  for its content: data is written where it is read, an entry is rewritten whole).
- Entries that cannot be replayed (corrupt, another bucket/prefix, data file missing, key
  not available, never closed before the crash) are *moved* into ``quarantine/`` with a
  ``reason.json`` and reported; nothing is deleted.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Mapping, NotRequired, TypedDict

from ..atomicfile import fsync_dir, replace_file

log = logging.getLogger(__name__)

SPARES = 1024        # removed files kept for reuse (see the module docstring) ...
SPARE_BYTES = 64 << 10   # ... if they are no larger than this
FORMAT = "ossencfs-journal"
VERSION = 2
_REQUIRED: dict[str, type | tuple[type, ...]] = {"format": str, "version": int, "mount": dict, "id": str, "key": str, "size": int,
             "base_len": int, "extents": list, "crypto_headers": dict, "posix": dict,
             "committed": bool, "sealed": bool, "updated": (int, float)}


class RelayFields(TypedDict):
    """``Manifest.relay`` of a re-upload (``fs.reupload``): the version's own headers."""
    object_type: str
    kept: dict[str, str]


class Manifest(TypedDict):
    """What a staging writes into its entry (``Staging.manifest``); ``Journal.write`` adds
    format, version, mount, id, updated and the checksum."""
    key: str                          # object key (with the mount prefix)
    base_etag: str | None             # the version this builds on; None: a new name
    size: int                         # bytes
    base_len: int                     # bytes of the base version still used (untouched ranges)
    extents: list[list[int]]          # [start, end) byte ranges staged in the data file
    crypto_headers: dict[str, str]    # the *wrapped* key headers the object will carry
    posix: dict[str, str]             # x-oss-meta-* POSIX headers (``fs.posix``)
    sealed: bool                      # the key may be in the bucket (``dirtystate.KeyState``)
    committed: bool                   # acknowledged: replayed after a crash
    prior_keys: list[str]             # wrapped keys of earlier attempts (objects that are ours)
    relay: NotRequired[RelayFields]


@dataclass(frozen=True)
class Relay:
    object_type: str
    kept: dict[str, str]


@dataclass(frozen=True)
class JournalEntry:
    """An entry read back and checked (``check_entry``): the fields of ``Manifest`` plus the
    entry's ``id`` (its file name) and ``updated`` (wall clock, seconds since the epoch)."""
    id: str
    key: str
    size: int
    base_len: int
    base_etag: str | None
    extents: tuple[tuple[int, int], ...]
    crypto_headers: dict[str, str]
    posix: dict[str, str]
    committed: bool
    sealed: bool
    prior_keys: tuple[str, ...]
    updated_wall: float
    relay: Relay | None = None


@dataclass(frozen=True)
class MountIdentity:
    endpoint: str
    bucket: str
    prefix: str

    def as_dict(self) -> dict[str, str]:
        return {"endpoint": self.endpoint, "bucket": self.bucket, "prefix": self.prefix}

    def url(self) -> str:
        return f"oss://{self.bucket}/{self.prefix}"


def _digest(entry: Mapping[str, object]) -> str:
    body = {k: v for k, v in entry.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal_entry(entry: Mapping[str, object]) -> bytes:
    entry = dict(entry)
    entry["sha256"] = _digest(entry)
    return json.dumps(entry, sort_keys=True).encode()


def write_durable(path: str, data: bytes) -> None:
    """Atomic and durable: the old content or the new one, never a mix, even on power loss."""
    replace_file(path, data, durable=True)


def _overwrite(fd: int, data: bytes, durable: bool) -> None:
    """Make the open file ``fd`` hold exactly ``data`` (fsynced if ``durable``), then close it."""
    try:
        view, off = memoryview(data), 0
        while off < len(data):
            off += os.pwrite(fd, view[off:], off)
        os.ftruncate(fd, len(data))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


class BadEntry(Exception):
    """Why an entry cannot be replayed (the text goes to the log, reason.json and status)."""


def check_entry(raw: bytes, identity: MountIdentity) -> JournalEntry:
    """Parse and validate one entry; BadEntry says why it is not replayable here."""
    try:
        entry = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadEntry(f"corrupt entry: not JSON ({exc.msg} at byte {exc.pos})") from None
    except ValueError as exc:                # not UTF-8/16/32
        raise BadEntry(f"corrupt entry: not JSON ({exc})") from None
    if not isinstance(entry, dict):
        raise BadEntry("corrupt entry: not a JSON object")
    if entry.get("format") != FORMAT:
        raise BadEntry("corrupt entry: not an ossencfs journal entry")
    for name, kind in _REQUIRED.items():
        if not isinstance(entry.get(name), kind):
            raise BadEntry(f"corrupt entry: field {name!r} missing or malformed")
    if entry["version"] != VERSION:
        raise BadEntry(f"journal version {entry['version']} not understood (this is {VERSION})")
    if entry.get("sha256") != _digest(entry):
        raise BadEntry("corrupt entry: checksum mismatch")
    mount = entry["mount"]
    if (mount.get("bucket"), mount.get("prefix"), mount.get("endpoint")) != \
            (identity.bucket, identity.prefix, identity.endpoint):
        raise BadEntry(f"foreign entry: belongs to oss://{mount.get('bucket')}/"
                       f"{mount.get('prefix', '')} at {mount.get('endpoint')}, this mount is "
                       f"{identity.url()} at {identity.endpoint}")
    if not entry["key"].startswith(identity.prefix):
        raise BadEntry(f"foreign entry: key {entry['key']!r} is outside {identity.url()}")
    for ext in entry["extents"]:
        if not (isinstance(ext, list) and len(ext) == 2 and all(isinstance(x, int) for x in ext)
                and 0 <= ext[0] < ext[1] <= entry["size"]):
            raise BadEntry("corrupt entry: bad extent list")
    relay = entry.get("relay")
    if relay is not None and not (isinstance(relay, dict)
                                  and isinstance(relay.get("kept", {}), dict)):
        raise BadEntry("corrupt entry: field 'relay' malformed")
    base_etag = entry.get("base_etag")
    return JournalEntry(
        id=entry["id"], key=entry["key"], size=entry["size"], base_len=entry["base_len"],
        base_etag=base_etag if isinstance(base_etag, str) else None,
        extents=tuple((s, e) for s, e in entry["extents"]),
        crypto_headers=dict(entry["crypto_headers"]), posix=dict(entry["posix"]),
        committed=entry["committed"], sealed=entry["sealed"],
        prior_keys=tuple(k for k in entry.get("prior_keys", []) if isinstance(k, str)),
        updated_wall=float(entry["updated"]),
        relay=Relay(str(relay.get("object_type", "Normal")), dict(relay.get("kept", {})))
        if relay else None)


class Journal:
    """Entries live in the staging directory (``ID.json`` beside ``ID.data``)."""

    def __init__(self, directory: str, quarantine_dir: str, identity: MountIdentity) -> None:
        self.directory = directory
        self.quarantine_dir = quarantine_dir
        self.identity = identity
        self._spares: list[str] = []          # used from worker threads: under _spare_lock
        self._spare_lock = threading.Lock()
        self._spare_seq = itertools.count()
        self._spare_prefix = os.urandom(6).hex()   # this Journal's spare names: no clashes
        self._removed: set[str] = set()       # removed while their staging stays open

    def was_removed(self, ident: str) -> bool:
        """Entry and data removed (``remove`` without ``data_closed``) while still open."""
        return ident in self._removed

    def forget_removed(self, ident: str) -> None:
        self._removed.discard(ident)

    def anonymous_file(self) -> int:
        """A data file without a name (for a staging whose journal presence was removed)."""
        try:
            return os.open(self.directory, os.O_TMPFILE | os.O_RDWR, 0o600)
        except (AttributeError, OSError):      # no O_TMPFILE here: create and unlink
            while True:
                name = os.path.join(self.directory,
                                    f"{self._spare_prefix}-{next(self._spare_seq)}.tmp")
                try:
                    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                os.unlink(name)
                return fd

    # -- spare files (inode reuse) -------------------------------------------------------------
    def _take_spare(self) -> tuple[int, str]:
        """(fd, name) of a spare opened for writing, or (-1, "") when there is none."""
        while True:
            with self._spare_lock:
                if not self._spares:
                    return -1, ""
                name = self._spares.pop()
            try:
                return os.open(name, os.O_RDWR), name
            except OSError:
                continue                       # gone (a scan?): try the next one

    def _keep_spare(self, path: str) -> None:
        """Remove ``path`` from its name: kept as a spare, or unlinked."""
        with self._spare_lock:
            keep = len(self._spares) < SPARES
        if not keep or os.stat(path).st_size > SPARE_BYTES:  # FileNotFoundError as unlink
            os.unlink(path)
            return
        spare = os.path.join(self.directory, f"{self._spare_prefix}-{next(self._spare_seq)}.spare")
        os.rename(path, spare)
        with self._spare_lock:
            self._spares.append(spare)

    def create_data(self, ident: str) -> int:
        """A new data file for ``ident``, open read-write: a spare when there is one (with
        stale bytes, to be overwritten: see the module docstring)."""
        path = self.data_path(ident)
        fd, spare = self._take_spare()
        if fd >= 0:
            try:
                os.rename(spare, path)
                return fd
            except OSError:
                os.close(fd)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)

    def _replace(self, path: str, data: bytes, durable: bool) -> None:
        """``atomicfile.replace_file`` with a spare as the temporary file."""
        fd, spare = self._take_spare()
        if fd < 0:
            replace_file(path, data, durable=durable)
            return
        try:
            _overwrite(fd, data, durable)
            os.replace(spare, path)
        except BaseException:
            try:
                os.unlink(spare)
            except OSError:
                pass
            raise
        if durable:
            fsync_dir(self.directory)

    def entry_path(self, ident: str) -> str:
        return os.path.join(self.directory, ident + ".json")

    def data_path(self, ident: str) -> str:
        return os.path.join(self.directory, ident + ".data")

    def write(self, ident: str, manifest: Manifest, *, durable: bool,
              in_place: bool = False) -> None:
        """``in_place``: the caller knows that the entry on disk (if any) is not committed."""
        entry = {"format": FORMAT, "version": VERSION, "mount": self.identity.as_dict(),
                 "id": ident, "updated": time.time(), **manifest}
        data = seal_entry(entry)
        if not in_place:
            self._replace(self.entry_path(ident), data, durable)
            return
        _overwrite(os.open(self.entry_path(ident), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600), data, durable)
        if durable:
            fsync_dir(self.directory)

    def remove(self, ident: str, *, durable: bool = True, entry_only: bool = False,
               data_closed: bool = False) -> None:
        """Entry first: a crash in between leaves a data file without entry (ignored), never
        an entry without its data. ``entry_only``: the data file stays (still in use; a later
        ``remove`` or the next scan deletes it). ``data_closed``: no descriptor of the data
        file is open any more, so its inode may be reused (else it is unlinked: a staging
        that stays open keeps reading and writing it)."""
        paths = (self.entry_path(ident),) if entry_only else \
            (self.entry_path(ident), self.data_path(ident))
        if data_closed:
            self._removed.discard(ident)
        elif not entry_only:
            self._removed.add(ident)
        for path in paths:
            try:
                if path.endswith(".json") or data_closed:
                    self._keep_spare(path)    # entries are never held open
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass
        if durable:
            try:
                fsync_dir(self.directory)
            except OSError as exc:
                log.warning("journal: cannot fsync %s: %s", self.directory, exc)

    # -- replay -------------------------------------------------------------------------------
    def scan(self) -> tuple[list[JournalEntry], list[tuple[str, str]]]:
        """(replayable entries, [(ident, reason)] to quarantine), oldest entry first."""
        good: list[JournalEntry] = []
        bad: list[tuple[str, str]] = []
        names = sorted(os.listdir(self.directory))
        for name in names:
            path = os.path.join(self.directory, name)
            if name.endswith(".tmp"):
                os.unlink(path)                  # an unfinished write: the old entry stands
                continue
            if name.endswith(".spare"):          # an earlier run's: reused (no new inode)
                with self._spare_lock:
                    keep = path not in self._spares and len(self._spares) < SPARES
                    if keep:
                        self._spares.append(path)
                if not keep and path not in self._spares:
                    os.unlink(path)
                continue
            if not name.endswith(".json"):
                continue
            ident = name[:-5]
            try:
                with open(path, "rb") as f:
                    raw = f.read()
                entry = check_entry(raw, self.identity)
                if entry.id != ident:
                    raise BadEntry(f"corrupt entry: id {entry.id!r} does not match file name")
                if not entry.committed:
                    raise BadEntry("never closed or fsynced before the mount stopped "
                                   "(not acknowledged); kept aside, not uploaded")
                dpath = self.data_path(ident)
                if entry.relay is not None:      # a re-upload (``fs.reupload``): no data file
                    good.append(entry)
                    continue
                if not os.path.exists(dpath):
                    raise BadEntry("data file missing")
                have = os.path.getsize(dpath)
                need = max((e for _, e in entry.extents), default=0)
                if have < need:
                    raise BadEntry(f"data file too short ({have} bytes, entry needs {need})")
                good.append(entry)
            except BadEntry as exc:
                bad.append((ident, str(exc)))
            except OSError as exc:
                bad.append((ident, f"unreadable: {exc.strerror}"))
        # data files without an entry: a crash between the two unlinks of ``remove``, or
        # between creating the data file and its first entry; nothing acknowledged lives there
        known = {n[:-5] for n in os.listdir(self.directory) if n.endswith(".json")}
        for name in os.listdir(self.directory):
            if name.endswith(".data") and name[:-5] not in known:
                os.unlink(os.path.join(self.directory, name))
        good.sort(key=lambda e: e.updated_wall)
        return good, bad

    def quarantine(self, ident: str, reason: str, *, report: bool = True) -> str:
        """Move an entry (and its data) aside with the reason; returns the new directory.
        ``report=False``: the caller logs the one error line itself (naming the object)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = os.path.join(self.quarantine_dir, f"{stamp}-{ident}")
        os.makedirs(dest, mode=0o700, exist_ok=True)
        moved = []
        for path in (self.entry_path(ident), self.data_path(ident)):
            if os.path.exists(path):
                shutil.move(path, os.path.join(dest, os.path.basename(path)))
                moved.append(os.path.basename(path))
        key = None
        try:
            with open(os.path.join(dest, ident + ".json"), "rb") as f:
                parsed = json.loads(f.read())
            key = parsed.get("key") if isinstance(parsed, dict) else None
        except (OSError, ValueError):
            pass
        write_durable(os.path.join(dest, "reason.json"), json.dumps(
            {"reason": reason, "id": ident, "key": key, "files": moved, "time": time.time(),
             "mount": self.identity.as_dict()}, sort_keys=True).encode())
        fsync_dir(self.directory)
        if report:
            log.error("journal: entry %s%s quarantined in %s: %s", ident,
                      f" ({key})" if key else "", dest, reason)
        return dest


def list_quarantine(quarantine_dir: str) -> list[dict[str, object]]:
    """What ``ossencfs status`` shows: every quarantined entry with its reason."""
    out: list[dict[str, object]] = []
    try:
        names = sorted(os.listdir(quarantine_dir))
    except OSError:
        return out
    for name in names:
        info: dict[str, object] = {"dir": os.path.join(quarantine_dir, name)}
        try:
            with open(os.path.join(quarantine_dir, name, "reason.json"), "rb") as f:
                info.update(json.loads(f.read()))
        except (OSError, ValueError):
            info["reason"] = "reason.json missing"
        out.append(info)
    return out
