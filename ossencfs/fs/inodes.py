"""Inode <-> path table, per-node state, and the directory-listing cache with TTLs.

Paths are relative to the mount root ("" is the root, "a/b" a nested entry); the mapping to
object keys (mount prefix, ``dir/`` markers) lives in the model. An inode number is tied to a
(path, file type) pair: if an entry turns out to have another type than first believed (a
listing cannot tell a symlink object from a file), it gets a *new* inode number, so the kernel
drops the old one instead of seeing an inode change type (which it treats as corruption).

Inode numbers stay with an object: backup tools (restic, borg), git's index and sync clients
take a new ``st_ino`` for a new file and re-read (or re-upload) it. So the number given to an
object key is remembered (``numbers``: the persistent attribute cache, ``fs.attrcache``) and
handed out again when the kernel looks it up after forgetting it, after a rename (``move``
carries the numbers of everything below), and at the next mount with the same cache
directory. New numbers come after every number ever handed out with that cache (its
high-water mark), so they never collide with remembered ones. A name that is unlinked or
replaced forgets its number: a new object there is another file.

Listings in flight: a listing takes a while (a page per 1,000 entries), and what was fetched
first may be older than a change made here meanwhile (an upload landing, an unlink, a rename,
mkdir, rmdir). Each change to a directory's entries is logged while a listing of it is in
flight (``begin_listing``) and replayed onto its result (``end_listing``), so the result
never brings back the state before the change; a directory renamed away or removed meanwhile
is not cached at all.
"""
from __future__ import annotations

import bisect
import itertools
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Protocol

import trio

from . import keymap
from .dirtystate import DirtyState
from .posix import PosixMeta

if TYPE_CHECKING:
    from .staging import Staging

ROOT_INO = 1


@dataclass(slots=True)
class Entry:
    """What a listing says about one name in a directory (slots: a listing of 100,000
    names keeps 100,000 of these)."""
    name: str
    kind: int                     # stat.S_IFREG or stat.S_IFDIR (S_IFLNK only for native symlinks)
    size: int = 0
    etag: str | None = None
    mtime: float = 0.0
    object_type: str = "Normal"


