"""CredentialSource (renewal ahead of expiry, failure handling) with a settable clock, and the
local parts of the chain: which source wins, ossfs passwd files, --config files."""
from __future__ import annotations

import argparse
import logging
import os

import pytest

from ossencfs.cli.configfile import apply_config, read_passwd_file
from ossencfs.credential_chain import CredentialOptions, build_source
from ossencfs.credentials import CredentialSource, Credentials
from ossencfs.errors import CredentialsError, OssEncError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Issuer:
    """Hands out numbered 100-second credentials; ``down`` makes it fail like a dead endpoint."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.n, self.down = clock, 0, False

    def __call__(self) -> Credentials:
        if self.down:
            raise ConnectionError("connection refused result: {\"AccessKeySecret\": \"leak\"}")
        self.n += 1
        return Credentials(f"STS.{self.n}", f"secret{self.n}", f"token{self.n}",
                           self.clock.now + 100)


def test_renewed_ahead_of_expiry_and_failures_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    issuer = Issuer(clock)
    src = CredentialSource(issuer, "test", clock=clock)
    first = src.get()
    clock.now += 70                       # before the last quarter: same credentials
    assert src.get() is first
    clock.now += 6                        # within 25 s of expiry: renewed
    second = src.get()
    assert second.access_key_id == "STS.2" and src.renewals == 1
    issuer.down = True
    clock.now += 80                       # renewal due, the source is down
    with caplog.at_level(logging.INFO, logger="ossencfs.credentials"):
        for _ in range(5):
            assert src.get() is second    # still valid: kept in use
            clock.now += 2
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "leak" not in warnings[0].getMessage()
    clock.now += 20                       # expired now, and still no source
    with pytest.raises(CredentialsError) as exc:
        src.get()
    assert "leak" not in str(exc.value)
    issuer.down = False
    assert src.get().access_key_id == "STS.3"


def test_renew_after_rejection_fetches_once() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    src = CredentialSource(issuer, "test", clock=clock)
    used = src.get()
    assert src.renew(used) is True and src.current != used
    assert src.renew(used) is True and issuer.n == 2      # already renewed by then


def test_repr_hides_the_secret() -> None:
    c = Credentials("LTAI5tExampleKeyId", "very-secret", "token")
    assert "very-secret" not in repr(c) and "ExampleKeyId" not in repr(c)


def test_explicit_options_win_and_env_order(tmp_path) -> None:
    env = {"OSS_ACCESS_KEY_ID": "oss-ak", "OSS_ACCESS_KEY_SECRET": "oss-sk",
           "ALIBABA_CLOUD_ACCESS_KEY_ID": "ali-ak", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "ali-sk",
           "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}
    assert build_source(CredentialOptions("cli-ak", "cli-sk"), env).get().access_key_id == "cli-ak"
    assert build_source(CredentialOptions(), env).get().access_key_id == "oss-ak"
    del env["OSS_ACCESS_KEY_ID"], env["OSS_ACCESS_KEY_SECRET"]
    assert build_source(CredentialOptions(), env).get().access_key_id == "ali-ak"


def test_profile_file_and_nothing_found(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}
    with pytest.raises(CredentialsError, match="no OSS credentials found"):
        build_source(CredentialOptions(), env)
    (tmp_path / ".alibabacloud").mkdir()
    (tmp_path / ".alibabacloud" / "credentials").write_text(
        "[default]\nenable = true\ntype = access_key\naccess_key_id = prof-ak\n"
        "access_key_secret = prof-sk\n\n[other]\nenable = true\ntype = access_key\n"
        "access_key_id = other-ak\naccess_key_secret = other-sk\n")
    assert build_source(CredentialOptions(), env).get().access_key_id == "prof-ak"
    assert build_source(CredentialOptions(profile="other"), env).get().access_key_id == "other-ak"


def test_passwd_file_rules(tmp_path) -> None:
    f = tmp_path / "passwd-ossfs"
    f.write_text("# comment\n\nAKDEF:SKDEF\nmy-bucket:AKB:SKB\n")
    f.chmod(0o600)
    assert read_passwd_file(str(f), "my-bucket") == ("AKB", "SKB")
    assert read_passwd_file(str(f), "other") == ("AKDEF", "SKDEF")
    f.chmod(0o640)
    with pytest.raises(OssEncError, match="group permissions"):
        read_passwd_file(str(f), "my-bucket")
    f.chmod(0o604)
    with pytest.raises(OssEncError, match="others permissions"):
        read_passwd_file(str(f), "my-bucket")
    f.chmod(0o600)
    f.write_text("only-one-field\n")
    with pytest.raises(OssEncError, match="line 1"):
        read_passwd_file(str(f), "b")


def test_config_fills_what_the_command_line_left(tmp_path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('bucket = "b1"\nprefix = "p"\nendpoint = "http://127.0.0.1:1"\n'
                 'access_key_id = "AK"\naccess_key_secret = "SK"\ncache_size = "2G"\n'
                 'options = ["allow_other"]\n'
                 '[[key]]\nrsa = "/k.pem"\nmatdesc = \'{"name": "k1"}\'\n')
    f.chmod(0o644)
    defaults = {"url": None, "endpoint": None, "access_key_id": None,
                "access_key_secret": None, "cache_size": "1G"}
    args = argparse.Namespace(config=str(f), url=None, endpoint="http://given", options=None,
                              access_key_id=None, access_key_secret=None, cache_size="1G",
                              key_order=[], rsa_key=[], kms_key=[])
    with pytest.raises(OssEncError, match="others permissions"):
        apply_config(args, defaults)                  # a secret in a world-readable file
    f.chmod(0o600)
    apply_config(args, defaults)
    assert (args.url, args.endpoint, args.cache_size) == ("oss://b1/p", "http://given", "2G")
    assert args.key_order == [("rsa_key", "/k.pem", '{"name": "k1"}')]
    assert args.options == ["allow_other"] and args.access_key_secret == "SK"
    assert os.stat(f).st_mode & 0o077 == 0
