"""Data keys made ahead for bursts of new files (``fs.keypool.KeyPool``), against the local
KMS over real HTTP: what is asked of KMS and when, that every key serves one object only and
unwraps with oss2's AliKMSProvider, and that keys made ahead do not outlive ``KEEP``."""
from __future__ import annotations

import oss2
import itertools

import pytest
import trio
from oss2.models import ContentCryptoMaterial

from ossencfs.envelope import format as fmt
from ossencfs.envelope.keys import KeyRing
from ossencfs.errors import KeyServiceUnavailableError
from ossencfs.fs import keypool
from ossencfs.fs.keypool import KeyPool

from .conftest import oss2_provider


def _pool(make_master, nursery: trio.Nursery, **kw) -> KeyPool:
    def spawn(fn) -> bool:
        nursery.start_soon(fn)
        return True
    return KeyPool(KeyRing([make_master(**kw)]), spawn)


names = (f"d/f{i}" for i in itertools.count())      # a new object key per take


def _made(kms) -> int:
    return kms.calls["GenerateDataKey"]


def test_a_burst_takes_keys_made_ahead_each_for_one_object(kms, cmk, make_master):
    got: list = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            pool = _pool(make_master, nursery)
            await pool.take(next(names))
            await trio.sleep(0.3)
            assert _made(kms) == 1                    # a lone create asks for nothing ahead
            for _ in range(5):                        # a burst: keys are made ahead
                got.append(await pool.take(next(names)))
            while pool._making:
                await trio.sleep(0.05)
            assert pool.made_ahead >= 3
            before = _made(kms)
            got.append(await pool.take(next(names)))   # served from the pool: no KMS call now
            assert _made(kms) == before
            await trio.sleep(0.3)
            assert _made(kms) <= 7 + pool.ahead_max   # never more ahead than creates came
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert len({m.key for m, _ in got}) == len({h[fmt.H_KEY] for _, h in got}) == len(got)  # none reused
    provider = oss2_provider(kms, cmk)
    for material, headers in got:                      # each unwraps with the SDK's provider
        meta = ContentCryptoMaterial(oss2.utils.AESCTRCipher(), provider.wrap_alg)
        meta.from_object_meta(headers)
        assert provider.decrypt_encrypted_key(meta.encrypted_key) == material.key


def test_keys_made_ahead_and_not_taken_are_dropped(kms, make_master, monkeypatch):
    monkeypatch.setattr(keypool, "KEEP", 0.3)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            pool = _pool(make_master, nursery)
            for _ in range(4):
                await pool.take(next(names))
            while pool._making:
                await trio.sleep(0.05)
            assert pool.made_ahead >= 1
            cached = pool.keyring.cache_size          # new_object caches every key it makes
            await trio.sleep(1.0)                     # no create comes: they go anyway
            assert pool.dropped >= 1 and not pool._ready
            assert pool.keyring.cache_size == cached - pool.dropped   # from the key ring too
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_failing_kms_is_reported_by_the_create_not_hidden_by_the_pool(kms, make_master):
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            pool = _pool(make_master, nursery, retries=0)
            for _ in range(3):
                await pool.take(next(names))
            while pool._making:
                await trio.sleep(0.05)
            pool._ready.clear()
            kms.set_faults(fail_rate=1.0)
            with pytest.raises(KeyServiceUnavailableError):
                await pool.take(next(names))
            with pytest.raises(KeyServiceUnavailableError):   # no hang, and no storm ahead
                await pool.take(next(names))
            kms.set_faults(fail_rate=0.0)
            assert pool._making == 0
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_an_rsa_writer_makes_nothing_ahead(tmp_path):
    from ossencfs.envelope.rsakey import RsaMasterKey
    from tests.conftest import SDK_FIXTURES
    ring = KeyRing([RsaMasterKey.from_pem_file(str(SDK_FIXTURES / "rsa_test_private.pem"))])
    pool = KeyPool(ring, lambda fn: pytest.fail("nothing runs in the background"))
    out = trio.run(pool.take, "d/f")
    assert out[1][fmt.H_KEY] and pool.made_ahead == 0


def test_keys_taken_again_for_one_file_are_no_burst(kms, make_master):
    """``echo x > f``: bash closes a dup of the new file before it writes, so the file takes
    a key at its create and another at its write. That is one file, and nothing is made
    ahead (it was: a key per such file made and dropped unused)."""
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            pool = _pool(make_master, nursery)
            for _ in range(3):
                await pool.take("d/same")
            await trio.sleep(0.3)
            assert pool.made_ahead == 0 and _made(kms) == 3
            await pool.take("d/other")                # a second file: now it is a burst
            while pool._making:
                await trio.sleep(0.05)
            assert pool.made_ahead == 1
            nursery.cancel_scope.cancel()

    trio.run(main)
