"""Shared fixtures: the local OSS (and KMS) emulator over real HTTP, keys, an oss2 oracle,
and a way to run the real ``ossencfs`` command line against them.

Everything listens on 127.0.0.1 and stops by itself at the end of the test.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SDK_FIXTURES = FIXTURES / "sdk"

AK, SK = "AK", "SK"
BUCKET = "test-bucket"
KMS_REGION = "local-1"
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


HAVE_KMS = _have("ossencfs.emulator.kms") and _have("ossencfs.kms")


#: the ECS instance metadata service; no test may ever reach it (or anything off this machine)
METADATA_ADDRESS = "100.100.100.200"


@pytest.fixture(autouse=True, scope="session")
def _never_the_metadata_service() -> Iterator[None]:
    """Test-wide guard: child processes inherit ALIBABA_CLOUD_ECS_METADATA_DISABLED=true (so
    the credential chain never probes the metadata service; tests of the ECS RAM role point it
    at a local stand-in with OSSENCFS_ECS_METADATA_ENDPOINT), and in this process a connection
    to the metadata address fails the test."""
    import socket
    os.environ["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"
    real_connect, real_create = socket.socket.connect, socket.create_connection

    def _check(address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host == METADATA_ADDRESS:
            raise AssertionError(f"a test tried to reach {METADATA_ADDRESS}")

    def connect(self: socket.socket, address: object) -> None:
        _check(address)
        return real_connect(self, address)

    def create_connection(address: object, *args: object, **kw: object) -> socket.socket:
        _check(address)
        return real_create(address, *args, **kw)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.create_connection = create_connection  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.create_connection = real_create  # type: ignore[assignment]


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback servers must not be reached through a proxy (aliyunsdkcore ignores NO_PROXY)."""
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emulator(tmp_path: Path, no_proxy_env: None) -> Iterator[object]:
    """A fresh local OSS (with its KMS when that module exists) holding bucket ``test-bucket``."""
    yield from running_emulator(tmp_path / "oss", **({"kms_port": 0} if HAVE_KMS else {}))


def running_emulator(path: Path, **kw: object) -> Iterator[object]:
    """An emulator at ``path`` (AK/SK, bucket ``test-bucket``; ``kw`` to ``Emulator``),
    started, yielded, stopped: the generator behind every emulator fixture here."""
    from ossencfs.emulator.server import Emulator
    emu = Emulator(str(path), credentials={AK: SK}, buckets=[BUCKET], **kw)  # type: ignore[arg-type]
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def sts_emulator_at(path: Path, lifetime: float) -> Iterator[object]:
    """An emulator (OSS + KMS, bucket ``test-bucket``) that also issues STS credentials of
    ``lifetime`` seconds and serves them on 127.0.0.1 (credentials URI, ECS metadata paths);
    the generator behind the STS tests' fixtures."""
    yield from running_emulator(path, kms_port=0, sts_lifetime=lifetime, credentials_port=0)


@pytest.fixture
def esdk_emulator(tmp_path: Path, no_proxy_env: None) -> Iterator[object]:
    """Like ``emulator``, with the Encryption SDK vectors' CMK (tests/fixtures/esdk/kms-keys)
    loaded into its KMS before it starts, as the vectors' README.md says."""
    if not HAVE_KMS:
        pytest.skip("KMS modules not available")
    from tests.esdk_build import install_key
    install_key(tmp_path / "oss" / "kms")
    yield from running_emulator(tmp_path / "oss", kms_port=0)


@pytest.fixture
def kms_server(emulator: object, tmp_path: Path) -> Iterator[object]:
    """The local KMS: the emulator's own when it runs one, else a standalone KmsServer."""
    if not HAVE_KMS:
        pytest.skip("KMS modules not available")
    own = getattr(emulator, "kms", None) or getattr(emulator, "kms_server", None)
    if own is not None and hasattr(own, "create_key"):
        yield own
        return
    from ossencfs.emulator.kms import KmsServer
    with KmsServer(str(tmp_path / "kms"), credentials={AK: SK}) as server:
        yield server


@pytest.fixture
def oss2_bucket(emulator: object):
    """A plain oss2.Bucket on the emulator: the oracle for what is really stored."""
    import oss2
    return oss2.Bucket(oss2.Auth(AK, SK), emulator.endpoint, BUCKET)


@pytest.fixture
def rsa_key_path() -> str:
    """The SDK test suite's RSA key pair (private PEM), as used by the Go vector."""
    return str(SDK_FIXTURES / "rsa_test_private.pem")


@pytest.fixture
def rsa_public_key_path() -> str:
    return str(SDK_FIXTURES / "rsa_test_public.pem")


@pytest.fixture(scope="session")
def second_rsa_key_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second, freshly generated 2048-bit RSA private key (PKCS#8 PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "second_private.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def cli_env(no_proxy_env: None) -> dict[str, str]:
    """Environment for a child ``ossencfs``: emulator credentials, no proxies."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env.update({"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SK, "PYTHONPATH": str(ROOT)})
    env.pop("OSS_SESSION_TOKEN", None)
    return env


@pytest.fixture
def run_cli(emulator: object, cli_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m ossencfs ARGS --endpoint <emulator>`` as a real child process.

    Returns the CompletedProcess (stdout/stderr as bytes); ``input`` feeds stdin.
    """
    def run(*args: str, input: bytes | None = None, endpoint: str | None = None,
            timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "ossencfs", *args]
        if args and args[0] in ("cp", "cat", "verify", "rotate", "migrate"):
            argv += ["--endpoint", endpoint or emulator.endpoint]
        return subprocess.run(argv, input=input if input is not None else b"",
                              capture_output=True, timeout=timeout, env=env or cli_env,
                              cwd=str(ROOT))
    return run


def reupload_with_meta(bucket, key: str, headers: dict[str, str]) -> None:
    """Replace an object's metadata the only way real OSS allows for an encrypted one: a new
    PutObject of its stored bytes with ``headers`` (CopyObject may not change the metadata
    of a client-side-encrypted object, SPEC D.13). ``bucket`` is a plain ``oss2.Bucket``."""
    body = bucket.get_object(key).read()
    bucket.put_object(key, body, headers=headers)


@pytest.fixture
def crypto_bucket(emulator: object):
    """oss2's own CSE client with the SDK test key pair: the oracle for the object format."""
    import oss2
    from oss2.crypto import RsaProvider
    pair = {"private_key": (SDK_FIXTURES / "rsa_test_private.pem").read_text(),
            "public_key": (SDK_FIXTURES / "rsa_test_public.pem").read_text()}
    return oss2.CryptoBucket(oss2.Auth(AK, SK), emulator.endpoint, BUCKET,
                             crypto_provider=RsaProvider(key_pair=pair))
