"""Running a one-shot command (``cp``, ``cat``, ``verify``, ``rotate``, ``migrate``) under trio.

Scripts rely on these commands failing the same way: one line on stderr and exit status 1 for
an expected failure (a product error or an ``OSError``), 141 without a message when the reader
of our output went away (``| head``), and a traceback only for a bug.
"""
from __future__ import annotations

import argparse
import errno
import re
import sys
from typing import Awaitable, Callable

import trio

from ..aio import first_error
from ..errors import OssEncError


def run_command(fn: Callable[[argparse.Namespace], Awaitable[int | None]],
                args: argparse.Namespace) -> int:
    """Runs ``fn(args)`` in a new trio loop; returns its exit status (``None`` is 0), or 1 / 141
    after reporting an expected failure (see the module docstring)."""
    try:
        return int(trio.run(fn, args) or 0)
    except BaseExceptionGroup as eg:
        exc = first_error(eg)
        if isinstance(exc, (OssEncError, OSError, KeyboardInterrupt)):
            return _report(exc)
        raise
    except (OssEncError, OSError) as exc:
        return _report(exc)


def _report(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    if isinstance(exc, BrokenPipeError) or getattr(exc, "errno", None) == errno.EPIPE:
        return 141  # reader went away (e.g. `| head`): not an error worth a message
    if isinstance(exc, OSError) and not isinstance(exc, OssEncError):
        where = f": {exc.filename}" if exc.filename else ""
        msg = f"{exc.strerror or exc}{where}"
    else:
        msg = str(exc)
    print(f"ossencfs: error: {msg}", file=sys.stderr)
    return 1


def size_argument(text: str) -> int:
    """argparse type for a byte count: "4096", "64K", "8MiB", "1g" -> bytes (binary units)."""
    m = re.fullmatch(r"(\d+)\s*([kmg]?)(?:i?b)?", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text}")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2)]
