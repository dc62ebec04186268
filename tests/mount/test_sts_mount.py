"""Mounts on expiring STS credentials from the emulator's credentials URI / ECS metadata
stand-in: renewals while serving (OSS and KMS), a cp across a renewal, a dead credential
endpoint. The mount gets no AccessKey of its own: OSS_* variables are removed."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import KMS_REGION, sts_emulator_at

from .conftest import Mounted


@pytest.fixture
def emulator(request: pytest.FixtureRequest, tmp_path: Path, no_proxy_env: None) -> Iterator[object]:
    """The shared fixture's emulator, issuing STS credentials (lifetime from the sts_lifetime
    marker, default 30 s); the mount fixtures use this one."""
    mark = request.node.get_closest_marker("sts_lifetime")
    yield from sts_emulator_at(tmp_path / "oss", mark.args[0] if mark else 30)


def _sts_mount(make_mount, emulator, *, extra: list[str] | None = None,
               keys: list[str] | None = None, env: dict[str, str] | None = None) -> Mounted:
    m = make_mount(start=False, keys=keys,
                   extra=(extra if extra is not None
                          else ["--credentials-uri", emulator.credential_endpoints.uri]))
    for name in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"):
        m.env.pop(name, None)
    m.env.update(env or {})
    m.start()
    return m


def _wait_issued(emulator, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while emulator.sts.issued < count:
        assert time.monotonic() < deadline, f"only {emulator.sts.issued} credentials issued"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.sts_lifetime(30)
def test_reads_and_writes_across_five_renewals_with_kms(make_mount, emulator) -> None:
    """About 2.5 minutes on 30-second credentials: every write (GenerateDataKey, PUT) and read
    succeeds; the files written before the renewals decrypt afterwards (KMS Decrypt with
    renewed credentials, in a fresh mount)."""
    cmk = emulator.kms_service.create_key()
    keys = ["--kms-key", cmk, "--kms-region", KMS_REGION, "--kms-endpoint", emulator.kms_endpoint]
    m = _sts_mount(make_mount, emulator, keys=keys)
    start_issued = emulator.sts.issued
    seconds = float(os.environ.get("OSSENCFS_STS_SECONDS", "140"))
    deadline = time.monotonic() + seconds
    written: dict[str, bytes] = {}
    failures: list[str] = []
    i = 0
    while time.monotonic() < deadline or emulator.sts.issued - start_issued < 5:
        assert time.monotonic() < deadline + 120, "fewer than five renewals"
        name, data = f"f{i:04d}", os.urandom(1000 + i)
        try:
            (m.path / name).write_bytes(data)
            written[name] = data
            for old in list(written)[-5:]:
                if (m.path / old).read_bytes() != written[old]:
                    failures.append(f"{old}: wrong content")
        except OSError as exc:
            failures.append(f"{name}: {exc}")
        i += 1
        time.sleep(0.5)
    assert failures == []
    assert emulator.sts.issued - start_issued >= 5
    m.stop()
    m.start()                              # empty key cache: every file needs KMS Decrypt
    for name, data in written.items():
        assert (m.path / name).read_bytes() == data


@pytest.mark.slow
@pytest.mark.sts_lifetime(8)
def test_cp_of_a_large_file_spans_a_renewal(make_mount, emulator, tmp_path: Path) -> None:
    m = _sts_mount(make_mount, emulator)
    src = tmp_path / "big"
    src.write_bytes(os.urandom(6 << 20))
    before = emulator.sts.issued
    emulator.set_faults(bandwidth_mbps=0.25)         # >= 12 s for 6 MiB on up to 16 connections
    m.run("cp", str(src), "big", timeout=300)
    emulator.set_faults(bandwidth_mbps=0.0)
    assert emulator.sts.issued > before
    m.run("cmp", str(src), "big")


@pytest.mark.slow
@pytest.mark.sts_lifetime(20)
def test_dead_credential_endpoint_one_log_line_no_data_loss(make_mount, emulator) -> None:
    """The endpoint is down across the renewal point (15 s after issue) but back before the
    credentials expire (20 s): writes go on, one line reports the failed renewal."""
    m = _sts_mount(make_mount, emulator)
    first = emulator.sts.issued
    _wait_issued(emulator, first + 1, 60)             # just renewed: 20 s of validity ahead
    emulator.credential_endpoints.stop()
    down_until = time.monotonic() + 17
    written: dict[str, bytes] = {}
    i = 0
    while time.monotonic() < down_until + 3:
        if emulator.credential_endpoints._server is None and time.monotonic() >= down_until:
            emulator.credential_endpoints.start()
        data = os.urandom(2000)
        (m.path / f"d{i}").write_bytes(data)
        written[f"d{i}"] = data
        i += 1
        time.sleep(0.3)
    m.stop()
    m.start()
    for name, data in written.items():
        assert (m.path / name).read_bytes() == data
    failed = re.findall(r"renewing from .* failed", m.log())
    assert len(failed) == 1, m.log()
    assert "AccessKeySecret" not in m.log() and "STS." not in m.log()


@pytest.mark.sts_lifetime(6)
def test_mount_on_the_ecs_ram_role(make_mount, emulator) -> None:
    """Detected RAM role (no --ram-role), credentials from the metadata stand-in; the guard
    variable is dropped for this mount only, OSSENCFS_ECS_METADATA_ENDPOINT points it here."""
    m = make_mount(start=False)
    for name in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ECS_METADATA_DISABLED"):
        m.env.pop(name, None)
    m.env["OSSENCFS_ECS_METADATA_ENDPOINT"] = emulator.credential_endpoints.metadata_host
    m.start()
    (m.path / "a").write_bytes(b"ecs")
    time.sleep(7)                                      # past the first credentials' expiry
    (m.path / "b").write_bytes(b"role")
    assert (m.path / "a").read_bytes() == b"ecs"
    assert emulator.credential_endpoints.requests["ecs"] >= 2
    assert emulator.credential_endpoints.requests["uri"] == 0
