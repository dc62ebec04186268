"""The attribute cache keeps its upserts in memory until a commit (``AttrCache._upsert``):
reads must see them at once, and every other statement must run after them."""
from __future__ import annotations

from ossencfs.fs.attrcache import AttrCache

HEADERS = {"x-oss-meta-mode": "33188", "x-oss-meta-mtime": "1700000000.5"}


def test_a_record_is_read_back_before_any_commit(tmp_path):
    cache = AttrCache(str(tmp_path / "a.sqlite"))
    cache.record("d/f", "E1", 10, HEADERS, lastmod=1000.0)
    cache.record_probe("d/g", "E2", 20, 7)
    cache.remember_ino("d/f", 42, 0o100000)
    assert cache.lookup("d/f", "E1", 10, 1000.0) == ({k: v for k, v in HEADERS.items()}, "Normal")
    assert cache.lookup("d/f", "E0", 10, 1000.0) is None        # another version
    assert cache.probed_size("d/g", "E2", 20) == 7
    assert cache.ino_of("d/f") == (42, 0o100000)
    assert cache.ino_high_water() >= 42


def test_statements_run_after_the_pending_records(tmp_path):
    cache = AttrCache(str(tmp_path / "a.sqlite"))
    cache.record("d/f", "E1", 10, HEADERS, lastmod=1000.0)
    cache.record("d/g", "E2", 10, HEADERS, lastmod=1000.0)
    cache.remember_ino("d/f", 5, 0o100000)
    cache.remember_ino("d/g", 6, 0o100000)
    cache.forget("d/f")                       # a delete after the pending insert wins
    assert cache.lookup("d/f", "E1", 10, 1000.0) is None
    cache.listed("d/", {"d/h"}, {"d/h"})      # the listing no longer shows d/g
    assert cache.lookup("d/g", "E2", 10, 1000.0) is None
    assert cache.ino_of("d/g") is None
    cache.record("d/f", "E3", 11, HEADERS, lastmod=1001.0)    # again after the delete
    assert cache.lookup("d/f", "E3", 11, 1001.0) is not None


def test_own_write_adopts_the_listed_last_modified(tmp_path):
    cache = AttrCache(str(tmp_path / "a.sqlite"))
    cache.record("f", "E1", 3, HEADERS, not_after=2000.0)
    assert cache.lookup("f", "E1", 3, 1999.0) is not None      # adopts 1999
    assert cache.lookup("f", "E1", 3, 1999.0) is not None
    assert cache.lookup("f", "E1", 3, 1995.0) is None           # another change since


def test_records_survive_close_and_reopen(tmp_path):
    path = str(tmp_path / "a.sqlite")
    cache = AttrCache(path)
    for i in range(3):
        cache.record(f"d/f{i}", f"E{i}", i, HEADERS, lastmod=1000.0)
        cache.remember_ino(f"d/f{i}", 100 + i, 0o100000)
    cache.close()
    again = AttrCache(path)
    assert again.lookup("d/f2", "E2", 2, 1000.0) is not None
    assert again.ino_of("d/f1") == (101, 0o100000)
    assert again.ino_high_water() == 102


def _statements(cache: AttrCache) -> list[str]:
    """The SQL statements ``cache`` runs from now on (sqlite's trace callback)."""
    seen: list[str] = []
    cache.db.set_trace_callback(seen.append)
    return seen


def test_a_listed_directory_answers_its_entries_lookups_from_memory(tmp_path):
    path = str(tmp_path / "a.sqlite")
    cache = AttrCache(path)
    for i, name in enumerate(("d/a", "d/b", "d/sub/x", "e/a")):
        cache.record(name, f"E{i}", i, HEADERS, lastmod=1000.0)
        cache.record_probe(name, f"E{i}", i, i + 100)
        cache.remember_ino(name, 10 + i, 0o100000)
    cache.remember_ino("d/sub/", 20, 0o040000)
    cache.remember_ino("d/gone", 21, 0o100000)
    cache.close()
    cache = AttrCache(path)                                   # nothing pending: all on disk
    cache.listed("d/", {"d/a", "d/b", "d/new"}, {"d/a", "d/b", "d/new", "d/sub/"})
    sql = _statements(cache)
    assert cache.lookup("d/a", "E0", 0, 1000.0) is not None
    assert cache.probed_size("d/b", "E1", 1) == 101 and cache.ino_of("d/b") == (11, 0o100000)
    assert cache.ino_of("d/sub/") == (20, 0o040000)
    assert cache.lookup("d/new", "E9", 9, 1000.0) is None and cache.ino_of("d/new") is None
    assert cache.ino_of("d/gone") is None                     # pruned: not in the listing
    assert sql == []                                          # no query for any of them
    cache.record("d/new", "E9", 9, HEADERS, lastmod=1000.0)   # recorded after the listing
    cache.remember_ino("d/new", 30, 0o100000)
    cache.commit()                                            # (executed: no longer pending)
    del sql[:]
    assert cache.lookup("d/new", "E9", 9, 1000.0) is not None and cache.ino_of("d/new") == (30, 0o100000)
    assert sql == []                                          # all from memory
    assert cache.lookup("e/a", "E3", 3, 1000.0) is not None   # another directory: a query
    assert len(sql) == 1
    cache.forget("d/a")                                       # any other statement: queries again
    del sql[:]
    assert cache.lookup("d/a", "E0", 0, 1000.0) is None
    assert cache.lookup("d/b", "E1", 1, 1000.0) is not None and sql
    assert cache.lookup("d/sub/x", "E2", 2, 1000.0) is not None   # below a listed child: kept


def test_a_directory_above_the_window_size_is_read_by_queries(tmp_path, monkeypatch):
    from ossencfs.fs import attrcache
    monkeypatch.setattr(attrcache, "WINDOW_MAX", 3)
    cache = AttrCache(str(tmp_path / "a.sqlite"))
    keys = {f"d/f{i}" for i in range(5)}
    for i, key in enumerate(sorted(keys)):
        cache.record(key, f"E{i}", i, HEADERS, lastmod=1000.0)
    cache.commit()
    cache.listed("d/", keys, keys)
    sql = _statements(cache)
    assert all(cache.lookup(key, f"E{i}", i, 1000.0) is not None for i, key in enumerate(sorted(keys)))
    assert len(sql) == 5                                      # not kept in memory, still found
