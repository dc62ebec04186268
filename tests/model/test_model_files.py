"""open/read/write/flush/release, rename, unlink and setattr on the model, without the kernel.

Each test drives ``FsModel``'s handlers as ``fs.operations`` would and checks the bucket with
oss2's CryptoBucket (the SDK is the oracle for what is stored) and the node's states
(``fs.dirtystate``).
"""
from __future__ import annotations

import errno
import os
import stat
import time

import oss2
import pyfuse3
import pytest
import trio
import trio.testing

from ossencfs.fs.dirtystate import DirtyState, KeyState
from ossencfs.fs.inodes import ROOT_INO

pytestmark = pytest.mark.timeout(120)


def _get(crypto_bucket: oss2.CryptoBucket, key: str) -> bytes:
    return crypto_bucket.get_object(key).read()


def test_create_write_close_uploads_at_close(model_rig, crypto_bucket, oss2_bucket):
    async def main():
        async with model_rig() as rig:
            fh = await rig.create("a.txt", b"hello model")
            node = rig.model.handle(fh).node
            assert node.dirty_state is DirtyState.DIRTY
            assert node.staging.key_state is KeyState.OPEN
            assert not oss2_bucket.object_exists("a.txt")
            await rig.close(fh)
            # upload on close: in the bucket when close returns, nothing left to replay
            assert node.dirty_state is DirtyState.CLEAN
            assert node.staging is None                    # closed: freed
            assert _get(crypto_bucket, "a.txt") == b"hello model"
            assert rig.journal_entries() == []
            assert await rig.read_all("a.txt") == b"hello model"
    trio.run(main)


def test_write_back_close_journals_then_uploads(model_rig, crypto_bucket, oss2_bucket):
    async def main():
        async with model_rig(write_back=3600) as rig:
            fh = await rig.create("wb.bin", b"x" * 5000)
            node = rig.model.handle(fh).node
            await rig.close(fh)
            # acknowledged: a durable entry, sealed at commit (small and complete), not sent
            assert node.dirty_state is DirtyState.DIRTY
            assert node.staging.key_state is KeyState.SEALED_COMMITTED
            assert len(rig.journal_entries()) == 1
            assert not oss2_bucket.object_exists("wb.bin")
            assert await rig.read_all("wb.bin") == b"x" * 5000      # served from staging
            assert await rig.model.flush_all() == 0                 # as at unmount
            assert node.dirty_state is DirtyState.CLEAN
            assert rig.journal_entries() == []
            assert _get(crypto_bucket, "wb.bin") == b"x" * 5000
    trio.run(main)


def test_write_after_upload_rekeys(model_rig, crypto_bucket, oss2_bucket):
    """A file kept open after its upload holds a sealed staging: the next write builds a
    successor under a fresh data key (never the same key/IV over other plaintext)."""
    async def main():
        async with model_rig() as rig:
            fh = await rig.create("k.bin", b"A" * 100)
            node = rig.model.handle(fh).node
            await rig.model.fsync(fh)                    # in the bucket, file still open
            first = oss2_bucket.head_object("k.bin").headers["x-oss-meta-client-side-encryption-key"]
            assert node.dirty_state is DirtyState.CLEAN
            assert node.staging.key_state is KeyState.SEALED
            await rig.model.write(fh, 10, b"B" * 10)
            assert node.dirty_state is DirtyState.DIRTY
            assert node.staging.key_state is KeyState.OPEN
            await rig.close(fh)
            second = oss2_bucket.head_object("k.bin").headers["x-oss-meta-client-side-encryption-key"]
            assert first != second
            assert _get(crypto_bucket, "k.bin") == b"A" * 10 + b"B" * 10 + b"A" * 80
    trio.run(main)


def test_partial_rewrite_keeps_untouched_ranges(model_rig, crypto_bucket):
    data = os.urandom(300_000)                           # multipart (threshold 256 KiB)
    crypto_bucket.put_object("big.bin", data)

    async def main():
        async with model_rig() as rig:
            ino = await rig.ino("big.bin")
            fi = await rig.model.open(ino, os.O_RDWR)
            assert await rig.model.read(fi.fh, 1000, 10) == data[1000:1010]
            await rig.model.write(fi.fh, 200_000, b"Z" * 5)
            await rig.close(fi.fh)
            want = data[:200_000] + b"Z" * 5 + data[200_005:]
            assert _get(crypto_bucket, "big.bin") == want
            assert await rig.read_all("big.bin") == want
    trio.run(main)


