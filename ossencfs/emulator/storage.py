"""On-disk object store of the OSS emulator: buckets, keys, multipart uploads.

Each object is one file (format in ``objfile``) named by the SHA-256 of its key, so any UTF-8
key is safe on disk. A write becomes visible by one ``rename`` after fsync, so a killed
emulator never exposes half an object; temp files and unreferenced segments are removed at
start. Reads keep their file descriptors, so a concurrent replace never tears a response. An
in-memory sorted key list per bucket (rebuilt from the trailers at start) serves listings in
byte order without touching the disk.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .crc64 import crc64_combine
from .objfile import Entry, OpenObject, TempObject, read_trailer

__all__ = ["BucketState", "Entry", "OpenObject", "Storage", "TempObject", "Upload", "crc64_combine", "read_trailer"]


@dataclass
class Upload:
    """An open multipart upload; metadata is fixed at Initiate."""

    upload_id: str
    key: str
    initiated: float
    headers: dict[str, str]
    dir: str
    parts: dict[int, Entry] = field(default_factory=dict)


class BucketState:
    """Index of one bucket: sorted key list + entries, and its open multipart uploads."""

    def __init__(self, name: str, root: str, created: float) -> None:
        self.name = name
        self.root = root
        self.created = created
        self.keys: list[str] = []
        self.entries: dict[str, Entry] = {}
        self.uploads: dict[str, Upload] = {}
        self.lock = threading.Lock()

    def obj_path(self, key: str) -> str:
        h = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return os.path.join(self.root, "objects", h[:2], h)

    def _insert(self, entry: Entry) -> None:
        if entry.key not in self.entries:
            bisect.insort(self.keys, entry.key)
        self.entries[entry.key] = entry

    def _remove(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            i = bisect.bisect_left(self.keys, key)
            if i < len(self.keys) and self.keys[i] == key:
                del self.keys[i]

    def iter_from(self, start: str, inclusive: bool) -> Iterator[str]:
        """Keys >= start (or > start) in byte order; tolerant of concurrent changes."""
        with self.lock:
            i = (bisect.bisect_left if inclusive else bisect.bisect_right)(self.keys, start)
            batch = self.keys[i:i + 1000]
        while batch:
            yield from batch
            last = batch[-1]
            with self.lock:
                i = bisect.bisect_right(self.keys, last)
                batch = self.keys[i:i + 1000]

    def skip_past_prefix(self, prefix: str) -> Iterator[str]:
        """Keys greater than every key that starts with ``prefix``."""
        last = prefix[-1]
        if ord(last) >= 0x10FFFF:
            return self.iter_from(prefix + "\U0010ffff" * 4, False)
        return self.iter_from(prefix[:-1] + chr(ord(last) + 1), True)


class Storage:
    """All buckets under one data directory; thread-safe."""

    def __init__(self, root: str, *, fsync: bool = True, crc: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self.crc = crc
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.buckets_dir = os.path.join(self.root, "buckets")
        os.makedirs(self.tmp_dir, exist_ok=True)
        os.makedirs(self.buckets_dir, exist_ok=True)
        for name in os.listdir(self.tmp_dir):      # leftovers of a killed emulator
            p = os.path.join(self.tmp_dir, name)
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    os.unlink(p)
                except OSError:
                    pass
        self._lock = threading.Lock()
        self._key_locks = [threading.RLock() for _ in range(64)]
        self._dirs: set[str] = set()              # object fan-out directories known to exist
        self.buckets: dict[str, BucketState] = {}
        for name in sorted(os.listdir(self.buckets_dir)):
            self._load_bucket(name)

    # ---- helpers -------------------------------------------------------------------------
    def _sync_dir(self, path: str) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_json_atomic(self, path: str, obj: object) -> None:
        tmp = os.path.join(self.tmp_dir, "j-" + secrets.token_hex(8))
        with open(tmp, "wb") as f:
            f.write(json.dumps(obj, ensure_ascii=False).encode("utf-8"))
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.rename(tmp, path)
        self._sync_dir(os.path.dirname(path))

    def key_lock(self, bucket: str, key: str) -> threading.RLock:
        """Serialises check-and-commit of one key (different keys rarely share a stripe)."""
        h = hashlib.blake2s(f"{bucket}\0{key}".encode("utf-8"), digest_size=2).digest()
        return self._key_locks[h[0] % len(self._key_locks)]

    def _load_bucket(self, name: str) -> None:
        root = os.path.join(self.buckets_dir, name)
        try:
            with open(os.path.join(root, "bucket.json"), "rb") as f:
                info = json.load(f)
        except (OSError, ValueError):
            return
        b = BucketState(name, root, float(info.get("created", time.time())))
        objdir = os.path.join(root, "objects")
        entries = []
        if os.path.isdir(objdir):
            for sub in os.listdir(objdir):
                d = os.path.join(objdir, sub)
                for fname in os.listdir(d):
                    p = os.path.join(d, fname)
                    try:
                        fd = os.open(p, os.O_RDONLY)
                    except OSError:
                        continue
                    try:
                        e = read_trailer(fd)
                    finally:
                        os.close(fd)
                    if e is not None:
                        e.path = p
                        entries.append(e)
        for e in entries:
            b.entries[e.key] = e
        b.keys = sorted(b.entries)
        segdir = os.path.join(root, "segments")
        if os.path.isdir(segdir):            # leftovers of a Complete killed before its commit
            used = {e.segments[0][0].split("/")[1] for e in entries if e.segments}
            for seg in os.listdir(segdir):
                if seg not in used:
                    shutil.rmtree(os.path.join(segdir, seg), ignore_errors=True)
        updir = os.path.join(root, "uploads")
        if os.path.isdir(updir):
            for uid in os.listdir(updir):
                udir = os.path.join(updir, uid)
                try:
                    with open(os.path.join(udir, "upload.json"), "rb") as f:
                        u = json.load(f)
                except (OSError, ValueError):
                    shutil.rmtree(udir, ignore_errors=True)
                    continue
                up = Upload(uid, u["key"], float(u["initiated"]), dict(u["headers"]), udir)
                for fname in os.listdir(udir):
                    if fname.endswith(".part"):
                        p = os.path.join(udir, fname)
                        fd = os.open(p, os.O_RDONLY)
                        try:
                            e = read_trailer(fd)
                        finally:
                            os.close(fd)
                        if e is not None:
                            e.path = p
                            up.parts[int(fname[:-5])] = e
                b.uploads[uid] = up
        self.buckets[name] = b

    # ---- buckets -------------------------------------------------------------------------
    def create_bucket(self, name: str) -> bool:
        """False when it already exists."""
        with self._lock:
            if name in self.buckets:
                return False
            root = os.path.join(self.buckets_dir, name)
            os.makedirs(os.path.join(root, "objects"), exist_ok=True)
            os.makedirs(os.path.join(root, "uploads"), exist_ok=True)
            created = time.time()
            self._write_json_atomic(os.path.join(root, "bucket.json"), {"created": created})
            self._sync_dir(self.buckets_dir)
            self.buckets[name] = BucketState(name, root, created)
            return True

    def delete_bucket(self, name: str) -> bool:
        """False when the bucket still holds objects."""
        with self._lock:
            b = self.buckets.get(name)
            if b is None:
                return True
            with b.lock:
                if b.keys:
                    return False
                del self.buckets[name]
            trash = os.path.join(self.tmp_dir, "bucket-" + secrets.token_hex(8))
            os.rename(b.root, trash)
            self._dirs = {d for d in self._dirs if not d.startswith(b.root + os.sep)}
            shutil.rmtree(trash, ignore_errors=True)
            self._sync_dir(self.buckets_dir)
            return True

    def get_bucket(self, name: str) -> BucketState | None:
        return self.buckets.get(name)

    # ---- objects -------------------------------------------------------------------------
    def temp(self, *, hashing: bool = True) -> TempObject:
        return TempObject(os.path.join(self.tmp_dir, "o-" + secrets.token_hex(12)), hashing=hashing, crc=self.crc)

    def seal(self, tmp: TempObject, entry: Entry) -> None:
        """Write the trailer and fsync before taking a key lock (commit then only renames)."""
        try:
            tmp.finish(entry, self.fsync)
        except BaseException:
            tmp.discard()
            raise

    def lookup(self, b: BucketState, key: str) -> Entry | None:
        with b.lock:
            return b.entries.get(key)

    def commit(self, b: BucketState, tmp: TempObject, entry: Entry,
               check: Callable[[Entry | None], None] | None = None) -> Entry:
        """Make ``tmp`` the object ``entry.key`` after ``check(current)`` passes (it may raise).

        The caller must hold ``key_lock`` when ``check`` depends on the current object.
        """
        path = b.obj_path(entry.key)
        try:
            tmp.finish(entry, self.fsync)
            if check is not None:
                check(self.lookup(b, entry.key))
            d = os.path.dirname(path)
            if d not in self._dirs:
                os.makedirs(d, exist_ok=True)
                self._dirs.add(d)
            os.rename(tmp.path, path)
        except BaseException:
            tmp.discard()
            raise
        self._sync_dir(os.path.dirname(path))
        entry.path = path
        with b.lock:
            old = b.entries.get(entry.key)
            b._insert(entry)
        self._drop_segments(b, old, entry)
        return entry

    def delete(self, b: BucketState, key: str) -> None:
        with self.key_lock(b.name, key):
            with b.lock:
                e = b.entries.get(key)
                if e is None:
                    return
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                pass
            self._sync_dir(os.path.dirname(e.path))
            with b.lock:
                b._remove(key)
            self._drop_segments(b, e)

    def open_object(self, b: BucketState, key: str) -> OpenObject | None:
        """The current version with its data open (caller closes); None when absent.

        Taken under the key lock so that a replace or delete, which removes an old version's
        segment files under the same lock, cannot slip in between opening the pieces.
        """
        with self.key_lock(b.name, key):
            with b.lock:
                e = b.entries.get(key)
            if e is None:
                return None
            try:
                fd = os.open(e.path, os.O_RDONLY)
            except FileNotFoundError:
                return None
            fds = [fd]
            try:
                if e.type == "Symlink":
                    return OpenObject(e, [])
                if e.segments is None:
                    return OpenObject(e, [(fd, e.size)])
                pieces = []
                for rel, n in e.segments:
                    sfd = os.open(os.path.join(b.root, rel), os.O_RDONLY)
                    fds.append(sfd)
                    pieces.append((sfd, n))
                os.close(fd)
                fds.remove(fd)
                return OpenObject(e, pieces)
            except BaseException:
                for f in fds:
                    os.close(f)
                raise

    def _drop_segments(self, b: BucketState, old: Entry | None, new: Entry | None = None) -> None:
        """Remove the segment directory of a replaced/deleted multipart version."""
        if old is None or not old.segments:
            return
        if new is not None and new.segments and new.segments[0][0].split("/")[1] == old.segments[0][0].split("/")[1]:
            return
        seg_dir = os.path.join(b.root, os.path.dirname(old.segments[0][0]))
        trash = os.path.join(self.tmp_dir, "seg-" + secrets.token_hex(8))
        try:
            os.rename(seg_dir, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def adopt_upload(self, b: BucketState, up: Upload, numbers: list[int]) -> list[tuple[str, int]]:
        """Turn an upload's part files into the segments of a new object version (no data copy).

        The upload directory moves to ``segments/<upload id>`` (invisible until the object file
        that references it is renamed into place; an unreferenced one is removed at start).
        """
        rel_dir = f"segments/{up.upload_id}"
        dest = os.path.join(b.root, rel_dir)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with b.lock:
            b.uploads.pop(up.upload_id, None)
            parts = dict(up.parts)
        os.rename(up.dir, dest)
        self._sync_dir(os.path.dirname(dest))
        self._sync_dir(os.path.dirname(up.dir))
        keep = {f"{n}.part" for n in numbers}
        for fname in os.listdir(dest):
            if fname not in keep:
                try:
                    os.unlink(os.path.join(dest, fname))
                except OSError:
                    pass
        return [(f"{rel_dir}/{n}.part", parts[n].size) for n in numbers]

    # ---- multipart -----------------------------------------------------------------------
    def init_upload(self, b: BucketState, key: str, headers: dict[str, str]) -> Upload:
        uid = secrets.token_hex(16).upper()
        udir = os.path.join(b.root, "uploads", uid)
        os.makedirs(udir)
        up = Upload(uid, key, time.time(), headers, udir)
        self._write_json_atomic(os.path.join(udir, "upload.json"),
                                {"key": key, "initiated": up.initiated, "headers": headers})
        with b.lock:
            b.uploads[uid] = up
        return up

    def get_upload(self, b: BucketState, uid: str) -> Upload | None:
        with b.lock:
            return b.uploads.get(uid)

    def commit_part(self, b: BucketState, up: Upload, number: int, tmp: TempObject, entry: Entry) -> Entry:
        path = os.path.join(up.dir, f"{number}.part")
        try:
            tmp.finish(entry, self.fsync)
            os.rename(tmp.path, path)
        except FileNotFoundError:
            tmp.discard()
            raise KeyError(up.upload_id) from None      # aborted or completed meanwhile
        except BaseException:
            tmp.discard()
            raise
        self._sync_dir(up.dir)
        entry.path = path
        with b.lock:
            up.parts[number] = entry
        return entry

    def drop_upload(self, b: BucketState, uid: str) -> None:
        with b.lock:
            up = b.uploads.pop(uid, None)
        if up is not None:
            trash = os.path.join(self.tmp_dir, "up-" + secrets.token_hex(8))
            try:
                os.rename(up.dir, trash)
            except OSError:
                return
            shutil.rmtree(trash, ignore_errors=True)
