"""EncryptedObjects in-process against the emulator, oss2 CryptoBucket as the oracle."""
from __future__ import annotations

import oss2
import pytest
import trio

from ossencfs.envelope.keys import KeyRing, RsaMasterKey
from ossencfs.errors import ConflictError, NotFoundError, WrongKeyError
from ossencfs.objects import EncryptedObjects, plan_part_size
from tests.conftest import reupload_with_meta
from tests.interop.conftest import PART, oss2_multipart, payload

ODD_RANGES = [(0, 1), (1, 15), (15, 2), (16, 16), (17, 100_000), (PART - 3, 7), (PART, PART + 1),
              (2 * PART + 11, 10**9), (0, 10**9)]


def objects_with(store, *paths: str, **kw) -> EncryptedObjects:
    ring = KeyRing([RsaMasterKey.from_pem_file(p) for p in paths]) if paths else None
    return EncryptedObjects(store, ring, **kw)


def test_reader_odd_ranges_over_oss2_multipart(store, crypto_bucket, rsa_provider, rsa_key_path):
    data = payload(3 * PART + 999, seed=20)
    oss2_multipart(crypto_bucket(rsa_provider), "r/mp", data, PART)
    objs = objects_with(store, rsa_key_path)

    async def main():
        reader = await objs.open_reader("r/mp")
        assert reader.encrypted and reader.size == len(data)
        gets = store.requests["get"]
        fetched = store.bytes_fetched
        for off, n in ODD_RANGES:
            assert await reader.read(off, n) == data[off:off + n], (off, n)
        assert store.requests["get"] - gets == len(ODD_RANGES)     # one GET per read
        # a read costs what it reads: at most 15 alignment bytes extra per read
        wanted = sum(len(data[o:o + n]) for o, n in ODD_RANGES)
        assert store.bytes_fetched - fetched <= wanted + 15 * len(ODD_RANGES)
        assert await reader.read(len(data), 10) == b""
        # read_cipher + decrypt, as the block cache uses them
        raw = await reader.read_cipher(32, 64)               # offset, length
        assert reader.decrypt(37, raw[5:]) == data[37:96]
    trio.run(main)


def test_plain_objects_pass_through(store, oss2_bucket):
    data = payload(5000, seed=21)
    oss2_bucket.put_object("plain", data)
    objs = objects_with(store)                       # no key needed for plain objects

    async def main():
        reader = await objs.open_reader("plain")
        assert not reader.encrypted and reader.material is None
        assert await reader.read(3, 17) == data[3:20]
        with pytest.raises(NotFoundError):
            await objs.open_reader("absent")
    trio.run(main)


def test_write_single_and_multipart_read_by_oss2(store, crypto_bucket, rsa_provider,
                                                 rsa_key_path, oss2_bucket):
    objs = objects_with(store, rsa_key_path, part_size=PART, multipart_threshold=2 * PART,
                        upload_parallelism=3)
    small, big = payload(PART, seed=22), payload(5 * PART + 3, seed=23)

    async def chunked(data: bytes, step: int):
        for i in range(0, len(data), step):
            yield data[i:i + step]

    async def main():
        await objs.write("w/small", small, len(small), {"x-oss-meta-mode": "33188"})
        await objs.write("w/big", chunked(big, 33_333), len(big), {"Content-Type": "x/y"})
        with pytest.raises(ConflictError):
            await objs.write("w/small", b"again", 5, forbid_overwrite=True)
    trio.run(main)
    cb = crypto_bucket(rsa_provider)
    assert cb.get_object("w/small").read() == small
    assert cb.get_object("w/big").read() == big
    head = oss2_bucket.head_object("w/big")
    assert head.object_type == "Multipart" and head.content_type == "x/y"
    assert store.requests["upload_part"] == 6
    # no multipart upload left behind
    assert list(oss2.ObjectUploadIterator(oss2_bucket, "w/big")) == []


def test_failed_multipart_is_aborted(store, rsa_key_path, oss2_bucket):
    objs = objects_with(store, rsa_key_path, part_size=PART, multipart_threshold=2 * PART)

    async def short_stream():
        yield payload(PART * 2)                       # announces 3 parts' worth, gives 2

    async def main():
        with pytest.raises(Exception, match="source ended"):
            await objs.write("w/short", short_stream(), 3 * PART)
    trio.run(main)
    assert not oss2_bucket.object_exists("w/short")
    assert list(oss2.ObjectUploadIterator(oss2_bucket, "w/short")) == []
    assert store.requests["abort_multipart"] == 1


