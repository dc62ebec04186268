"""Whole-bucket tools (``ossencfs verify``, ``rotate``, ``migrate``): classification, the
parallel walk with checkpoint and shards, and the per-object actions (docs/bulk-tools.md)."""
