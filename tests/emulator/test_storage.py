"""The emulator's storage layer on its own: CRC combining, streaming hashes, trailers, reload."""
from __future__ import annotations

import hashlib
import os
import random
import time

from oss2.utils import Crc64

from ossencfs.emulator.storage import Entry, Storage, crc64_combine


def crc64(data: bytes) -> int:
    c = Crc64(0)
    c.update(data)
    return c.crc


def test_crc64_combine_matches_whole_crc():
    rnd = random.Random(7)
    for n1, n2 in [(0, 5), (5, 0), (1, 1), (1000, 3), (17, 70000)] + [
            (rnd.randint(0, 5000), rnd.randint(0, 5000)) for _ in range(20)]:
        a, b = os.urandom(n1), os.urandom(n2)
        assert crc64_combine(crc64(a), crc64(b), len(b)) == crc64(a + b)
    assert crc64_combine(None, 1, 5) is None and crc64_combine(1, None, 5) is None


def test_stream_from_hashes_every_path(tmp_path):
    st = Storage(str(tmp_path / "s"), fsync=False)
    for size, chunk, expected in [(0, 1 << 20, 0), (10, 1 << 20, 10), (3 << 20, 1 << 20, None),
                                  ((3 << 20) + 7, 1 << 20, (3 << 20) + 7), (5 << 20, 256 << 10, None)]:
        data = os.urandom(size)
        pos = [0]

        def readinto(view, data=data, pos=pos):
            n = min(len(view), len(data) - pos[0], 300000)      # short reads, like a socket
            view[:n] = data[pos[0]:pos[0] + n]
            pos[0] += n
            return n
        t = st.temp()
        t.stream_from(readinto, 1 << 40, chunk, expected)
        assert t.size == size and t.md5_hex == hashlib.md5(data).hexdigest().upper()
        assert t.crc64 == crc64(data)
        t.finish(Entry("k", size, t.md5_hex, t.crc64, time.time()), False)
        with open(t.path, "rb") as f:
            assert f.read(size) == data
        t.discard()


def test_reload_rebuilds_index_and_uploads(tmp_path):
    root = str(tmp_path / "s")
    st = Storage(root, fsync=True)
    st.create_bucket("bkt")
    b = st.get_bucket("bkt")
    keys = ["b", "a/", "a//x", "é", "z z+%"]
    for k in keys:
        t = st.temp()
        t.write(k.encode())
        st.commit(b, t, Entry(k, t.size, t.md5_hex, t.crc64, time.time(), headers={"x-oss-meta-k": k}))
    up = st.init_upload(b, "mp", {"content-type": "text/x"})
    t = st.temp()
    t.write(b"part")
    st.commit_part(b, up, 3, t, Entry("mp", 4, t.md5_hex, t.crc64, time.time(), "Part"))
    open(os.path.join(root, "tmp", "o-leftover"), "wb").close()       # a killed writer's temp file
    st2 = Storage(root)
    b2 = st2.get_bucket("bkt")
    assert b2.keys == sorted(keys)
    assert st2.lookup(b2, "z z+%").headers == {"x-oss-meta-k": "z z+%"}
    up2 = st2.get_upload(b2, up.upload_id)
    assert up2.key == "mp" and up2.headers == {"content-type": "text/x"} and up2.parts[3].size == 4
    assert os.listdir(os.path.join(root, "tmp")) == []


def test_orphan_segments_removed_at_start(tmp_path):
    root = str(tmp_path / "s")
    st = Storage(root)
    st.create_bucket("bkt")
    orphan = os.path.join(root, "buckets", "bkt", "segments", "DEADBEEF")
    os.makedirs(orphan)
    open(os.path.join(orphan, "1.part"), "wb").close()           # a Complete killed before its commit
    Storage(root)
    assert not os.path.exists(orphan)
