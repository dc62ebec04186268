"""RSA master keys, key files, and the KeyRing (matching, cache, single-flight)."""
from __future__ import annotations

import base64
import hashlib
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ossencfs.envelope import format as fmt
from ossencfs.envelope.format import CryptoHeaders, parse_headers
from ossencfs.envelope.keys import (ContentMaterial, KeyRing, MasterKey, RsaMasterKey,
                                    material_from_plaintext, matdesc_matches)
from ossencfs.errors import FormatError, KeyFileError, KeyUnavailableError, WrongKeyError

SDK = Path(__file__).resolve().parent.parent / "fixtures" / "sdk"


@pytest.fixture(scope="module")
def pair():
    return RsaMasterKey.generate(2048)


@pytest.fixture(scope="module")
def other():
    return RsaMasterKey.generate(2048)


def _pem_private(key: RsaMasterKey, fmt_, enc=None) -> bytes:
    return key._private.private_bytes(serialization.Encoding.PEM, fmt_,
                                      enc or serialization.NoEncryption())


# -- key files ----------------------------------------------------------------------------
def test_sdk_test_keys_pkcs1_private_and_public():
    priv = RsaMasterKey.from_pem_file(str(SDK / "rsa_test_private.pem"))
    pub = RsaMasterKey.from_pem_file(str(SDK / "rsa_test_public.pem"))  # "RSA PUBLIC KEY"
    assert priv.has_private and not pub.has_private
    assert priv.name == pub.name
    der = pub._public.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    assert priv.name == "rsa:" + hashlib.sha256(der).hexdigest()[:16]
    assert priv.key_size == 1024


@pytest.mark.parametrize("form", ["pkcs1", "pkcs8"])
def test_private_forms_plain_and_encrypted(tmp_path, pair, form):
    pf = {"pkcs1": serialization.PrivateFormat.TraditionalOpenSSL,
          "pkcs8": serialization.PrivateFormat.PKCS8}[form]
    plain = tmp_path / "plain.pem"
    plain.write_bytes(_pem_private(pair, pf))
    assert RsaMasterKey.from_pem_file(str(plain)).name == pair.name
    # a passphrase given for an unencrypted key is harmless
    assert RsaMasterKey.from_pem_file(str(plain), b"unused").has_private
    enc = tmp_path / "enc.pem"
    enc.write_bytes(_pem_private(pair, pf, serialization.BestAvailableEncryption(b"s3cret")))
    assert RsaMasterKey.from_pem_file(str(enc), b"s3cret").name == pair.name
    with pytest.raises(KeyFileError, match="passphrase") as e:
        RsaMasterKey.from_pem_file(str(enc))
    assert str(enc) in str(e.value)
    with pytest.raises(KeyFileError, match="wrong passphrase") as e:
        RsaMasterKey.from_pem_file(str(enc), b"nope")
    assert str(enc) in str(e.value) and "s3cret" not in str(e.value)


def test_public_spki_and_export(tmp_path, pair):
    p = tmp_path / "k.pub"
    p.write_bytes(pair.public_pem())
    assert b"BEGIN PUBLIC KEY" in pair.public_pem()
    pub = RsaMasterKey.from_pem_file(str(p))
    assert pub.name == pair.name and not pub.has_private
    assert b"BEGIN PRIVATE KEY" in pair.private_pem()
    assert b"ENCRYPTED" in pair.private_pem(b"pw")