def test_rename_file_and_pending_upload(model_rig, crypto_bucket, oss2_bucket):
    async def main():
        async with model_rig(write_back=3600) as rig:
            await rig.close(await rig.create("pending", b"not yet sent"))
            await rig.model.rename(ROOT_INO, "pending", ROOT_INO, "moved", 0)
            assert not oss2_bucket.object_exists("pending")
            assert [e for e in rig.journal_entries()]             # still acknowledged
            assert await rig.model.flush_all() == 0
            assert _get(crypto_bucket, "moved") == b"not yet sent"
            assert not oss2_bucket.object_exists("pending")
            # a clean file: copy + delete in the bucket
            await rig.model.rename(ROOT_INO, "moved", ROOT_INO, "again", 0)
            assert _get(crypto_bucket, "again") == b"not yet sent"
            assert not oss2_bucket.object_exists("moved")
            with pytest.raises(pyfuse3.FUSEError) as err:
                await rig.model.lookup(ROOT_INO, "moved")
            assert err.value.errno == errno.ENOENT
    trio.run(main)


def test_unlink_while_open_keeps_data_until_release(model_rig, crypto_bucket, oss2_bucket):
    crypto_bucket.put_object("u.txt", b"still readable")

    async def main():
        async with model_rig() as rig:
            ino = await rig.ino("u.txt")
            fi = await rig.model.open(ino, os.O_RDONLY)
            await rig.model.unlink(ROOT_INO, "u.txt")
            with pytest.raises(pyfuse3.FUSEError):
                await rig.model.lookup(ROOT_INO, "u.txt")
            assert oss2_bucket.object_exists("u.txt")            # deleted at the last close
            assert await rig.model.read(fi.fh, 0, 100) == b"still readable"
            await rig.model.release(fi.fh)
            assert not oss2_bucket.object_exists("u.txt")
    trio.run(main)


def test_a_last_close_that_comes_while_unlink_is_under_way_deletes_the_object(
        model_rig, oss2_bucket):
    """``rm`` of a file whose close is uploading: the kernel's release can arrive while
    unlink, which saw the file still open and so deferred the delete to the last close, waits
    for a worker thread. That release saw the file not unlinked yet, the unlink then saw
    nothing left to wait for, and the object stayed in the bucket until unmount (and came
    back after a crash)."""
    async def main():
        async with model_rig() as rig:
            fh = await rig.create("u.txt", b"about to go")
            await rig.model.flush(fh)                     # close(2): uploaded, still open
            assert oss2_bucket.object_exists("u.txt")
            done = trio.Event()

            async def unlink() -> None:
                await rig.model.unlink(ROOT_INO, "u.txt")
                done.set()
            rig.nursery.start_soon(unlink)
            await trio.testing.wait_all_tasks_blocked()   # the unlink waits for its thread
            assert not done.is_set()
            await rig.model.release(fh)                   # the kernel's RELEASE, meanwhile
            await done.wait()
            assert not oss2_bucket.object_exists("u.txt")
    trio.run(main)


def test_a_directory_the_kernel_forgot_still_gets_its_times_stored(model_rig, oss2_bucket):
    """A change inside a directory is stored on its marker about a second later
    (``Namespace.touch_dir``). When the kernel forgot the directory's inode meanwhile
    (``drop_caches``, memory pressure: a FORGET), that store was skipped and the marker kept
    its old times (the flaky ``test_directory_times_follow_their_entries``)."""
    async def main():
        async with model_rig() as rig:
            d = await rig.model.mkdir(ROOT_INO, "d", 0o755, rig.ctx)
            made = float(oss2_bucket.head_object("d/").headers["x-oss-meta-mtime"])
            await trio.sleep(1.1)
            fh = await rig.create("f", b"x", parent=d.st_ino)     # the directory changes
            await rig.close(fh)
            touched = time.time() - 0.5
            rig.model.forget(d.st_ino, 1)                        # the kernel's FORGET
            assert rig.model.inodes.at("d") is None
            await trio.sleep(2.0)                                # past META_DELAY
            stored = float(oss2_bucket.head_object("d/").headers["x-oss-meta-mtime"])
            assert stored > touched > made, (made, touched, stored)
    trio.run(main)


def test_unlink_of_dirty_open_file_drops_its_entry(model_rig, oss2_bucket):
    async def main():
        async with model_rig(write_back=3600) as rig:
            fh = await rig.create("gone", b"data")
            node = rig.model.handle(fh).node
            await rig.model.fsync(fh)                     # uploaded; then written again
            await rig.model.write(fh, 0, b"DATA")
            await rig.model.flush(fh)                     # write-back: journaled
            assert node.staging.committed and rig.journal_entries()
            await rig.model.unlink(ROOT_INO, "gone")
            assert node.dirty_state is DirtyState.CLEAN
            assert not node.staging.committed and rig.journal_entries() == []
            assert await rig.model.read(fh, 0, 10) == b"DATA"    # open handle reads on
            await rig.model.release(fh)
            assert not oss2_bucket.object_exists("gone")
    trio.run(main)


