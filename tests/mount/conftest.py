"""Real FUSE mounts for the mount tests.

``mount`` starts the emulator (shared ``emulator`` fixture), runs ``python -m ossencfs mount
... -f`` in a child process (a crash there cannot hang pytest), waits until the mount point is
mounted, and always tears down: ``fusermount3 -u`` (lazy as a fallback), then terminate/kill
the child. Tools are driven through ``run`` with a timeout, for the same reason.

The log guard (after s3ql's test suite, which fails a test whose mount log shows an
exception): a test fails when a mount log holds an ``unexpected`` exception (what
``fs.operations`` logs before answering EIO for an exception it has no errno for) or a
``Traceback``, even if every assertion held: such an error is an EIO somebody else gets.
A test that provokes one on purpose names it with ``@pytest.mark.log_allow(regex, ...,
reason="...")``; each regex is searched in the log record (its first line and traceback).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import AK, BUCKET, ROOT, SDK_FIXTURES, SK

PART_SIZE = 102400            # smallest part size oss2 accepts: multipart stays fast in tests
MULTIPART_THRESHOLD = 256 * 1024


#: the two write modes (``--write-back``, README): upload at close, or close acknowledged once
#: journaled and the upload a moment later. A module marked ``write_modes`` runs every test
#: that makes a mount once per mode (as rclone's vfstest runs one suite per cache mode);
#: ``Mounted.settle`` waits for the uploads before a test looks into the bucket.
WRITE_MODES: dict[str, list[str]] = {"close": [], "write-back": ["--write-back", "0.2"]}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "log_allow(*regex, reason): mount log records matching "
                            "a regex do not fail the test (the log guard); say why in reason")
    config.addinivalue_line("markers", "write_modes(*modes): run the module's mount tests in "
                            "each write mode (default: all of WRITE_MODES)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    mark = metafunc.definition.get_closest_marker("write_modes")
    if mark is not None and "make_mount" in metafunc.fixturenames:
        metafunc.parametrize("write_mode", list(mark.args or WRITE_MODES))


@pytest.fixture
def write_mode() -> str:
    """The write mode of the mounts a test makes (parametrized by ``write_modes``)."""
    return "close"


_BAD_LOG = re.compile(r"\bunexpected\b|^Traceback \(most recent call last\)", re.MULTILINE)


def log_records(text: str) -> list[str]:
    """A mount log cut into records: a line of ours (``ossencfs: LEVEL: ...``) with the lines
    after it that are not (a traceback, a warning printed by a library)."""
    records: list[str] = []
    for line in text.splitlines():
        if line.startswith("ossencfs: ") or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


def log_problems(text: str, allowed: list[str]) -> list[str]:
    """Records of a mount log that show an unexpected exception, less the allowed ones."""
    return [r for r in log_records(text)
            if _BAD_LOG.search(r) and not any(re.search(a, r) for a in allowed)]


def _allowed(request: pytest.FixtureRequest) -> list[str]:
    allowed: list[str] = []
    for mark in request.node.iter_markers("log_allow"):
        if not mark.kwargs.get("reason"):
            raise pytest.UsageError(f"{request.node.nodeid}: log_allow needs a reason")
        allowed += list(mark.args)
    return allowed


def eventually(check, timeout: float = 15.0) -> None:
    """Wait until ``check()`` is true: changes made beside the mount show after the
    documented cache lifetime (2 x attr_timeout), not at once."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.1)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount -o size=) at ``path`` (made here), lazily unmounted after;
    skips the test where tmpfs cannot be mounted. A fixture using it must be requested
    before ``make_mount``, so that it is torn down after the mount."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode(errors='replace')}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_disk(path: Path) -> None:
    """Another process takes every free byte of the file system: writes ``path`` until
    ENOSPC (the caller removes it)."""
    # unbuffered: a buffered file's close() would retry the unwritten tail and raise ENOSPC
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"\xff" * (64 * 1024))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def _fuse_ok() -> bool:
    return os.path.exists("/dev/fuse") and os.geteuid() == 0 and \
        subprocess.run(["which", "fusermount3"], capture_output=True).returncode == 0


