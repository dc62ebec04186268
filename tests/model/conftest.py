"""The file-system model driven directly, without the kernel (as s3ql's fs API tests do).

``model_rig`` builds what ``fs.mounter.Mount._build`` builds (``FsModel`` with its block cache,
staging area, journal, uploader and write-back queue) on the emulator over real HTTP and the
SDK test key, inside a trio run; the test calls the handlers ``fs.operations`` would call and
checks the bucket with oss2's CryptoBucket (the oracle). No FUSE mount, so a failing step
shows the model's own exception rather than an errno from the kernel.
"""
from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import pyfuse3
import pytest
import trio

from ossencfs.envelope.keys import KeyRing, RsaMasterKey
from ossencfs.esdk_objects import EsdkObjects
from ossencfs.fs import posix
from ossencfs.fs.attrcache import AttrCache
from ossencfs.fs.cache import BlockCache
from ossencfs.fs.inodes import ROOT_INO
from ossencfs.fs.journal import Journal, MountIdentity
from ossencfs.fs.model import FsModel
from ossencfs.fs.stagingarea import StagingArea
from ossencfs.fs.uploader import Uploader
from ossencfs.fs.writeback import WriteBack
from ossencfs.objects import EncryptedObjects
from ossencfs.store import ObjectStore
from tests.conftest import AK, BUCKET, SDK_FIXTURES, SK

PART_SIZE = 102400            # as tests/mount/conftest.py: multipart stays fast
MULTIPART_THRESHOLD = 256 * 1024


@dataclass
class SetattrFields:
    """The kernel's setattr field mask (``pyfuse3.SetattrFields`` has no settable fields in
    Python: pyfuse3 fills it from the kernel's request)."""
    update_size: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_mtime: bool = False
    update_atime: bool = False
    update_ctime: bool = False


@dataclass
class Rig:
    model: FsModel
    store: ObjectStore
    staging_dir: Path
    journal: Journal
    nursery: trio.Nursery
    handles: list[int] = field(default_factory=list)

    @property
    def ctx(self) -> pyfuse3.RequestContext:
        return pyfuse3.RequestContext()          # uid 0, gid 0: the test runs as root

    async def create(self, name: str, data: bytes = b"", parent: int = ROOT_INO) -> int:
        """create(2) + write(2) of ``data``; returns the open handle."""
        fi, _ = await self.model.create(parent, name, 0o644, os.O_WRONLY | os.O_CREAT, self.ctx)
        if data:
            assert await self.model.write(fi.fh, 0, data) == len(data)
        return fi.fh

    async def close(self, fh: int) -> None:
        """close(2): flush, then release (the kernel's order)."""
        await self.model.flush(fh)
        await self.model.release(fh)

    async def ino(self, name: str, parent: int = ROOT_INO) -> int:
        return (await self.model.lookup(parent, name)).st_ino

    async def read_all(self, name: str) -> bytes:
        ino = await self.ino(name)
        fi = await self.model.open(ino, os.O_RDONLY)
        try:
            size = (await self.model.getattr(ino)).st_size
            return await self.model.read(fi.fh, 0, size + 1)
        finally:
            await self.model.release(fi.fh)

    async def setattr(self, ino: int, fh: int | None = None, **changes: int) -> pyfuse3.EntryAttributes:
        """setattr(2) of ``size``, ``mode``, ``uid``, ``gid``, ``mtime_ns``, ``atime_ns``."""
        attr = pyfuse3.EntryAttributes()
        fields = SetattrFields()
        for name, value in changes.items():
            setattr(attr, {"size": "st_size", "mode": "st_mode", "uid": "st_uid",
                           "gid": "st_gid", "mtime_ns": "st_mtime_ns",
                           "atime_ns": "st_atime_ns"}[name], value)
            setattr(fields, "update_" + name.removesuffix("_ns"), True)
        return await self.model.setattr(ino, attr, fields, fh)  # type: ignore[arg-type]

    def journal_entries(self) -> list[str]:
        return sorted(p.name for p in self.staging_dir.glob("*.json"))


@pytest.fixture
def model_rig(emulator: object, tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[Rig]]:
    """``async with model_rig(write_back=0.0) as rig:`` inside ``trio.run``: a model on the
    emulator; at the end the queue is drained (as at unmount) and the store closed."""

    @contextlib.asynccontextmanager
    async def make(write_back: float = 0.0, ttl: float = 2.0,
                   esdk_probe: bool = False) -> AsyncIterator[Rig]:
        """``esdk_probe``: look for Encryption SDK messages as a default mount does (no
        ESDK keys: the probe only learns their sizes)."""
        keyring = KeyRing([RsaMasterKey.from_pem_file(str(SDK_FIXTURES / "rsa_test_private.pem"))])
        store = ObjectStore.connect(emulator.endpoint, BUCKET, AK, SK, retries=2)
        objects = EncryptedObjects(store, keyring, part_size=PART_SIZE,
                                   multipart_threshold=MULTIPART_THRESHOLD,
                                   esdk=EsdkObjects(store, None) if esdk_probe else None)
        base = tmp_path / "cache"
        staging_dir = base / "staging"
        staging_dir.mkdir(parents=True, exist_ok=True)
        journal = Journal(str(staging_dir), str(base / "quarantine"),
                          MountIdentity(emulator.endpoint, BUCKET, ""))
        staging = StagingArea(str(staging_dir), keyring, journal)
        cache = BlockCache(str(base / "blocks"), max_bytes=1 << 30)
        cache.reserved = lambda: staging.used
        staging.make_room = cache.make_room
        policy = posix.MountPolicy(default_uid=os.getuid(), default_gid=os.getgid())
        spawner: list[trio.Nursery] = []

        def spawn(fn: Callable[[], object]) -> bool:
            if not spawner:
                return False
            spawner[0].start_soon(fn)
            return True
        model = FsModel(store, objects, cache, staging, Uploader(objects), prefix="",
                        policy=policy, ttl=ttl, read_only=False, spawn=spawn,
                        write_back=write_back,
                        attr_cache=AttrCache(str(base / "attrs.sqlite")))
        model.writeback = WriteBack(upload=model.upload_job, writers=model.writers,
                                    where=model.where, delay=write_back, parallel=2)
        async with trio.open_nursery() as nursery:
            spawner.append(nursery)
            nursery.start_soon(model.writeback.run)
            rig = Rig(model, store, staging_dir, journal, nursery)
            try:
                yield rig
                assert await model.flush_all() == 0
            finally:
                spawner.clear()
                nursery.cancel_scope.cancel()
        model.attr_cache.close()
    return make


def is_reg(attrs: pyfuse3.EntryAttributes) -> bool:
    return stat.S_ISREG(attrs.st_mode)
