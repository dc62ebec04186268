"""trio helpers shared by every layer (objects, fs, cli).

Why it exists: unwrapping a nursery's exception group to the one error a caller should see is
needed from the objects layer up to the command line; it lives at the bottom, beside
``errors``, so that nothing has to import a higher layer to get it.
"""
from __future__ import annotations

import trio

from .errors import OssEncError


def first_error(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, so callers see one cause."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        preferred = [e for e in inner if isinstance(e, OssEncError)]
        exc = (preferred or inner or list(exc.exceptions))[0]
    return exc