def test_setattr_truncate_and_chmod(model_rig, crypto_bucket, oss2_bucket):
    crypto_bucket.put_object("t.bin", b"0123456789")

    async def main():
        async with model_rig() as rig:
            ino = await rig.ino("t.bin")
            attrs = await rig.setattr(ino, size=4)          # truncate(2), no handle
            assert attrs.st_size == 4
            assert _get(crypto_bucket, "t.bin") == b"0123"
            attrs = await rig.setattr(ino, mode=0o600)
            assert stat.S_IMODE(attrs.st_mode) == 0o600
            # a metadata change of an encrypted object is a re-upload (CopyObject may not
            # change its metadata): pending, then sent by the queue
            assert await rig.model.flush_all() == 0
            head = oss2_bucket.head_object("t.bin").headers
            assert stat.S_IMODE(int(head["x-oss-meta-mode"])) == 0o600
            assert _get(crypto_bucket, "t.bin") == b"0123"
    trio.run(main)

async def _files_seen_while(rig, action) -> set[str]:
    """The names that appear in the staging directory while ``action()`` runs (polled)."""
    seen: set[str] = set()
    done = trio.Event()

    async def run() -> None:
        try:
            await action()
        finally:
            done.set()
    rig.nursery.start_soon(run)
    while not done.is_set():
        seen |= set(os.listdir(rig.staging_dir))
        await trio.sleep(0.01)
    return seen


def test_a_failed_close_is_retried_by_the_queue_not_again_at_release(model_rig, emulator,
                                                                     crypto_bucket):
    """close(2) fails (OSS answers 503 to everything): the file is queued for retry with
    backoff. The kernel's release that follows sends nothing: it used to send the file again
    at once (with the store's own retries), failing the same way and answering nobody."""
    async def main():
        async with model_rig() as rig:
            fh = await rig.create("again.txt", b"later")
            emulator.set_faults(fail_rate=1.0)
            try:
                with pytest.raises(Exception):            # (EIO through the kernel)
                    await rig.model.flush(fh)

                def puts() -> int:
                    return sum(1 for e in emulator.request_log
                               if e[1] == "PutObject" and e[4] == "again.txt")
                sent = puts()
                await rig.model.release(fh)
                assert puts() == sent
                assert len(rig.journal_entries()) == 1
            finally:
                emulator.set_faults(fail_rate=0.0)
            assert await rig.model.flush_all() == 0
            assert _get(crypto_bucket, "again.txt") == b"later"
    trio.run(main)


@pytest.mark.parametrize("how", ["close", "fsync"])
def test_a_small_new_file_goes_up_from_memory_and_a_large_one_is_journaled_first(
        model_rig, emulator, crypto_bucket, how):
    """Without write-back, close and fsync upload at once. A small new file (its ciphertext
    still all in memory) is sent from memory: no data file and no journal entry is ever made,
    since a crash during the PUT loses only a file whose close had not returned. A larger
    one is journaled before its upload, so that a crash during it replays it."""
    async def main():
        async with model_rig() as rig:
            small = os.urandom(4096)
            large = os.urandom(200_000)
            emulator.set_faults(latency_ms=300)      # each request takes a while: polled
            try:
                seen: dict[str, set[str]] = {}
                for name, data in (("small.bin", small), ("large.bin", large)):
                    fh = await rig.create(name, data)
                    if how == "close":
                        seen[name] = await _files_seen_while(rig, lambda fh=fh: rig.close(fh))
                    else:
                        seen[name] = await _files_seen_while(
                            rig, lambda fh=fh: rig.model.fsync(fh))
                        await rig.close(fh)
            finally:
                emulator.set_faults(latency_ms=0)
            assert seen["small.bin"] == set()
            assert any(n.endswith(".json") for n in seen["large.bin"]), seen
            assert _get(crypto_bucket, "small.bin") == small
            assert _get(crypto_bucket, "large.bin") == large
            assert rig.journal_entries() == []
    trio.run(main)



def test_failed_upload_is_journaled_and_retried(model_rig, emulator, crypto_bucket):
    """Upload on close fails (every request 503): close reports the error, the content is
    journaled durably (replayable), and the queue sends it once OSS answers again."""
    async def main():
        async with model_rig() as rig:
            fh = await rig.create("retry.txt", b"eventually")
            node = rig.model.handle(fh).node
            emulator.set_faults(fail_rate=1.0)
            try:
                with pytest.raises(Exception):
                    await rig.close(fh)
                assert node.dirty_state is DirtyState.DIRTY
                assert node.staging.committed                 # replayable after a crash
                assert len(rig.journal_entries()) == 1
                assert rig.model.writeback.job_for(node) is not None
            finally:
                emulator.set_faults(fail_rate=0.0)
            assert await rig.model.flush_all() == 0
            assert node.dirty_state is DirtyState.CLEAN
            assert rig.journal_entries() == []
            assert _get(crypto_bucket, "retry.txt") == b"eventually"
    trio.run(main)


