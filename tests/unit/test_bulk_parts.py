"""Parts of the bulk tools: the checkpoint file and the watermark the walk moves over it,
shards, progress lines."""
from __future__ import annotations

import pytest

import io

from ossencfs.bulk.checkpoint import Checkpoint
from ossencfs.bulk.progress import BulkProgress
from ossencfs.bulk.walk import _Order
from ossencfs.errors import OssEncError

RUN = {"command": "rotate", "url": "oss://b/", "shard": "1/1", "target": "rsa:x"}


def test_watermark_stops_at_a_failure_and_done_keys_above_it_survive(tmp_path):
    path = str(tmp_path / "ckpt")
    cp = Checkpoint(path, RUN).open()
    order = _Order(cp)
    slots = {k: order.add(k) for k in ("a", "b", "c", "d", "e")}
    order.finish(slots["b"], True)          # out of order: no watermark yet
    assert cp.below == ""
    order.finish(slots["a"], True)
    assert cp.below == "b"
    order.finish(slots["c"], False)         # failed: retried next time
    order.finish(slots["d"], True)
    assert cp.below == "b"
    cp.close()
    with open(path, "a") as f:
        f.write('{"done": "e"')             # a line a kill cut short
    again = Checkpoint(path, RUN).open()
    assert (again.below, again.done) == ("b", {"d"})
    assert [k for k in "abcde" if not again.finished(k)] == ["c", "e"]
    again.close()
    # loading compacted the file: header, watermark, done keys above it
    assert open(path).read().count("\n") == 3


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    path = str(tmp_path / "ckpt")
    Checkpoint(path, RUN).open().close()
    with pytest.raises(OssEncError, match="another run"):
        Checkpoint(path, {**RUN, "target": "rsa:y"}).open()
    (tmp_path / "junk").write_text("hello\n")
    with pytest.raises(OssEncError, match="not a checkpoint"):
        Checkpoint(str(tmp_path / "junk"), RUN).open()


def test_shard_is_a_deterministic_partition():
    from ossencfs.bulk.shard import parse_shard
    keys = [f"k/{i}" for i in range(2000)] + ["", "ü/ß", "a" * 1000]
    owners = [[k for k in keys if parse_shard(f"{i}/4").owns(k)] for i in range(1, 5)]
    assert sorted(sum(owners, [])) == sorted(keys)
    assert all(400 < len(o) < 620 for o in owners)     # about a quarter each
    assert owners[2] == [k for k in keys if parse_shard("3/4").owns(k)]
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(OssEncError):
            parse_shard(bad)


def test_progress_is_a_line_every_interval_off_a_terminal():
    out = io.StringIO()
    p = BulkProgress("rotate", interval=0, stream=out)
    p.add_bytes(2048)
    p.object_done()
    p.close()
    line = out.getvalue()
    assert line.startswith("ossencfs: rotate: 1 objects, 2.0 KiB, ") and "obj/s" in line
    quiet = io.StringIO()
    q = BulkProgress("rotate", enabled=False, interval=0, stream=quiet)
    q.object_done()
    assert quiet.getvalue() == ""
