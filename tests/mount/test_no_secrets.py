"""No key material, credentials, unwrapped data keys or plaintext anywhere they could leak
(issue 13, "what must hold"): the mount's log at the most verbose level (-vv), its state file,
its journal and cache, and ``ps`` output, while uploads are pending and after."""
from __future__ import annotations

import base64
import dataclasses
import os
import subprocess

import oss2
import pytest

from ossencfs.emulator.kms import KmsServer
from ossencfs.emulator.server import Emulator
from ossencfs.envelope.format import parse_headers
from ossencfs.kms import KmsMasterKey
from tests.conftest import BUCKET, KMS_REGION, SDK_FIXTURES
from tests.mount.conftest import Mounted, _fuse_ok, _make, eventually

pytestmark = pytest.mark.mount


@dataclasses.dataclass
class _VerboseMounted(Mounted):
    def argv(self, *, foreground: bool = True) -> list[str]:
        argv = super().argv(foreground=foreground)
        return argv[:3] + ["-vv"] + argv[3:]             # python -m ossencfs -vv mount ...


def _tree_text(root: str) -> bytes:
    out = b""
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    out += name.encode() + b"\n" + f.read() + b"\n"
            except OSError:
                pass
    return out


def test_no_secrets_in_logs_state_journal_cache_or_ps(tmp_path, cli_env):
    if not _fuse_ok():
        pytest.skip("needs root, /dev/fuse and fusermount3")
    ak, secret = "LTAI" + os.urandom(8).hex(), "SECRET" + os.urandom(12).hex()
    marker = b"PLAINTEXT-" + os.urandom(8).hex().encode()
    pem = (SDK_FIXTURES / "rsa_test_private.pem").read_text()
    pem_line = [line for line in pem.splitlines() if line and "-----" not in line][3]
    with Emulator(str(tmp_path / "oss"), credentials={ak: secret}, buckets=[BUCKET], fsync=False) as emu, \
            KmsServer(str(tmp_path / "kms"), credentials={ak: secret}) as kms:
        cmk = kms.create_key()
        base = _make(tmp_path, emu, cli_env, "leak", ["--write-back", "30"], "",
                     ["--kms-key", cmk, "--kms-region", KMS_REGION, "--kms-endpoint", kms.endpoint,
                      "--rsa-key", str(SDK_FIXTURES / "rsa_test_private.pem")])
        m = _VerboseMounted(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
        m.env.update(OSS_ACCESS_KEY_ID=ak, OSS_ACCESS_KEY_SECRET=secret)
        m.start()
        try:
            (m.path / "done.txt").write_bytes(marker * 100)
            (m.path / "pending.txt").write_bytes(marker * 50)     # journaled for 30 s
            eventually(lambda: bool(m.journal_files()), timeout=30)
            assert (m.path / "done.txt").read_bytes() == marker * 100
            ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, check=True).stdout
            state = open(m.state_path, "rb").read()
            journal = _tree_text(str(m.base_dir() / "staging"))
        finally:
            m.stop()                                              # uploads what is pending
        log = m.log_path.read_bytes()
        assert b"DEBUG" in log                                    # really the most verbose level
        bucket = oss2.Bucket(oss2.Auth(ak, secret), emu.endpoint, BUCKET)
        headers = bucket.head_object("pending.txt").headers
        key = KmsMasterKey(cmk, KMS_REGION, ak, secret, endpoint=kms.endpoint).unwrap(parse_headers(headers)).key
        cache = _tree_text(str(m.cache_dir))
        secrets = {"secret": secret.encode(), "pem": pem_line.encode(), "marker": marker,
                   "data key b64": base64.b64encode(key), "data key hex": key.hex().encode(), "data key": key}
        for where, text in (("log", log), ("state", state), ("journal", journal), ("cache", cache),
                            ("ps", ps)):
            for what, value in secrets.items():
                assert value not in text, f"{what} found in {where}"
