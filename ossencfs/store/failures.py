"""Which failures of an OSS request are worth another attempt, and the ``ossencfs.errors``
type each one becomes, so the layers above never see an oss2 or requests exception.
"""
from __future__ import annotations

import http.client
import socket

import oss2
import oss2.exceptions
import requests
import urllib3.exceptions

from ..errors import (
    AccessDeniedError,
    ArchivedError,
    ConflictError,
    CredentialsError,
    NetworkError,
    NotFoundError,
    OssEncError,
    RejectedError,
    StoreError,
)

# Throttling and overload answers (SPEC D.13: 503 with these codes, 429 QpsLimitExceeded):
# retried with backoff like any 5xx.
_THROTTLE_CODES = {"Throttling", "SlowDown", "RequestTimeout", "ServiceUnavailable",
                   "InternalError", "QpsLimitExceeded", "TooManyRequests",
                   "TotalQpsLimitExceeded", "MetaOperationQpsLimitExceeded",
                   "DownloadTrafficRateLimitExceeded", "UploadTrafficRateLimitExceeded",
                   "ActiveRequestLimitExceeded"}
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "SymlinkTargetNotExist", ""}
# 403 answers to credentials that expired or were replaced while a request was under way
# (EC 0002-00000007 SecurityTokenExpired, 0002-00000006 InvalidSecurityToken, and
# InvalidAccessKeyId for an STS key OSS no longer knows): retried once with fresh credentials.
STALE_CREDENTIAL_CODES = {"SecurityTokenExpired", "InvalidSecurityToken", "InvalidAccessKeyId"}


class Transient(Exception):
    """A response we did not trust (short body, wrong range): worth one more try."""


class LocalSourceError(Exception):
    """A request body's local source failed (``PartBody.local_error``); ``_call`` raises
    ``error`` itself, unclassified and unretried (the caller decides: fs.lifecycle.for_good)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def classify(op: str, bucket: str, key: str, exc: Exception) -> tuple[bool, OssEncError]:
    """(worth another attempt, the error to raise) for ``exc`` raised by ``op`` on
    ``oss://bucket/key``; a transient failure becomes a ``NetworkError``."""
    what = f"{op} oss://{bucket}/{key}"
    if isinstance(exc, CredentialsError):
        # the credential source is down and its last credentials expired: like a network
        # outage (retried; the fs layer serves what it has cached, uploads stay journaled)
        return True, NetworkError(f"{what}: {exc}")
    if isinstance(exc, OssEncError):
        return False, exc
    if isinstance(exc, Transient):
        return True, NetworkError(f"{what}: {exc}")
    if isinstance(exc, oss2.exceptions.RequestError):
        return True, NetworkError(f"{what}: network error: {network_reason(exc)}")
    if isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError,
                        ConnectionError, TimeoutError)):
        return True, NetworkError(f"{what}: network error: {network_reason(exc)}")
    if isinstance(exc, oss2.exceptions.InconsistentError):
        return True, NetworkError(f"{what}: CRC-64 mismatch in transfer")
    if isinstance(exc, oss2.exceptions.ServerError):
        return _server_error(what, key, exc)
    if isinstance(exc, oss2.exceptions.OssError):
        return False, StoreError(f"{what}: {_short(exc)}")
    return False, StoreError(f"{what}: {type(exc).__name__}: {exc}")


def _server_error(what: str, key: str, exc: oss2.exceptions.ServerError) -> tuple[bool, OssEncError]:
    """An HTTP error answer of OSS, by status and error code (SPEC D.13)."""
    status = exc.status
    code = getattr(exc, "code", "") or ""
    detail = f"{what}: {status} {code or 'error'}"
    message = (getattr(exc, "message", "") or "").strip()
    if message:
        detail += f" ({message})"
    if exc.request_id:
        detail += f" [request {exc.request_id}]"
    if 300 <= status < 400:
        # not followed (store/transport.py): a signed request is for one resource only
        where = (getattr(exc, "headers", None) or {}).get("Location")
        return False, StoreError(f"{detail}: redirected{f' to {where}' if where else ''}; "
                                 f"check the endpoint")
    if status >= 500 or status == 429 or code in _THROTTLE_CODES:
        return True, NetworkError(detail)
    if status == 404 and code in _NOT_FOUND_CODES:
        return False, NotFoundError(detail)
    if status == 412 or code in ("PreconditionFailed", "FileAlreadyExists"):
        return False, ConflictError(detail)
    if status == 409:
        return False, ConflictError(detail)
    if status == 403 and code == "InvalidObjectState":
        return False, ArchivedError(
            f"{what}: the object is archived and not restored; restore it with "
            f"`ossencfs restore` (RestoreObject) and read it once the restore is done")
    if status == 403:
        return False, AccessDeniedError(detail, code or "AccessDenied")
    if status == 404:
        return False, NotFoundError(detail)
    if 400 <= status < 500:
        # a refusal retrying cannot change (NotImplemented, InvalidObjectName, ...)
        return False, RejectedError(detail, code, len(key.encode("utf-8", "replace")))
    return False, StoreError(detail)


def network_reason(exc: BaseException) -> str:
    """What went wrong on the way to OSS, in a few words: the innermost socket-level cause of
    an oss2 ``RequestError`` (which wraps requests' and urllib3's exceptions and prints as a
    dict of several hundred characters), e.g. "connection refused", "cannot resolve host"."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    causes: list[BaseException] = []
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        causes.append(e)
        todo += [c for c in (getattr(e, "exception", None), getattr(e, "reason", None),
                             e.__cause__, e.__context__, *e.args)
                 if isinstance(c, BaseException)]
    for e in reversed(causes):          # innermost first
        if isinstance(e, socket.gaierror):
            return "cannot resolve host"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
        if isinstance(e, (TimeoutError, socket.timeout, requests.Timeout,
                          urllib3.exceptions.TimeoutError)):
            return "timed out"
        if isinstance(e, OSError) and e.strerror:
            return e.strerror.lower()
    for e in reversed(causes):
        if isinstance(e, (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError,
                          http.client.HTTPException)):
            return f"connection broken ({type(e).__name__})"
    return type(causes[-1]).__name__


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 200 else text[:200] + "..."
