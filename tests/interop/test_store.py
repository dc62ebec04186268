"""ObjectStore against the emulator over HTTP: exact ranges, typed errors, retries."""
from __future__ import annotations

import socket

import pytest
import trio

from ossencfs.errors import (AccessDeniedError, ConflictError, NetworkError, NotFoundError,
                             StoreError)
from ossencfs.store import ObjectStore
from tests.conftest import AK, BUCKET
from tests.interop.conftest import PART, payload


def test_head_get_range_exact_bytes_and_counters(store, oss2_bucket):
    data = payload(10_000)
    oss2_bucket.put_object("dir/a.bin", data, headers={"x-oss-meta-mode": "33188"})

    async def main():
        assert await store.head("missing") is None
        info = await store.head("dir/a.bin")
        assert info.size == len(data) and info.etag and info.mtime > 0
        assert info.headers["x-oss-meta-mode"] == "33188"
        before = store.bytes_fetched
        for start, end in [(0, 0), (1, 16), (17, 4097), (9_999, 9_999), (0, 9_999)]:
            got = await store.get_range("dir/a.bin", start, end, if_match=info.etag)
            assert got == data[start:end + 1]
        assert store.bytes_fetched - before == 1 + 16 + 4081 + 1 + 10_000
        assert store.requests["get"] == 5 and store.requests["head"] == 2
    trio.run(main)


def test_range_past_eof_and_changed_object_raise(store, oss2_bucket):
    oss2_bucket.put_object("k", b"x" * 100)

    async def main():
        info = await store.head("k")
        with pytest.raises(ConflictError):        # the server clamps: never hand back fewer bytes
            await store.get_range("k", 50, 150)
        with pytest.raises(StoreError):           # 416 with range-behavior: standard
            await store.get_range("k", 100, 110)
        oss2_bucket.put_object("k", b"y" * 100)
        with pytest.raises(ConflictError):        # If-Match guards against a changed object
            await store.get_range("k", 0, 9, if_match=info.etag)
        with pytest.raises(NotFoundError):
            await store.get_range("nope", 0, 9)
    trio.run(main)


def test_put_copy_list_delete(store, oss2_bucket):
    async def main():
        etag = await store.put("p/one", b"1", {"x-oss-meta-a": "b", "Content-Type": "text/x-test"})
        assert etag == oss2_bucket.head_object("p/one").etag
        with pytest.raises(ConflictError):
            await store.put("p/one", b"2", {}, forbid_overwrite=True)
        await store.copy("p/one", "p/two")                       # COPY keeps metadata
        assert oss2_bucket.head_object("p/two").headers["x-oss-meta-a"] == "b"
        await store.copy("p/one", "p/one", headers={"x-oss-meta-c": "d"}, if_match=etag)
        h = oss2_bucket.head_object("p/one").headers
        assert h["x-oss-meta-c"] == "d" and "x-oss-meta-a" not in h   # REPLACE
        await store.put("p/one", b"changed", {})
        with pytest.raises(ConflictError):
            await store.copy("p/one", "p/one", headers={}, if_match=etag)   # etag moved on
        for i in range(5):
            await store.put(f"p/sub/{i}", b"", {})
        page = await store.list_page("p/", "/", max_keys=2)
        assert [o.key for o in page.objects] == ["p/one"] and page.prefixes == ["p/sub/"]
        assert page.next_token
        page2 = await store.list_page("p/", "/", page.next_token, max_keys=2)
        assert [o.key for o in page2.objects] == ["p/two"] and page2.next_token is None
        keys = [o.key async for o in store.iter_objects("p/")]
        assert len(keys) == 7
        await store.delete_many(keys)
        await store.delete("p/never-existed")
        assert [o.key async for o in store.iter_objects("p/")] == []
    trio.run(main)