def test_bad_key_files(tmp_path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(KeyFileError, match="cannot read") as e:
        RsaMasterKey.from_pem_file(str(missing))
    assert str(missing) in str(e.value)
    with pytest.raises(KeyFileError, match="cannot read"):
        RsaMasterKey.from_pem_file(str(tmp_path))  # a directory
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"hello\n")
    with pytest.raises(KeyFileError, match="not a PEM"):
        RsaMasterKey.from_pem_file(str(garbage))
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="broken.pem"):
        RsaMasterKey.from_pem_file(str(broken))
    broken_pub = tmp_path / "broken.pub"
    broken_pub.write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFileError, match="broken.pub"):
        RsaMasterKey.from_pem_file(str(broken_pub))
    ecf = tmp_path / "ec.pem"
    eck = ec.generate_private_key(ec.SECP256R1())
    ecf.write_bytes(eck.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    with pytest.raises(KeyFileError, match="not an RSA"):
        RsaMasterKey.from_pem_file(str(ecf))
    ecp = tmp_path / "ec.pub"
    ecp.write_bytes(eck.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(KeyFileError, match="not an RSA"):
        RsaMasterKey.from_pem_file(str(ecp))


def test_mismatched_pair_rejected(pair, other):
    with pytest.raises(ValueError):
        RsaMasterKey(pair._private, other._public)
    with pytest.raises(ValueError):
        RsaMasterKey.generate(1000)


# -- material -----------------------------------------------------------------------------
def test_content_material_hides_key():
    m = ContentMaterial(b"\xab" * 32, 5)
    assert "ab" not in repr(m) and "ab" not in str(m) and "secret" in repr(m)
    assert m.iv == (5).to_bytes(16, "big")
    with pytest.raises(ValueError):
        ContentMaterial(b"x" * 16, 0)
    with pytest.raises(ValueError):
        ContentMaterial(b"x" * 32, 1 << 128)


def _h(legacy=False, wrap=fmt.WRAP_RSA_PKCS1):
    return CryptoHeaders("a2V5", "c3RhcnQ=", wrap, fmt.CEK_AES_CTR, legacy)


def test_material_from_plaintext_shapes():
    assert material_from_plaintext(_h(), b"k" * 32, b"\0" * 16).counter0 == 0
    assert material_from_plaintext(_h(True, "rsa"), b"k" * 32, b"8").counter0 == 8
    for key, start, legacy in [(b"k" * 31, b"\0" * 16, False), (b"k" * 32, b"\0" * 15, False),
                               (b"k" * 32, b"8x", True), (b"k" * 32, b"", True),
                               (b"k" * 32, str(1 << 128).encode(), True)]:
        with pytest.raises(WrongKeyError):
            material_from_plaintext(_h(legacy, "rsa" if legacy else fmt.WRAP_RSA_PKCS1), key, start)


def test_matdesc_rule():
    assert matdesc_matches(None, {"a": "1"}) and matdesc_matches({"a": "1"}, None)
    assert matdesc_matches({"a": "1"}, {"a": "1"})
    assert not matdesc_matches({"a": "1"}, {"a": "2"})


# -- RSA wrap / unwrap --------------------------------------------------------------------
def test_wrap_new_shape_and_roundtrip(pair):
    assert isinstance(pair, MasterKey)
    seen = set()
    for _ in range(5):
        material, h = pair.wrap_new()
        assert h.wrap_alg == fmt.WRAP_RSA_PKCS1 and h.cek_alg == fmt.CEK_AES_CTR and not h.legacy
        assert h.matdesc is None
        assert material.iv[8:12] == b"\0\0\0\0"
        assert len(base64.b64decode(h.wrapped_key)) == 256
        assert pair.can_unwrap(h)
        assert pair.unwrap(h) == material
        seen.add((material.key, material.counter0))
    assert len(seen) == 5


def test_rewrap_existing_material(pair, other):
    material, _ = pair.wrap_new()
    h = other.wrap(material)
    assert h.wrap_alg == fmt.WRAP_RSA_PKCS1 and other.unwrap(h) == material
    with pytest.raises(WrongKeyError):
        KeyRing([pair]).open(h)


def test_oaep_write_and_legacy_alg_families(pair):
    oaep = RsaMasterKey(pair._private, write_alg=fmt.WRAP_RSA_OAEP)
    material, h = oaep.wrap_new()
    assert h.wrap_alg == fmt.WRAP_RSA_OAEP and pair.unwrap(h) == material
    assert not pair.can_unwrap(replace(h, wrap_alg=fmt.WRAP_KMS))
    assert not pair.can_unwrap(replace(h, wrap_alg="rsa"))  # "rsa" only exists in the legacy set
    with pytest.raises(WrongKeyError):
        pair.unwrap(replace(h, wrap_alg=fmt.WRAP_KMS))
    # PKCS#1 data presented as OAEP does not decrypt
    _, pk = pair.wrap_new()
    with pytest.raises(WrongKeyError):
        pair.unwrap(replace(pk, wrap_alg=fmt.WRAP_RSA_OAEP))


def test_public_only_wraps_but_cannot_unwrap(pair):
    pub = RsaMasterKey(public_key=pair._public)
    material, h = pub.wrap_new()
    assert not pub.can_unwrap(h)
    with pytest.raises(WrongKeyError, match="public"):
        pub.unwrap(h)
    with pytest.raises(WrongKeyError, match="public-only"):
        KeyRing([pub]).open(h, object_name="obj")
    assert KeyRing([pair]).open(h) == material


def test_wrong_key_of_same_size_is_wrong_key_error(pair, other):
    # PKCS#1 v1.5 decryption with the wrong key does not raise (implicit rejection): the length
    # checks must turn it into WrongKeyError.
    ring = KeyRing([other])
    for _ in range(3):
        _, headers = KeyRing([pair]).new_object()
        with pytest.raises(WrongKeyError, match="wrong key") as e:
            ring.open(headers, object_name="dir/file.txt")
        assert "dir/file.txt" in str(e.value) and other.name in str(e.value)


def test_wrong_key_of_other_size(pair):
    small = RsaMasterKey.from_pem_file(str(SDK / "rsa_test_private.pem"))
    _, headers = KeyRing([pair]).new_object()
    with pytest.raises(WrongKeyError):
        KeyRing([small]).open(headers)


def test_hand_built_headers_with_bad_base64(pair):
    _, h = pair.wrap_new()
    with pytest.raises(FormatError, match="base64"):
        KeyRing([pair]).open(replace(h, wrapped_start="***"))


def test_swapped_key_and_start_detected(pair):
    _, h = pair.wrap_new()
    swapped = replace(h, wrapped_key=h.wrapped_start, wrapped_start=h.wrapped_key)
    with pytest.raises(WrongKeyError, match="16 bytes, not 32"):
        KeyRing([pair]).open(swapped)


# -- KeyRing ------------------------------------------------------------------------------
def test_ring_tries_masters_in_turn_and_caches(pair, other):
    material, headers = KeyRing([pair]).new_object()
    ring = KeyRing([other, pair])
    assert ring.writer is other
    assert ring.open(headers) == material
    assert ring.unwrap_calls == 2
    assert ring.open(headers) == material
    assert ring.open(parse_headers(headers)) == material
    assert ring.unwrap_calls == 2 and ring.cache_hits == 2


def test_new_object_headers_and_cache(pair):
    ring = KeyRing([pair])
    m1, h1 = ring.new_object()
    assert set(h1) == {fmt.H_KEY, fmt.H_START, fmt.H_CEK_ALG, fmt.H_WRAP_ALG}
    m2, h2 = ring.new_object(data_size=1000, part_size=102400)
    assert h2[fmt.H_DATA_SIZE] == "1000" and h2[fmt.H_PART_SIZE] == "102400"
    assert m1.key != m2.key and h1[fmt.H_KEY] != h2[fmt.H_KEY]
    assert ring.open(h1) == m1 and ring.open(h2) == m2
    assert ring.unwrap_calls == 0  # what we wrote is cached
    with pytest.raises(ValueError):
        ring.new_object(part_size=100)


def test_matdesc_selection(pair, other):
    a = RsaMasterKey(other._private, matdesc={"who": "a"})
    b = RsaMasterKey(pair._private, matdesc={"who": "b"})
    material, headers = KeyRing([b]).new_object()
    assert headers[fmt.H_MATDESC] == '{"who":"b"}'
    ring = KeyRing([a, b])
    assert ring.open(headers) == material and ring.unwrap_calls == 1  # a skipped
    with pytest.raises(WrongKeyError, match="matdesc"):
        KeyRing([a]).open(headers)
    # a master without matdesc accepts any object; an object without one is open to all
    catch_all = RsaMasterKey(pair._private)
    assert KeyRing([catch_all]).open(headers) == material
    m2, h2 = KeyRing([catch_all]).new_object()
    assert fmt.H_MATDESC not in h2
    assert KeyRing([a, b]).open(h2) == m2
    # exact matdesc matches are tried before catch-alls
    ring2 = KeyRing([RsaMasterKey(other._private), b])
    assert ring2.open(headers) == material and ring2.unwrap_calls == 1


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_cache_ttl_and_lru(pair):
    clock = Clock()
    writer = KeyRing([pair])
    objs = [writer.new_object() for _ in range(3)]
    ring = KeyRing([pair], cache_entries=2, cache_ttl=10, clock=clock)
    for m, h in objs:
        assert ring.open(h) == m
    assert ring.unwrap_calls == 3 and ring.cache_size == 2
    ring.open(objs[2][1])
    ring.open(objs[1][1])
    assert ring.unwrap_calls == 3
    ring.open(objs[0][1])  # evicted (least recently used)
    assert ring.unwrap_calls == 4
    clock.now = 11
    ring.open(objs[0][1])  # expired
    assert ring.unwrap_calls == 5
    ring.clear_cache()
    ring.open(objs[0][1])
    assert ring.unwrap_calls == 6
    off = KeyRing([pair], cache_entries=0)
    off.open(objs[0][1])
    off.open(objs[0][1])
    assert off.unwrap_calls == 2 and off.cache_size == 0


def test_permanent_failures_are_remembered_briefly(pair, other):
    clock = Clock()
    _, headers = KeyRing([pair]).new_object()
    ring = KeyRing([other], negative_ttl=5, clock=clock)
    for _ in range(3):
        with pytest.raises(WrongKeyError, match="^obj: "):
            ring.open(headers, object_name="obj")
    with pytest.raises(WrongKeyError, match="^copy-of-obj: wrong key"):  # same headers, other name
        ring.open(headers, object_name="copy-of-obj")
    assert ring.unwrap_calls == 1
    clock.now = 6
    with pytest.raises(WrongKeyError):
        ring.open(headers)
    assert ring.unwrap_calls == 2
    flaky = KeyRing([Broken(KeyUnavailableError("KMS down"))], clock=clock)
    for _ in range(2):
        with pytest.raises(KeyUnavailableError):
            flaky.open(headers)
    assert flaky.unwrap_calls == 2  # transient failures are always retried


class SlowMaster:
    """A MasterKey standing in for a remote unwrapper: blocks until released."""

    def __init__(self, inner: RsaMasterKey, fail: Exception | None = None):
        self.inner = inner
        self.name = "slow:" + inner.name
        self.wrap_alg = inner.wrap_alg
        self.matdesc = None
        self.fail = fail
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def can_unwrap(self, h):
        return self.inner.can_unwrap(h)

    def unwrap(self, h):
        self.calls += 1
        self.entered.set()
        assert self.release.wait(60)
        if self.fail is not None:
            raise self.fail
        return self.inner.unwrap(h)

    def wrap_new(self):
        return self.inner.wrap_new()


def _waiting_in_open(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return "open" in names and "unwrap" not in names and names[0] == "wait"


def _run_concurrently(ring, headers, n=8):
    results, errors = [], []

    def worker():
        try:
            results.append(ring.open(headers, object_name="shared"))
        except Exception as exc:  # collected for the assertions
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results, errors


def _wait_until(pred, timeout=30.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if pred():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


def _release_after_followers_park(slow, threads) -> None:
    """Let the leader's unwrap finish only once every other thread waits for its result."""
    try:
        assert slow.entered.wait(30)
        _wait_until(lambda: sum(_waiting_in_open(t) for t in threads) == len(threads) - 1)
    finally:
        slow.release.set()
    for t in threads:
        t.join(30)


def test_single_flight_for_concurrent_opens(pair):
    material, headers = KeyRing([pair]).new_object()
    slow = SlowMaster(pair)
    ring = KeyRing([slow])
    threads, results, errors = _run_concurrently(ring, headers)
    _release_after_followers_park(slow, threads)
    assert not errors and len(results) == 8 and all(r == material for r in results)
    assert slow.calls == 1 and ring.unwrap_calls == 1


def test_single_flight_shares_failure_and_does_not_cache_it(pair):
    _, headers = KeyRing([pair]).new_object()
    slow = SlowMaster(pair, fail=KeyUnavailableError("KMS throttled"))
    ring = KeyRing([slow])
    threads, results, errors = _run_concurrently(ring, headers, n=4)
    _release_after_followers_park(slow, threads)
    assert not results and len(errors) == 4
    assert all(isinstance(e, KeyUnavailableError) and "throttled" in str(e) for e in errors)
    assert slow.calls == 1
    slow.fail = None
    ring.open(headers)
    assert slow.calls == 2


class Broken:
    name = "broken"
    wrap_alg = fmt.WRAP_RSA_PKCS1
    matdesc = None

    def __init__(self, exc):
        self.exc = exc

    def can_unwrap(self, h):
        return True

    def unwrap(self, h):
        raise self.exc

    def wrap_new(self):  # pragma: no cover
        raise NotImplementedError


def test_error_precedence_and_plugin_crash(pair):
    material, headers = KeyRing([pair]).new_object()
    with pytest.raises(KeyUnavailableError, match="RuntimeError"):
        KeyRing([Broken(RuntimeError("boom"))]).open(headers)
    with pytest.raises(KeyUnavailableError):
        KeyRing([Broken(WrongKeyError("x")), Broken(KeyUnavailableError("down"))]).open(headers)
    with pytest.raises(FormatError):
        KeyRing([Broken(FormatError("bad"))]).open(headers)
    # a failing master before the right one does not matter
    assert KeyRing([Broken(KeyUnavailableError("down")), pair]).open(headers) == material


def test_open_rejects_plain_and_malformed(pair):
    ring = KeyRing([pair])
    with pytest.raises(FormatError, match="not client-side encrypted"):
        ring.open({"content-type": "x"}, object_name="p")
    with pytest.raises(FormatError, match="^q: "):
        ring.open({fmt.H_KEY: "AAAA"}, object_name="q")
    with pytest.raises(WrongKeyError, match="no configured master key"):
        ring.open({fmt.H_KEY: "AAAA", fmt.H_START: "AAAA", fmt.H_CEK_ALG: fmt.CEK_AES_CTR,
                   fmt.H_WRAP_ALG: "FUTURE/WRAP"})
    with pytest.raises(ValueError):
        KeyRing([])


def test_implausible_iv_is_tried_last(pair, other):
    """A result whose IV[8..11] is non-zero (what a PKCS#1 wrong-key "success" looks like)
    yields to a plausible one from a later master, but is still used when it is the only one."""
    iv = bytes(range(16))  # IV[8..11] != 0
    h = CryptoHeaders(
        base64.b64encode(pair._public.encrypt(b"K" * 32, _pkcs1())).decode(),
        base64.b64encode(pair._public.encrypt(iv, _pkcs1())).decode(),
        fmt.WRAP_RSA_PKCS1, fmt.CEK_AES_CTR, False)
    good = ContentMaterial(b"G" * 32, 7)

    class Fixed(Broken):
        def unwrap(self, h):
            return good

    ring = KeyRing([pair, Fixed(None)])
    assert ring.open(h) == good and ring.unwrap_calls == 2
    assert KeyRing([pair]).open(h).iv == iv


def _pkcs1():
    from cryptography.hazmat.primitives.asymmetric import padding
    return padding.PKCS1v15()