def test_rewrap_keeps_data_and_metadata(store, crypto_bucket, rsa_provider, second_rsa_provider,
                                        rsa_key_path, second_rsa_key_path, oss2_bucket):
    data = payload(3 * PART + 5, seed=24)
    oss2_multipart(crypto_bucket(rsa_provider), "rw/obj", data, PART)
    meta = {k: v for k, v in oss2_bucket.head_object("rw/obj").headers.items()
            if k.lower().startswith("x-oss-meta-")}
    meta.update({"x-oss-meta-mode": "33261", "x-oss-meta-uid": "1000", "x-oss-meta-mtime": "1700000000",
                 "x-oss-meta-note": "keep me", "Content-Type": "application/x-test"})
    reupload_with_meta(oss2_bucket, "rw/obj", meta)
    before = oss2_bucket.head_object("rw/obj").headers
    stored_before = oss2_bucket.get_object("rw/obj").read()
    objs = objects_with(store, rsa_key_path, second_rsa_key_path)
    new_master = RsaMasterKey.from_pem_file(second_rsa_key_path)

    async def main():
        await objs.rewrap("rw/obj", new_master)
    trio.run(main)
    after = oss2_bucket.head_object("rw/obj")
    for name in ("x-oss-meta-mode", "x-oss-meta-uid", "x-oss-meta-mtime", "x-oss-meta-note",
                 "Content-Type", "x-oss-meta-client-side-encryption-unencrypted-content-length"):
        assert after.headers.get(name) == before.get(name), name
    assert after.headers["x-oss-meta-client-side-encryption-key"] != \
        before["x-oss-meta-client-side-encryption-key"]
    assert oss2_bucket.get_object("rw/obj").read() == stored_before   # data not re-encrypted
    assert crypto_bucket(second_rsa_provider).get_object("rw/obj").read() == data
    with pytest.raises(Exception):
        crypto_bucket(rsa_provider).get_object("rw/obj").read()
    only_old = objects_with(store, rsa_key_path)

    async def old_key_fails():
        with pytest.raises(WrongKeyError):
            await only_old.open_reader("rw/obj")
    trio.run(old_key_fails)


def test_plan_part_size_rules():
    assert plan_part_size(10 << 20, 1000) == 100 * 1024
    assert plan_part_size(10 << 20, 8 << 20) == 8 << 20
    p = plan_part_size(200 * 1024 * 10001, 100 * 1024 + 1)
    assert p % 16 == 0 and (200 * 1024 * 10001 + p - 1) // p <= 10000


def test_multipart_from_a_file_sends_many_parts_at_once(store, oss2_bucket, emulator):
    """With a blocking reader of the staged bytes (``read_cipher_sync``), each part is read
    while it is sent, so more parts than ``upload_parallelism`` are in flight at once (up
    to the store's connections), the async reader is never used, and the object is right."""
    import threading
    objs = objects_with(store, part_size=PART, multipart_threshold=2 * PART,
                        upload_parallelism=2)
    data = payload(20 * PART + 5, seed=31)
    lock = threading.Lock()
    started: set[int] = set()
    state = {"done": 0, "peak": 0}

    def read_sync(off: int, n: int) -> bytes:
        with lock:
            started.add(off // PART)
            state["peak"] = max(state["peak"], len(started) - state["done"])
        return data[off:off + n]

    async def read_async(off: int, n: int) -> bytes:
        raise AssertionError("a buffered part was read")

    def progress(n: int) -> None:
        with lock:
            state["done"] += 1

    async def main():
        await objs.upload("w/streamed", len(data), read_async, {}, progress=progress,
                          read_cipher_sync=read_sync)
    emulator.set_faults(latency_ms=50)
    try:
        trio.run(main)
    finally:
        emulator.set_faults(latency_ms=0)
    assert oss2_bucket.get_object("w/streamed").read() == data
    assert store.requests["upload_part"] == 21 and state["done"] == 21
    assert state["peak"] > 2, state


def test_streamed_parts_go_up_to_thirty_two_at_once(emulator, oss2_bucket):
    """Over slow connections an upload goes in waves of the parts sent at once: 32 of them
    (``multipart.STREAMED_PARTS``; 16 before: a 256 MiB file over the cloud profile took
    two waves of 8 MiB parts instead of one), never more, each holding a ``PartBody.PIECE``."""
    import threading

    from ossencfs import multipart
    from ossencfs.store import ObjectStore
    from tests.conftest import AK, BUCKET, SK
    store = ObjectStore.connect(emulator.endpoint, BUCKET, AK, SK, concurrency=48,
                                backoff_base=0.01)
    objs = objects_with(store, part_size=PART, multipart_threshold=2 * PART,
                        upload_parallelism=4)
    data = payload(40 * PART + 3, seed=32)
    lock = threading.Lock()
    state = {"open": 0, "peak": 0}

    def read_sync(off: int, n: int) -> bytes:
        if off % PART == 0:                   # a part's first piece: it is being sent
            with lock:
                state["open"] += 1
                state["peak"] = max(state["peak"], state["open"])
        return data[off:off + n]

    def progress(n: int) -> None:
        with lock:
            state["open"] -= 1

    async def read_async(off: int, n: int) -> bytes:
        raise AssertionError("a buffered part was read")

    emulator.set_faults(latency_ms=300)
    try:
        trio.run(lambda: objs.upload("w/wide", len(data), read_async, {}, progress=progress,
                                     read_cipher_sync=read_sync))
    finally:
        emulator.set_faults(latency_ms=0)
    assert oss2_bucket.get_object("w/wide").read() == data
    assert 16 < state["peak"] <= multipart.STREAMED_PARTS == 32, state