@dataclass
class DirListing:
    """``entries`` change only through ``put``/``pop`` once the listing is cached: the sorted
    names (``names_after``) are kept for as long as the set of names stays the same, which a
    count cannot tell (a rename keeps it)."""
    entries: dict[str, Entry]
    expires_mono: float           # time.monotonic()
    _order: list[str] | None = None

    def put(self, entry: Entry) -> None:
        if entry.name not in self.entries:
            self._order = None
        self.entries[entry.name] = entry

    def pop(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            self._order = None

    def names_after(self, name: str, count: int, beyond: str | None = None) -> list[str]:
        """The ``count`` names that follow ``name`` in readdir (sorted) order; ``beyond``:
        without those up to that name."""
        if self._order is None:
            self._order = sorted(self.entries)
        i = bisect.bisect_right(self._order, name)
        j = bisect.bisect_right(self._order, beyond) if beyond is not None and beyond > name else i
        return self._order[j:i + count]


class InodeNumbers(Protocol):
    """Where inode numbers are remembered by object key (``fs.attrcache.AttrCache``)."""

    def ino_of(self, key: str) -> tuple[int, int] | None: ...          # (ino, kind)
    def remember_ino(self, key: str, ino: int, kind: int) -> None: ...
    def forget_ino(self, key: str, ino: int) -> None: ...
    def move_inos(self, old: str, new: str) -> None: ...
    def ino_high_water(self) -> int: ...


@dataclass
class _Fetches:
    """The listings of one directory in flight, and the changes to its entries since the
    oldest of them started: (name, entry) for a name added or changed, (name, None) for one
    removed, (None, None) when the directory itself went away. ``tokens``: where each
    listing's changes start, counted from the first change ever logged (``log[0]`` is number
    ``base``), so that the log stays short while listings keep overlapping."""
    tokens: list[int] = field(default_factory=list)
    log: list[tuple[str | None, Entry | None]] = field(default_factory=list)
    base: int = 0


@dataclass(eq=False, slots=True)
class Node:
    ino: int
    path: str
    kind: int
    meta: PosixMeta
    size: int = 0
    etag: str | None = None
    mtime: float = 0.0
    object_type: str = "Normal"
    # what it keeps of a HEAD (attrs.node_headers; read-only, maybe shared); None: unknown
    headers: Mapping[str, str] | None = None
    headers_expires_mono: float = 0.0
    meta_expires_mono: float = 0.0                 # POSIX attributes trusted without a HEAD until
    exists_remote: bool = True                # False: created here, not uploaded yet
    marker: bool = False                      # directory has its own ``dir/`` object
    nlookup: int = 0
    open_count: int = 0
    staging: Staging | None = None            # while dirty or sealed (or a fs.reupload.Reupload)
    # changed only by fs.dirtystate's transitions; read as ``dirty``/``upload_busy``
    dirty_state: DirtyState = DirtyState.CLEAN
    unlinked: bool = False
    symlink_target: str | None = None
    kernel_etag: str | None = None            # version whose pages the kernel may cache
    # bumped when the local version open handles write to is taken from them (it went to a
    # conflict copy or quarantine): writes through handles of an older epoch fail (EIO)
    epoch: int = 0
    # the version ``esdk_etag`` was probed for an Encryption SDK object (docs/esdk.md):
    # ``esdk_plain`` is its plaintext size where that differs from the stored one (Python
    # layout), shown by stat while the etag is the node's; None: not such an object. Two
    # fields rather than an (etag, size) tuple: 48 bytes less per probed inode (issue 17)
    esdk_etag: str | None = None
    esdk_plain: int | None = None
    _lock: trio.Lock | None = field(default=None, repr=False)

    @property
    def lock(self) -> trio.Lock:
        """The node's lock, made at its first use: a ``trio.Lock`` takes ~340 bytes, and most
        nodes of a large directory are only ever listed and stat'ed (``slots`` for the same
        reason: ~5.8 KB per known inode in the 10,000-entry scale run)."""
        if self._lock is None:
            self._lock = trio.Lock()
        return self._lock

    @property
    def dirty(self) -> bool:
        """Local content or metadata not in the bucket yet (``DirtyState``)."""
        return self.dirty_state.dirty

    @property
    def upload_busy(self) -> bool:
        """An upload holds the lock; the staging is frozen (readers skip the lock)."""
        return self.dirty_state is DirtyState.UPLOADING

    @property
    def is_dir(self) -> bool:
        return self.kind == stat.S_IFDIR

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent_path(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""

    @property
    def busy(self) -> bool:
        return self.open_count > 0 or self.dirty


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class InodeTable:
    def __init__(self, root_meta: PosixMeta, ttl: float, *, numbers: InodeNumbers | None = None,
                 prefix: str = "") -> None:
        """``numbers``: where inode numbers are remembered (None: for this table's life only);
        ``prefix``: the mount's key prefix, so that keys name objects, not paths."""
        self.ttl = ttl
        self.numbers = numbers
        self.prefix = prefix
        start = numbers.ino_high_water() if numbers is not None else ROOT_INO
        self._next = itertools.count(max(start, ROOT_INO) + 1)
        root = Node(ROOT_INO, "", stat.S_IFDIR, root_meta)
        root.nlookup = 1
        self.nodes: dict[int, Node] = {ROOT_INO: root}
        self.by_path: dict[str, int] = {"": ROOT_INO}
        #: path -> the paths one level below it that are known (``by_path`` keys, or directories
        #: on the way to one), so that ``children``, ``under`` and ``move`` walk a subtree instead
        #: of every known path: each directory listing scanned them all, and ``find`` over
        #: 1,000,000 objects in 1,000 directories took 577 s against 83 s of listing requests
        self._kids: dict[str, set[str]] = {}
        self.dirs: dict[str, DirListing] = {}
        self._fetches: dict[str, _Fetches] = {}

    # -- nodes ------------------------------------------------------------------------------
    def get(self, ino: int) -> Node | None:
        return self.nodes.get(ino)

    def at(self, path: str) -> Node | None:
        ino = self.by_path.get(path)
        return self.nodes.get(ino) if ino is not None else None

    def key(self, path: str, kind: int) -> str:
        """The object key an inode number is remembered by (a directory's ends with ``/``)."""
        key = self.prefix + keymap.key_path(path)
        return key + "/" if kind == stat.S_IFDIR else key

    def bind(self, path: str, kind: int, meta: PosixMeta) -> Node:
        """The node for ``path`` with file type ``kind`` (a new inode if the type changed)."""
        node = self.at(path)
        if node is not None and node.kind == kind:
            return node
        if node is not None:
            self.detach(node)
        node = Node(self._number(path, kind), path, kind, meta)
        self.nodes[node.ino] = node
        self._index(path, node.ino)
        return node

    def _index(self, path: str, ino: int) -> None:
        self.by_path[path] = ino
        while path:
            parent = path.rpartition("/")[0]
            kids = self._kids.get(parent)
            if kids is not None:
                kids.add(path)
                return
            self._kids[parent] = {path}
            path = parent               # a new set: its directory must be reachable too

    def _unindex(self, path: str) -> None:
        del self.by_path[path]
        while path and path not in self.by_path and path not in self._kids:
            parent = path.rpartition("/")[0]
            kids = self._kids.get(parent)
            if kids is None:
                return
            kids.discard(path)
            if kids:
                return
            del self._kids[parent]
            path = parent

    def _number(self, path: str, kind: int) -> int:
        """The number remembered for this object, else a new one (remembered from now on)."""
        if self.numbers is None:
            return next(self._next)
        key = self.key(path, kind)
        known = self.numbers.ino_of(key)
        if known is not None and known[1] == kind and known[0] not in self.nodes:
            return known[0]
        ino = next(self._next)
        self.numbers.remember_ino(key, ino, kind)
        return ino

    def detach(self, node: Node) -> None:
        """Forget the name (unlink/replace); the inode lives on while the kernel knows it."""
        if self.by_path.get(node.path) == node.ino:
            self._unindex(node.path)
            if self.numbers is not None and node.ino != ROOT_INO:
                # another object may take the name: it gets a number of its own
                self.numbers.forget_ino(self.key(node.path, node.kind), node.ino)
        node.unlinked = True
        self._maybe_drop(node)

    def forget(self, ino: int, n: int) -> None:
        node = self.nodes.get(ino)
        if node is None or ino == ROOT_INO:
            return
        node.nlookup = max(0, node.nlookup - n)
        self._maybe_drop(node)

    def _maybe_drop(self, node: Node) -> None:
        if node.nlookup == 0 and not node.busy and node.ino != ROOT_INO:
            self.nodes.pop(node.ino, None)
            if self.by_path.get(node.path) == node.ino:
                self._unindex(node.path)

    def release_check(self, node: Node) -> None:
        self._maybe_drop(node)

    def move(self, old: str, new: str) -> None:
        """Re-path ``old`` and everything below it (rename of a file or a directory); their
        inode numbers go with them."""
        moved = [(p, self.by_path[p]) for p in [old, *self._below(old)] if p in self.by_path]
        for p, _ in moved:
            self._unindex(p)
        for p, ino in moved:
            np = new + p[len(old):]
            self._index(np, ino)
            self.nodes[ino].path = np
        if self.numbers is not None and old:
            self.numbers.move_inos(self.prefix + keymap.key_path(old),
                                   self.prefix + keymap.key_path(new))
        for p in [p for p in self.dirs if p == old or p.startswith(old + "/")]:
            del self.dirs[p]
        for p in [p for p in self._fetches if p == old or p.startswith(old + "/")]:
            self._fetches[p].log.append((None, None))       # gone: do not cache its listing

    def _below(self, path: str) -> list[str]:
        """Every indexed path below ``path``, at any depth."""
        out: list[str] = []
        stack = [path]
        while stack:
            kids = self._kids.get(stack.pop(), ())
            out.extend(kids)
            stack.extend(kids)
        return out

    def under(self, path: str) -> list[Node]:
        """The known nodes below ``path``, at any depth (a snapshot)."""
        return [self.nodes[self.by_path[p]] for p in self._below(path) if p in self.by_path]

    def children(self, path: str) -> list[Node]:
        """The known nodes directly in directory ``path`` (a snapshot)."""
        return [self.nodes[self.by_path[p]] for p in self._kids.get(path, ()) if p in self.by_path]

    # -- directory listings -----------------------------------------------------------------
    def listing(self, path: str) -> DirListing | None:
        lst = self.dirs.get(path)
        if lst is not None and lst.expires_mono < time.monotonic():
            return None          # kept: served while OSS is unreachable (stale_listing)
        return lst

    def stale_listing(self, path: str) -> DirListing | None:
        return self.dirs.get(path)

    def set_listing(self, path: str, entries: dict[str, Entry]) -> DirListing:
        lst = DirListing(entries, time.monotonic() + self.ttl)
        self.dirs[path] = lst
        return lst

    def begin_listing(self, path: str) -> int:
        """A listing of ``path`` is being fetched: log changes to it from now on. Returns the
        token for ``end_listing``, which must follow (also when the fetch fails)."""
        fetches = self._fetches.setdefault(path, _Fetches())
        token = fetches.base + len(fetches.log)
        fetches.tokens.append(token)
        return token

    def end_listing(self, path: str, token: int,
                    entries: dict[str, Entry] | None) -> DirListing | None:
        """The fetched ``entries`` (None: the fetch failed) with every change made since
        ``begin_listing`` replayed onto them, cached unless the directory went away."""
        fetches = self._fetches[path]
        changes = fetches.log[token - fetches.base:]
        fetches.tokens.remove(token)
        if not fetches.tokens:
            del self._fetches[path]
        elif min(fetches.tokens) > fetches.base:     # no listing needs the oldest changes
            del fetches.log[:min(fetches.tokens) - fetches.base]
            fetches.base = min(fetches.tokens)
        if entries is None:
            return None
        gone = False
        for name, entry in changes:
            if name is None:
                gone = True
            elif entry is None:
                entries.pop(name, None)
            else:
                entries[name] = entry
        if gone:
            return DirListing(entries, time.monotonic() + self.ttl)
        return self.set_listing(path, entries)

    def _log(self, parent: str, name: str | None, entry: Entry | None) -> None:
        fetches = self._fetches.get(parent)
        if fetches is not None:
            fetches.log.append((name, entry))

    def note_entry(self, parent: str, entry: Entry) -> None:
        self._log(parent, entry.name, entry)
        lst = self.dirs.get(parent)
        if lst is not None:
            lst.put(entry)

    def drop_entry(self, parent: str, name: str) -> None:
        self._log(parent, name, None)
        lst = self.dirs.get(parent)
        if lst is not None:
            lst.pop(name)

    def invalidate_dir(self, path: str) -> None:
        self._log(path, None, None)
        self.dirs.pop(path, None)