def _is_mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@dataclass
class Mounted:
    path: Path
    emulator: object
    cache_dir: Path
    log_path: Path
    env: dict[str, str]
    extra: list[str] = field(default_factory=list)
    prefix: str = ""
    keys: list[str] | None = None
    proc: subprocess.Popen | None = None

    @property
    def data_dir(self) -> str:
        return self.emulator.data_dir

    def argv(self, *, foreground: bool = True) -> list[str]:
        url = f"oss://{BUCKET}/{self.prefix}" if self.prefix else f"oss://{BUCKET}"
        return [sys.executable, "-m", "ossencfs", "mount", url, str(self.path),
                "--endpoint", self.emulator.endpoint,
                *(self.keys if self.keys is not None
                  else ["--rsa-key", str(SDK_FIXTURES / "rsa_test_private.pem")]),
                "--cache-dir", str(self.cache_dir), "--part-size", str(PART_SIZE),
                "--multipart-threshold", str(MULTIPART_THRESHOLD), "--retries", "2",
                *(["-f"] if foreground else []), *self.extra]

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, env=self.env,
                                     cwd=str(ROOT))
        log.close()
        deadline = time.monotonic() + 30
        while not _is_mounted(str(self.path)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mount exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mount not ready after 30 s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Unmount cleanly (pending uploads finish), and make sure the process is gone."""
        if _is_mounted(str(self.path)):
            r = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
            if r.returncode != 0:
                time.sleep(0.5)
                r = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def remount(self) -> None:
        self.stop()
        self.start()

    def kill9(self) -> None:
        """A crash: SIGKILL the mount process, then clear the dead FUSE connection."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None
        for _ in range(50):
            if not _is_mounted(str(self.path)):
                break
            subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
            if _is_mounted(str(self.path)):
                time.sleep(0.1)
                subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True)

    @property
    def state_path(self) -> str:
        from ossencfs.fs.mountpaths import pidfile_for
        from ossencfs.fs.state import state_path_for
        return state_path_for(pidfile_for(str(self.path)))

    def state(self) -> dict:
        """The mount's published state (what ``ossencfs status`` reads)."""
        import json
        for _ in range(20):
            try:
                with open(self.state_path) as f:
                    return json.load(f)
            except (OSError, ValueError):
                time.sleep(0.1)
        raise AssertionError(f"no state file {self.state_path}\n{self.log()}")

    @property
    def write_back(self) -> bool:
        return "--write-back" in self.extra

    def settle(self, timeout: float = 60.0) -> None:
        """Before looking into the bucket: in write-back mode, until the files closed so far
        are uploaded (a state file written after this call lists nothing pending: a close
        schedules its upload before it returns); at once when closing uploads."""
        if not (self.write_back and self.proc is not None):
            return
        since = time.time()
        eventually(lambda: (lambda s: s["updated"] > since and not s["pending"])(self.state()),
                   timeout)

    def wait_uploaded(self, timeout: float = 60.0) -> None:
        """Until no upload is pending (the state file is rewritten every second)."""
        first = self.state()["updated"]
        eventually(lambda: (lambda s: s["updated"] > first + 1.0 and not s["pending"])(
            self.state()), timeout)

    def base_dir(self) -> Path:
        dirs = [d for d in self.cache_dir.iterdir() if (d / "staging").is_dir()]
        assert len(dirs) == 1, dirs
        return dirs[0]

    def journal_files(self) -> list[Path]:
        return sorted((self.base_dir() / "staging").glob("*.json"))

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ossencfs", *args], capture_output=True,
                              text=True, env=self.env, cwd=str(ROOT), timeout=timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def run(self, *cmd: str, cwd: str | Path | None = None, timeout: float = 60,
            check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), cwd=str(cwd or self.path), capture_output=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{cmd} failed ({r.returncode}): {r.stderr.decode(errors='replace')}"
                                 f"\n--- mount log ---\n{self.log()}")
        return r


def _make(tmp_path: Path, emulator: object, cli_env: dict[str, str], name: str = "mnt",
          extra: list[str] | None = None, prefix: str = "",
          keys: list[str] | None = None) -> Mounted:
    path = tmp_path / name
    path.mkdir()
    env = dict(cli_env)
    env.update({"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SK})
    return Mounted(path=path, emulator=emulator, cache_dir=tmp_path / f"cache-{name}",
                   log_path=tmp_path / f"{name}.log", env=env, extra=list(extra or []),
                   prefix=prefix, keys=keys)


@pytest.fixture
def make_mount(request: pytest.FixtureRequest, tmp_path: Path, emulator: object,
               cli_env: dict[str, str], write_mode: str) -> Iterator:
    """Factory: make_mount(name, extra=[...], prefix='') -> a started Mounted, in the test's
    ``write_mode`` unless ``extra`` sets ``--write-back`` itself. At the end every mount is
    stopped and its log checked (the log guard, above)."""
    if not _fuse_ok():
        pytest.skip("needs root, /dev/fuse and fusermount3")
    allowed = _allowed(request)
    made: list[Mounted] = []

    def make(name: str = "mnt", extra: list[str] | None = None, prefix: str = "",
             start: bool = True, keys: list[str] | None = None) -> Mounted:
        extra = list(extra or [])
        if "--write-back" not in extra:
            extra += WRITE_MODES[write_mode]
        m = _make(tmp_path, emulator, cli_env, name, extra, prefix, keys)
        made.append(m)
        if start:
            m.start()
        return m
    try:
        yield make
    finally:
        for m in made:
            m.stop()
    found = []
    for m in made:
        try:
            text = m.log_path.read_text(errors="replace")
        except OSError:
            continue
        found += [f"--- {m.log_path.name} ---\n{r}" for r in log_problems(text, allowed)]
    if found:
        pytest.fail("the mount log shows unexpected exceptions (allow one that a test provokes "
                    "on purpose with @pytest.mark.log_allow):\n" + "\n".join(found[:10]),
                    pytrace=False)


@pytest.fixture
def mount(make_mount) -> Mounted:
    return make_mount()
