"""Typed errors shared by every layer.

Each layer raises these (never bare oss2 / KMS / cryptography exceptions) so that the layer
above can map a failure to one errno and one log line that names the object and the cause.
Messages never contain key material or plaintext.
"""
from __future__ import annotations

import errno


class OssEncError(Exception):
    """Base class; ``errno`` is what the filesystem layer returns for it. ``repeat``: the same
    failure was reported moments ago (e.g. a remembered KMS outage), so it is logged at debug
    level only and a burst of failing reads leaves one line, not one per read."""

    errno: int = errno.EIO
    repeat: bool = False


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
    """The master key exists but may not be used: disabled, pending deletion, not found or
    denied CMK, rejected credentials. EACCES: a permission problem."""

    errno = errno.EACCES


class KeyServiceUnavailableError(KeyUnavailableError):
    """The key service is out: KMS unreachable, not answering within the timeouts, or still
    throttling / failing with 5xx after the bounded retries. EIO, never EACCES: an outage is not
    a permission problem, and a later attempt may succeed."""

    errno = errno.EIO


class StoreError(OssEncError):
    """An OSS request failed for good (after retries)."""

    errno = errno.EIO


class NotFoundError(StoreError):
    """The object or bucket does not exist."""

    errno = errno.ENOENT


class ConflictError(StoreError):
    """The object changed (ETag/If-Match mismatch) or exists where it must not (forbid-overwrite)."""

    errno = errno.EEXIST


class RejectedError(StoreError):
    """OSS refused a request for good: a 4xx that retrying cannot fix (NotImplemented,
    InvalidObjectName, InvalidArgument, metadata too large, ...). ``code`` is OSS's error Code;
    ``errno`` is the closest POSIX answer for it (``errno_for``). Never retried, never
    queued for retry: a write that meets one is quarantined (``fs.writeback``)."""

    def __init__(self, message: str, code: str = "", key_length: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.errno = errno_for(code, key_length)


def errno_for(code: str, key_length: int = 0) -> int:
    """The errno a refused request maps to. InvalidObjectName is almost always a key over
    1023 bytes (SPEC D.5, DOC 185228), which a local file system reports as ENAMETOOLONG."""
    if code == "InvalidObjectName":
        return errno.ENAMETOOLONG if key_length > 1023 or not key_length else errno.EINVAL
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return errno.EACCES
    if code in ("EntityTooLarge", "FileTooLarge"):
        return errno.EFBIG
    return errno.EIO


class AccessDeniedError(RejectedError):
    """Credentials rejected (bad signature, unknown key, denied)."""

    def __init__(self, message: str, code: str = "AccessDenied") -> None:
        super().__init__(message, code)
        self.errno = errno.EACCES


class ArchivedError(StoreError):
    """The object is in the Archive or Cold Archive class and not restored (403
    InvalidObjectState, EC 0016-00000404, SPEC D.13): readable only after RestoreObject
    (``ossencfs restore``). ENODATA ("No data available"), never EACCES: nothing is wrong
    with the caller's rights."""

    errno = errno.ENODATA


class NetworkError(StoreError):
    """The service could not be reached, or kept failing with 5xx, after retries."""

    errno = errno.EIO
