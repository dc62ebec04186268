"""The OSS operations of the emulator, independent of the HTTP plumbing.

Each operation takes a ``Ctx`` (decoded request) and returns a ``Resp`` or raises ``OssError``;
they are grouped by topic in the ``ops_*`` modules and combined here.
"""
from __future__ import annotations

from .ops_base import Ctx, Resp, parse_range, valid_bucket_name
from .ops_buckets import BucketOps
from .ops_listing import ListingOps
from .ops_multipart import MultipartOps
from .ops_objects import ObjectOps

__all__ = ["Ctx", "Ops", "Resp", "parse_range", "valid_bucket_name"]


class Ops(BucketOps, ListingOps, ObjectOps, MultipartOps):
    """All operations over one Storage."""
