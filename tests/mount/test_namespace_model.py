"""The namespace bookkeeping without FUSE: the model driven directly, against the emulator.

Through a mount the kernel runs unlink, rename, mkdir and rmdir of a directory only while no
lookup or readdir of it is in progress, so a change of those kinds cannot be timed against a
listing from outside (``test_namespace.py`` times an upload landing at close). Here the
store's listing of one directory is held at a gate while the model makes every kind of change
to it, as the write-back queue, stat-ahead or a future caller may; the listing's result must
not undo any of them. Also: the sorted names of a listing, and inode numbers handed out and
remembered (``fs.inodes``, ``fs.attrcache``).
"""
from __future__ import annotations

import stat
import time
from types import SimpleNamespace
from typing import Any

import trio

from ossencfs.envelope.keys import KeyRing, RsaMasterKey
from ossencfs.fs import posix
from ossencfs.fs.attrcache import AttrCache
from ossencfs.fs.inodes import ROOT_INO, Entry, InodeTable
from ossencfs.fs.model import FsModel
from ossencfs.objects import EncryptedObjects
from ossencfs.store import ObjectStore
from tests.conftest import AK, BUCKET, SDK_FIXTURES, SK


def _model(store: ObjectStore, attr_cache: AttrCache | None = None) -> FsModel:
    keyring = KeyRing([RsaMasterKey.from_pem_file(str(SDK_FIXTURES / "rsa_test_private.pem"))])
    return FsModel(store, EncryptedObjects(store, keyring), None, None, None, prefix="",
                   policy=posix.MountPolicy(), ttl=30.0, read_only=False,
                   spawn=lambda fn: False, attr_cache=attr_cache)


def test_every_kind_of_change_survives_a_listing_in_flight(emulator, oss2_bucket):
    for key in ("big/", "big/a-gone", "big/a-old", "big/a-olddir/", "big/e1", "big/e2"):
        oss2_bucket.put_object(key, b"")
    ctx = SimpleNamespace(uid=0, gid=0)

    async def main() -> None:
        store = ObjectStore.connect(emulator.endpoint, BUCKET, AK, SK)
        model = _model(store)
        root = model.node(ROOT_INO)
        big = await model.child(root, "big")
        for name in ("a-gone", "a-old", "a-olddir"):
            await model.child(big, name)                # known, fresh
        model.inodes.dirs["big"].expires_mono = 0             # the listing of big has expired

        gate, asked = trio.Event(), trio.Event()
        real = store.list_page
        held = [True]

        async def list_page(prefix: str, delimiter: str = "/", token: str | None = None,
                            max_keys: int = 1000) -> Any:
            page = await real(prefix, delimiter, token, max_keys)
            if prefix == "big/" and max_keys == 1000 and held[0]:
                held[0] = False                           # the first listing of big only
                asked.set()
                await gate.wait()                         # fetched, not yet returned
            return page
        store.list_page = list_page                       # type: ignore[method-assign]

        results: list[dict[str, Entry]] = []
        async with trio.open_nursery() as nursery:
            async def lister() -> None:
                results.append(dict(await model.list_dir(big)))
            nursery.start_soon(lister)
            await asked.wait()
            await model.mkdir(big.ino, "a-newdir", 0o755, ctx)
            await model.unlink(big.ino, "a-gone")
            await model.rename(big.ino, "a-old", big.ino, "a-renamed", 0)
            await model.rmdir(big.ino, "a-olddir")
            await model.symlink(big.ino, "a-link", "e1", ctx)
            # what an upload landing does (``upload_locked``): its entry is noted
            model.inodes.note_entry("big", Entry("a-up", stat.S_IFREG, 3, "etag", time.time()))
            gate.set()
        cached = await model.list_dir(big)               # within ttl: the stored listing
        want = {"a-newdir", "a-renamed", "a-link", "a-up", "e1", "e2"}
        assert set(results[0]) == want                   # what that readdir was answered
        assert set(cached) == want
        assert cached["a-newdir"].kind == stat.S_IFDIR
    trio.run(main)


def test_an_invalidated_directory_is_not_stored_by_a_listing_in_flight():
    """A listing of a directory that was renamed away (or removed) while it was fetched
    describes nothing any more: it answers its caller but is not cached."""
    table = InodeTable(posix.default_meta(is_dir=True, mtime=0, policy=posix.MountPolicy()), 30)
    table.bind("d", stat.S_IFDIR, posix.default_meta(is_dir=True, mtime=0,
                                                      policy=posix.MountPolicy()))
    token = table.begin_listing("d")
    table.move("d", "e")
    lst = table.end_listing("d", token, {"x": Entry("x", stat.S_IFREG)})
    assert set(lst.entries) == {"x"}
    assert table.stale_listing("d") is None and table.stale_listing("e") is None


def test_sorted_names_follow_every_change_of_a_listing():
    table = InodeTable(posix.default_meta(is_dir=True, mtime=0, policy=posix.MountPolicy()), 30)
    lst = table.set_listing("d", {n: Entry(n, stat.S_IFREG) for n in ("f1", "f2", "f3", "f4")})
    assert lst.names_after("f1", 10) == ["f2", "f3", "f4"]
    table.drop_entry("d", "f4")
    table.note_entry("d", Entry("g4", stat.S_IFREG))         # same count, other names
    assert lst.names_after("f1", 10) == ["f2", "f3", "g4"]
    table.note_entry("d", Entry("f2", stat.S_IFREG, 9))      # a known name: same order
    assert lst.names_after("", 2) == ["f1", "f2"]