def test_a_head_answered_after_a_rename_does_not_drop_the_new_name(model_rig, crypto_bucket,
                                                                    emulator):
    """A stat's HEAD of ``old`` is out when ``old`` is renamed to ``new``; it is answered (404)
    after the rename deleted ``old``. That answer is about the old name: taking it as "gone"
    dropped the file under its new name (seen in tests/mount/test_stress.py on CI)."""
    crypto_bucket.put_object("old", b"still here")

    async def main():
        async with model_rig(ttl=0.2) as rig:
            ino = await rig.ino("old")
            await trio.sleep(0.5)                    # attributes expired: getattr HEADs
            got: dict[str, object] = {}

            async def stat() -> None:
                try:
                    got["size"] = (await rig.model.getattr(ino)).st_size
                except pyfuse3.FUSEError as exc:
                    got["errno"] = exc.errno

            emulator.set_faults(latency_ms=1500)     # this HEAD is answered late
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stat)
                await trio.sleep(0.5)
                emulator.set_faults(latency_ms=0)
                await rig.model.rename(ROOT_INO, "old", ROOT_INO, "new", 0)
            assert "errno" not in got, got
            assert (await rig.model.lookup(ROOT_INO, "new")).st_ino == ino
            assert await rig.read_all("new") == b"still here"
    trio.run(main)


def test_readdir_of_a_remount_settles_sizes_from_the_attribute_cache(model_rig, crypto_bucket,
                                                                      oss2_bucket):
    """A default mount probes large enough objects for Encryption SDK messages before stat
    may be cached; an earlier mount's attribute cache already settled each version (CSE
    headers, a probe), so a remount's readdir entries carry an attribute timeout and `ls -l`
    sends no GETATTR per entry (it sent one for each: 2.5x slower than before the probe)."""
    crypto_bucket.put_object("cse", b"c" * 1000)
    oss2_bucket.put_object("plain", b"p" * 1000)

    async def main():
        async with model_rig(esdk_probe=True) as rig:
            for name in ("cse", "plain"):
                assert (await rig.model.lookup(ROOT_INO, name)).attr_timeout > 0
        async with model_rig(esdk_probe=True) as rig:          # same cache directory
            root = rig.model.node(ROOT_INO)
            entries = await rig.model.list_dir(root)
            for name in ("cse", "plain"):
                node = rig.model.node_from_entry(root, entries[name])
                attrs = rig.model.attrs(node)
                assert (attrs.st_size, attrs.attr_timeout > 0) == (1000, True), name
        async with model_rig(esdk_probe=True) as rig:
            # another client's new version: no record, so stat asks (probe) before caching
            oss2_bucket.put_object("plain", b"q" * 999)
            root = rig.model.node(ROOT_INO)
            node = rig.model.node_from_entry(root, (await rig.model.list_dir(root))["plain"])
            assert rig.model.attrs(node).attr_timeout == 0
    trio.run(main)


def test_concurrent_first_reads_of_a_handle_make_one_read_ahead_stream(model_rig, crypto_bucket):
    """The kernel sends a handle's first reads several at a time (four 1 MiB requests with its
    4 MiB read-ahead). One object source serves them all: when each made its own, the extra
    one counted as a second stream for 10 s and halved the read-ahead window of the real one
    (64 MiB over the cloud profile: 63 -> 49 MB/s). Closing the file gives its share back."""
    data = os.urandom(6 << 20)
    crypto_bucket.put_object("big.bin", data)

    async def main():
        async with model_rig() as rig:
            streams = rig.model.cache.streams
            ino = await rig.ino("big.bin")
            fi = await rig.model.open(ino, os.O_RDONLY)
            got: dict[int, bytes] = {}

            async def read(off: int) -> None:
                got[off] = await rig.model.read(fi.fh, off, 1 << 20)
            async with trio.open_nursery() as nursery:
                for off in range(0, 4 << 20, 1 << 20):
                    nursery.start_soon(read, off)
            assert b"".join(got[o] for o in sorted(got)) == data[:4 << 20]
            source = rig.model.handle(fi.fh).source
            assert streams.share(source) == streams.budget        # the only stream
            await rig.model.release(fi.fh)
            assert streams.share(object()) == streams.budget      # its share is back
    trio.run(main)
