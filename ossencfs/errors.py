"""Typed errors shared by every layer.

Each layer raises these (never bare oss2 / KMS / cryptography exceptions) so that the layer
above can map a failure to one errno and one log line that names the object and the cause.
Messages never contain key material or plaintext.
"""
from __future__ import annotations

import errno


class OssEncError(Exception):
    """Base class; ``errno`` is what the filesystem layer returns for it."""

    errno: int = errno.EIO


class FormatError(OssEncError):
    """An object's encryption headers are missing, partial, malformed or tampered."""

    errno = errno.EIO


class KeyFileError(OssEncError):
    """A key file cannot be read or parsed (wrong passphrase, not PEM, not RSA)."""

    errno = errno.EACCES


class WrongKeyError(OssEncError):
    """No configured master key opens this object (wrong key, or none for its wrap-alg/matdesc)."""

    errno = errno.EACCES


class KeyUnavailableError(OssEncError):
    """The master key exists but cannot be used now (KMS unreachable, disabled or denied CMK)."""

    errno = errno.EACCES


class StoreError(OssEncError):
    """An OSS request failed for good (after retries)."""

    errno = errno.EIO


class NotFoundError(StoreError):
    """The object or bucket does not exist."""

    errno = errno.ENOENT


class ConflictError(StoreError):
    """The object changed (ETag/If-Match mismatch) or exists where it must not (forbid-overwrite)."""

    errno = errno.EEXIST


class AccessDeniedError(StoreError):
    """Credentials rejected (bad signature, unknown key, denied)."""

    errno = errno.EACCES


class NetworkError(StoreError):
    """The service could not be reached, or kept failing with 5xx, after retries."""

    errno = errno.EIO
