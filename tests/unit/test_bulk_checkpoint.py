"""The checkpoint file of the bulk tools and the watermark the walk moves over it."""
from __future__ import annotations

import pytest

from ossencfs.bulk.checkpoint import Checkpoint
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
