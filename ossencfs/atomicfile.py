"""Replace a small file so that readers (and a crash) see the old content or the new, never a mix.

One implementation for every such file (journal entries, state files, cached blocks, the KMS
emulator's key records), because the details are easy to get subtly wrong: a temp name unique
per writer thread, no half file left on error, and — when durability is asked for — fsync of
the data before the rename and of the directory after it.
"""
from __future__ import annotations

import os
import threading


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str, data: bytes, *, durable: bool = False, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically; with ``durable``, it also survives a power cut.
    The temporary file is never opened through a symbolic link (O_NOFOLLOW)."""
    tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(os.path.dirname(path) or ".")
