"""Command-line entry point: one subcommand per job, each defined in its own module.

Each module listed in ``_COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommands with ``set_defaults(func=...)``; ``func(args) -> int`` is the exit status. Modules
are imported lazily so that a missing optional dependency of one command (e.g. pyfuse3 for
``mount``) does not break the others.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ..errors import OssEncError
from ..logsafe import SafeFormatter, printable

_COMMAND_MODULES = (
    "ossencfs.cli.offline",     # keygen, encrypt, decrypt
    "ossencfs.cli.emulator",    # emulator
    "ossencfs.cli.transfer",    # cp, cat
    "ossencfs.cli.mountcmd",    # mount, umount
    "ossencfs.cli.statuscmd",   # status
    "ossencfs.cli.restorecmd",  # restore
    "ossencfs.cli.bucketcmds",  # verify, rotate, migrate
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ossencfs",
        description="Mount an OSS bucket as a folder with SDK-compatible client-side encryption.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("ossencfs: %(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    try:
        return int(args.func(args) or 0)
    except OssEncError as exc:
        print(f"ossencfs: error: {printable(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``ossencfs status --json | head``): no traceback, and none at
        # exit when Python flushes stdout again (docs.python.org, "Note on SIGPIPE")
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