def test_multipart_and_abort(store, oss2_bucket):
    data = payload(PART * 2 + 5)

    async def main():
        uid = await store.init_multipart("mp", {"x-oss-meta-x": "1"})
        parts = []
        for n, off in enumerate(range(0, len(data), PART), start=1):
            parts.append((n, await store.upload_part("mp", uid, n, data[off:off + PART], {})))
        await store.complete_multipart("mp", uid, parts)
        uid2 = await store.init_multipart("mp2", {})
        await store.abort_multipart("mp2", uid2)
        await store.abort_multipart("mp2", uid2)     # already gone: not an error
    trio.run(main)
    assert oss2_bucket.get_object("mp").read() == data
    assert oss2_bucket.head_object("mp").object_type == "Multipart"
    assert not oss2_bucket.object_exists("mp2")


def test_bad_credentials_are_access_denied(emulator):
    bad = ObjectStore.connect(emulator.endpoint, BUCKET, AK, "wrong-secret", backoff_base=0.01)

    async def main():
        with pytest.raises(AccessDeniedError):
            await bad.get_range("x", 0, 1)
    trio.run(main)
    assert bad.requests["get"] == 1          # permanent: not retried


def test_network_down_gives_network_error_after_bounded_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = ObjectStore.connect(f"http://127.0.0.1:{port}", BUCKET, AK, "SK", retries=2,
                               backoff_base=0.01)

    async def main():
        with pytest.raises(NetworkError):
            await down.head("x")
    trio.run(main)
    assert down.requests["head"] == 3 and down.retried["head"] == 2


def test_retries_ride_through_injected_faults(emulator, oss2_bucket):
    store = ObjectStore.connect(emulator.endpoint, BUCKET, AK, "SK", retries=10,
                                backoff_base=0.005, backoff_max=0.05)
    data = payload(50_000)
    oss2_bucket.put_object("f", data)
    emulator.set_faults(fail_rate=0.2, drop_rate=0.2)   # 503s and cut connections/bodies
    try:
        async def main():
            for i in range(12):
                start = i * 1000 + 3
                assert await store.get_range("f", start, start + 999) == data[start:start + 1000]
                await store.put(f"w{i}", data[:1000], {})
        trio.run(main)
    finally:
        emulator.set_faults(fail_rate=0.0, drop_rate=0.0)
    assert sum(store.retried.values()) > 0
    assert all(oss2_bucket.get_object(f"w{i}").read() == data[:1000] for i in range(12))


def test_a_ranged_get_in_pieces_is_exact_even_when_bodies_are_cut(emulator, oss2_bucket):
    """``get_range_pieces`` (read-ahead's GETs, each block read as it arrives): pieces of the
    asked size, the last shorter, exactly the object's bytes; a body cut off half-way is
    retried whole, never returned in part or pieced together from two attempts; the CRC-64
    is checked when the whole object is read."""
    store = ObjectStore.connect(emulator.endpoint, BUCKET, AK, "SK", retries=30,
                                backoff_base=0.005, backoff_max=0.05)
    data = payload(3 * (1 << 20) + 12345, seed=9)
    oss2_bucket.put_object("p", data)
    piece = 256 * 1024

    async def main():
        whole = await store.get_range_pieces("p", 0, len(data) - 1, piece)
        assert [len(p) for p in whole] == [piece] * 12 + [12345]
        assert b"".join(whole) == data
        start, end = piece, len(data) - 2
        part = await store.get_range_pieces("p", start, end, piece)
        assert b"".join(part) == data[start:end + 1]
        assert all(len(p) == piece for p in part[:-1]) and 0 < len(part[-1]) <= piece
        emulator.set_faults(drop_rate=0.3)          # cut connections and bodies
        try:
            for i in range(60):                     # until a few were cut (0.7^60: never)
                s = i * 100_003 % len(data)
                got = await store.get_range_pieces("p", s, len(data) - 1, piece)
                assert b"".join(got) == data[s:]
                if i >= 5 and store.retried["get"] >= 3:
                    break
        finally:
            emulator.set_faults(drop_rate=0.0)
    trio.run(main)
    assert store.retried["get"] >= 3