def test_inode_numbers_are_remembered_and_never_reused(tmp_path):
    meta = posix.default_meta(is_dir=False, mtime=0, policy=posix.MountPolicy())
    root_meta = posix.default_meta(is_dir=True, mtime=0, policy=posix.MountPolicy())
    db = str(tmp_path / "attrs.sqlite")

    cache = AttrCache(db)
    t = InodeTable(root_meta, 30, numbers=cache, prefix="p/")
    a = t.bind("a", stat.S_IFREG, meta).ino
    d = t.bind("d", stat.S_IFDIR, root_meta).ino
    x = t.bind("d/x", stat.S_IFREG, meta).ino
    gone = t.bind("gone", stat.S_IFREG, meta)
    t.detach(gone)                                    # unlinked: its number is not remembered
    t.forget(a, 0)
    assert t.get(a) is None and t.bind("a", stat.S_IFREG, meta).ino == a    # after a forget
    t.move("d", "e")
    t.forget(x, 0)
    assert t.bind("e/x", stat.S_IFREG, meta).ino == x                       # after a rename
    assert t.bind("d/x", stat.S_IFREG, meta).ino not in (a, d, x)
    link = t.bind("a", stat.S_IFLNK, meta).ino                              # another type
    assert link not in (a, d, x)
    cache.close()

    cache = AttrCache(db)                              # a remount
    t = InodeTable(root_meta, 30, numbers=cache, prefix="p/")
    assert t.bind("e", stat.S_IFDIR, root_meta).ino == d
    assert t.bind("e/x", stat.S_IFREG, meta).ino == x
    assert t.bind("a", stat.S_IFLNK, meta).ino == link
    fresh = t.bind("new", stat.S_IFREG, meta).ino
    assert fresh > max(a, d, x, link, gone.ino)        # past every number handed out before
    other = InodeTable(root_meta, 30, numbers=cache, prefix="q/")   # keys are per prefix
    assert other.bind("e", stat.S_IFDIR, root_meta).ino not in (d, fresh)
    cache.close()


def test_overlapping_listings_each_get_the_changes_since_they_started():
    table = InodeTable(posix.default_meta(is_dir=True, mtime=0, policy=posix.MountPolicy()), 30)
    first = table.begin_listing("d")
    table.note_entry("d", Entry("a", stat.S_IFREG))
    second = table.begin_listing("d")
    table.drop_entry("d", "old")
    assert set(table.end_listing("d", first, {"old": Entry("old", stat.S_IFREG)}).entries) \
        == {"a"}
    third = table.begin_listing("d")
    table.note_entry("d", Entry("b", stat.S_IFREG))
    assert set(table.end_listing("d", second, {"old": Entry("old", stat.S_IFREG)}).entries) \
        == {"b"}
    assert len(table._fetches["d"].log) == 1              # only what the third one needs
    assert set(table.end_listing("d", third, {}).entries) == {"b"}
    assert table._fetches == {}


def test_children_and_subtrees_match_the_known_paths_through_every_change():
    """``children``, ``under`` and ``move`` walk an index of the known paths (a listing used to
    scan every known path); after each of many random binds, forgets, unlinks and renames the
    index answers exactly what a scan of all known paths answers."""
    import random
    rnd = random.Random(17)
    fmeta = posix.default_meta(is_dir=False, mtime=0, policy=posix.MountPolicy())
    dmeta = posix.default_meta(is_dir=True, mtime=0, policy=posix.MountPolicy())
    t = InodeTable(dmeta, 30)
    names = ["a", "b", "c"]

    def scan_under(path: str) -> set[int]:
        prefix = path + "/" if path else ""
        return {ino for p, ino in t.by_path.items() if p.startswith(prefix) and p != path}

    for step in range(3000):
        depth = rnd.randrange(1, 4)
        path = "/".join(rnd.choice(names) for _ in range(depth))
        op = rnd.random()
        node = t.at(path)
        if op < 0.45:
            kind = stat.S_IFREG if rnd.random() < 0.4 else stat.S_IFDIR
            n = t.bind(path, kind, fmeta if kind == stat.S_IFREG else dmeta)
            n.nlookup += 1
        elif op < 0.65 and node is not None:
            t.forget(node.ino, node.nlookup)           # the kernel forgot it: dropped
        elif op < 0.8 and node is not None:
            t.detach(node)                             # unlinked
        elif node is not None:
            other = "/".join(rnd.choice(names) for _ in range(rnd.randrange(1, 4)))
            if other != path and not other.startswith(path + "/") and t.at(other) is None:
                t.move(path, other)
        for p in ("", *{q.rpartition("/")[0] for q in t.by_path}, path):
            assert {n.ino for n in t.under(p)} == scan_under(p), (step, p)
            assert {n.ino for n in t.children(p)} == \
                {ino for q, ino in t.by_path.items() if q and q.rpartition("/")[0] == p}, (step, p)
        assert all(t.nodes[ino].path == p for p, ino in t.by_path.items())
    assert len(t.by_path) > 5                          # the walk did build trees
    for p in sorted(t.by_path, reverse=True):
        if p:
            t.detach(t.nodes[t.by_path[p]])
    assert not t._kids                                 # the index keeps nothing of them
