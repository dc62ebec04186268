"""What a known inode keeps in memory (issue 17: a mount that has seen a directory of 100,000
objects must stay within 300 MiB), and that every reader of that state still finds what it
needs: the kernel's attributes, an open's reader, a metadata change's headers.

The savings are checked by what a node holds (which headers, shared objects), not by timings
or process sizes.
"""
from __future__ import annotations

import stat

import pytest
import trio

from ossencfs.fs import attrs

pytestmark = pytest.mark.timeout(120)


def _ops(emulator, key: str) -> list[str]:
    return [e[1] for e in emulator.request_log if e[4] == key]


def test_a_node_keeps_only_the_headers_something_reads(model_rig, emulator, oss2_bucket,
                                                       crypto_bucket):
    """A HEAD (here the GET that stands in for it) answers ETag, Last-Modified,
    Content-Length, x-oss-hash-crc64ecma...: the node holds those in fields of its own or
    nobody reads them, so only the user metadata, the standard headers a metadata change
    keeps and the object type stay (``attrs.node_headers``). Reading an encrypted file
    still needs no HEAD (its reader takes the CSE headers from the node), and chmod keeps
    Content-Type, Cache-Control and the user metadata."""
    oss2_bucket.put_object("plain.txt", b"p" * 1000,
                           headers={"Content-Type": "text/x-test", "Cache-Control": "no-cache",
                                    "x-oss-meta-note": "kept"})
    crypto_bucket.put_object("cse.bin", b"c" * 300_000)     # more than one cache block

    async def main():
        async with model_rig(esdk_probe=True) as rig:
            await rig.ino("plain.txt")
            node = rig.model.inodes.at("plain.txt")
            assert node.headers == {"content-type": "text/x-test", "cache-control": "no-cache",
                                    "x-oss-meta-note": "kept", "x-oss-object-type": "Normal",
                                    "x-oss-storage-class": "Standard"}
            assert node.etag and node.size == 1000

            await rig.ino("cse.bin")
            cse = rig.model.inodes.at("cse.bin")
            assert "etag" not in cse.headers and "content-length" not in cse.headers
            assert "x-oss-meta-client-side-encryption-key" in cse.headers
            emulator.reset_stats()
            assert await rig.read_all("cse.bin") == b"c" * 300_000
            assert set(_ops(emulator, "cse.bin")) == {"GetObject"}

            await rig.setattr(await rig.ino("plain.txt"), mode=0o100600)
    trio.run(main)
    h = oss2_bucket.head_object("plain.txt").headers
    assert (h["Content-Type"], h["Cache-Control"], h["x-oss-meta-note"]) == \
        ("text/x-test", "no-cache", "kept")
    assert int(h["x-oss-meta-mode"]) == 0o100600
    assert oss2_bucket.get_object("plain.txt").read() == b"p" * 1000


@pytest.mark.parametrize("esdk_probe", [True, False], ids=["probe", "head"])
def test_a_known_node_shares_what_others_hold(model_rig, oss2_bucket, esdk_probe):
    """A looked-up file refers to objects held anyway rather than to copies: its ETag and
    time are its listing entry's (equal to what the HEAD, or the GET standing in for it,
    said), its mode and file type are the ints every node with that mode shares, its object
    type the string every listed entry of that type shares, its headers (no user metadata)
    a read-only map every such node shares, and no
    list or tuple is made per node for what is usually empty or one pair (unusable POSIX
    headers; a probe's answer)."""
    for name in ("a", "b"):
        oss2_bucket.put_object(f"d/{name}", b"x" * 100)

    async def main():
        async with model_rig(esdk_probe=esdk_probe) as rig:
            d = await rig.ino("d")
            a, b = await rig.ino("a", d), await rig.ino("b", d)
            na, nb = rig.model.node(a), rig.model.node(b)
            assert na.headers is not None and nb.headers is not None      # HEAD answered
            entries = rig.model.inodes.stale_listing("d").entries
            for node, name in ((na, "a"), (nb, "b")):
                assert node.etag is entries[name].etag
                assert node.mtime is entries[name].mtime
                assert node.meta.ignored == () and isinstance(node.meta.ignored, tuple)
            assert na.meta.mode == nb.meta.mode == stat.S_IFREG | 0o644
            assert na.meta.mode is nb.meta.mode and na.kind is nb.kind
            assert entries["a"].object_type is entries["b"].object_type      # "Normal"
            assert na.headers is nb.headers                  # one read-only map for both
            with pytest.raises(TypeError):
                na.headers["x-oss-meta-mode"] = "0"          # type: ignore[index]
            if esdk_probe:
                assert (na.esdk_etag, na.esdk_plain) == (na.etag, None)     # probed: plain
                assert rig.model.attrs(na).st_size == 100
    trio.run(main)


def test_shared_header_maps_are_bounded(monkeypatch):
    """Header sets without user metadata share one read-only map each, up to ``_SHARED_MAX``
    of them; past that (a bucket of many Content-Types) a node keeps a map of its own, and
    one with user metadata always does."""
    monkeypatch.setattr(attrs, "_SHARED", {})
    monkeypatch.setattr(attrs, "_SHARED_MAX", 2)

    def head(ctype: str, **meta: str) -> dict[str, str]:
        return {"content-type": ctype, "etag": '"E"', "content-length": "5",
                "x-oss-object-type": "Normal", **meta}
    a, b = attrs.node_headers(head("text/a")), attrs.node_headers(head("text/b"))
    assert attrs.node_headers(head("text/a")) is a and attrs.node_headers(head("text/b")) is b
    assert dict(a) == {"content-type": "text/a", "x-oss-object-type": "Normal"}
    c1, c2 = attrs.node_headers(head("text/c")), attrs.node_headers(head("text/c"))
    assert c1 == c2 and c1 is not c2 and len(attrs._SHARED) == 2
    m1 = attrs.node_headers(head("text/a", **{"x-oss-meta-mode": "33188"}))
    assert isinstance(m1, dict) and m1["x-oss-meta-mode"] == "33188"
