"""Signals at every stage of shutdown end in a clean exit with the journal intact (issue 13 item 8)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.mount.conftest import _is_mounted, eventually

pytestmark = pytest.mark.mount


def _pending(m, emulator, n: int = 3) -> dict[str, bytes]:
    """Files written and closed (acknowledged, journaled; the write-back delay is long) whose
    uploads then cannot finish: OSS answers 503 from now on."""
    files = {f"p{i}.txt": f"pending {i}".encode() * 100 for i in range(n)}
    for name, data in files.items():
        (m.path / name).write_bytes(data)
    assert len(m.journal_files()) >= n
    emulator.set_faults(fail_rate=1.0)
    return files


def _exited_cleanly(m, code: int | None = None) -> None:
    rc = m.proc.wait(timeout=60)
    assert rc >= 0, f"killed by signal {-rc}"               # SIGSEGV was -11
    if code is not None:
        assert rc == code
    assert "unmounted" in m.log()
    m.proc = None


def _uploaded_by_next_mount(m, emulator, crypto_bucket, files: dict[str, bytes]) -> None:
    """The journal kept every pending file; the next mount (OSS back) uploads them all."""
    assert len(m.journal_files()) >= len(files)
    emulator.set_faults(fail_rate=0.0)
    m.start()
    m.wait_uploaded(timeout=60)
    for name, data in files.items():
        assert crypto_bucket.get_object(name).read() == data
    assert not m.journal_files()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_while_draining_after_fusermount_u(make_mount, emulator, crypto_bucket, signum):
    """fusermount3 -u while uploads still drain, then a signal: no crash; the uploads stay
    journaled and go up at the next mount."""
    m = make_mount("drain", extra=["--write-back", "60"])
    files = _pending(m, emulator)
    subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
    assert m.proc.poll() is None                            # still draining (OSS answers 503)
    m.proc.send_signal(signum)
    _exited_cleanly(m, 0)
    _uploaded_by_next_mount(m, emulator, crypto_bucket, files)


def test_signals_while_mounted_then_while_draining(make_mount, emulator, crypto_bucket):
    """First SIGTERM unmounts and drains; a second one stops waiting; a third one during the
    final cleanup changes nothing. Clean exit, journal intact."""
    m = make_mount("twice", extra=["--write-back", "60"])
    files = _pending(m, emulator)
    m.proc.send_signal(signal.SIGTERM)
    eventually(lambda: "signal received: unmounting" in m.log(), timeout=30)
    m.proc.send_signal(signal.SIGTERM)
    m.proc.send_signal(signal.SIGTERM)
    _exited_cleanly(m)
    _uploaded_by_next_mount(m, emulator, crypto_bucket, files)


def test_a_stream_of_signals_until_the_process_ends_never_kills_it(make_mount, emulator,
                                                                    crypto_bucket):
    """A supervisor that keeps sending SIGTERM (or a user pressing Ctrl-C repeatedly): every
    stage of shutdown must take it, including the moment the signal receiver closes (trio
    redelivers a signal it had not handed out yet to the handler it found at start: the
    default one would kill the process with its mount and journal half cleaned up)."""
    m = make_mount("stream", extra=["--write-back", "60"])
    files = _pending(m, emulator)
    m.proc.send_signal(signal.SIGTERM)
    eventually(lambda: "signal received: unmounting" in m.log(), timeout=30)
    deadline = time.monotonic() + 30
    while m.proc.poll() is None and time.monotonic() < deadline:
        m.proc.send_signal(signal.SIGTERM)
        time.sleep(0.0005)
    _exited_cleanly(m)
    _uploaded_by_next_mount(m, emulator, crypto_bucket, files)


def test_sigterm_the_moment_the_mount_appears_unmounts_cleanly(make_mount):
    """A supervisor that stops the mount as soon as it sees it (or ``ossencfs mount`` followed
    at once by a kill): the signal came before the mount had started listening for it, and
    the default action killed the process with the file system still mounted (a dead FUSE
    mount: "Transport endpoint is not connected") and its pid and state files left behind."""
    for attempt in range(3):
        m = make_mount(f"early{attempt}", start=False)
        with open(m.log_path, "ab") as log:
            m.proc = subprocess.Popen(m.argv(), stdout=log, stderr=log, env=m.env)
        deadline = time.monotonic() + 30
        while not _is_mounted(str(m.path)):                    # no sleep: the first moment
            assert m.proc.poll() is None and time.monotonic() < deadline, m.log()
        m.proc.send_signal(signal.SIGTERM)
        _exited_cleanly(m, 0)
        assert not _is_mounted(str(m.path))
        assert not os.path.exists(m.state_path), "state file left behind"


def test_sigterm_unmounts_a_mount_point_named_through_a_symlink(make_mount, tmp_path):
    """The mount point given as a symlink: the kernel records the resolved path, so a check
    by the given name must resolve it too, or a SIGTERM while mounted would be taken for one
    after an unmount (only "stop waiting") and leave the file system mounted."""
    m = make_mount("real", start=False)
    real = m.path
    link = tmp_path / "via-link"
    link.symlink_to(real)
    m.path = link
    argv = m.argv()
    m.path = real
    with open(m.log_path, "ab") as log:
        m.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=m.env)
    eventually(lambda: _is_mounted(str(real)), timeout=30)
    (link / "f.txt").write_bytes(b"data")
    m.proc.send_signal(signal.SIGTERM)
    eventually(lambda: "signal received: unmounting" in m.log(), timeout=30)
    _exited_cleanly(m, 0)
    assert not _is_mounted(str(real))
