"""KMS failures: which are worth another attempt (``Retryable``: throttling, 5xx, network),
and the typed error each other one becomes, naming the CMK: ``KeyUnavailableError`` (EACCES:
disabled, deleted or denied CMK, rejected credentials), ``KeyServiceUnavailableError`` (EIO),
``WrongKeyError`` (KMS cannot decrypt this blob). Messages never carry request parameters.
"""
from __future__ import annotations

import re

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException

from ..errors import KeyServiceUnavailableError, KeyUnavailableError, OssEncError, WrongKeyError

_RETRYABLE_CODES = {"Throttling", "Throttling.User", "Throttling.Api", "Rejected.Throttling",
                    "ServiceUnavailable", "SerivceUnavailableTemporary",
                    "ServiceUnavailableTemporary", "InternalFailure", "InternalError"}
_CREDENTIAL_CODES_PREFIX = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidAccessKeySecret",
                            "IncompleteSignature", "InvalidSecurityToken", "IllegalTimestamp",
                            "SignatureNonceUsed", "Forbidden.AccessKey")
_DISABLED_CODES = {"Rejected.Disabled"}
_PENDING_DELETION_CODES = {"Rejetced.PendingDeletion", "Rejected.PendingDeletion"}
_QUERY_RE = re.compile(r"\?[^\s)'\"]*")
_NOT_FOUND_CODES = {"Forbidden.KeyNotFound", "Forbidden.AliasNotFound", "Forbidden.ResourceNotFound"}
# the POP gateway's answers to temporary credentials that expired (or that it no longer knows)
# while a call was under way: one retry with fresh ones (emulator/sts.py cites the codes)
STALE_CREDENTIAL_CODES = {"InvalidSecurityToken.Expired", "InvalidAccessKeyId.NotFound",
                          "InvalidSecurityToken.MismatchWithAccessKey"}


class Retryable(Exception):
    """A transient failure worth another attempt; carries the error to raise if attempts run out.
    ``network``: no answer at all (refused, reset, timed out), so an attempt may cost the timeouts."""

    def __init__(self, final: KeyServiceUnavailableError, network: bool = False) -> None:
        super().__init__(str(final))
        self.final = final
        self.network = network


def map_server_error(action: str, e: ServerException, target: str) -> OssEncError | Retryable:
    """Typed error naming the CMK (the KeyRing prefixes the object and this master's name)."""
    code = e.get_error_code() or ""
    status = e.get_http_status() or 0
    rid = e.get_request_id()
    tail = f"({code}, HTTP {status}{', request ' + rid if rid else ''})"
    cmk = f"CMK {target}"
    # throttled: ``Throttling`` 400 (public error codes) or, for the QPS quota, 429
    # ``Rejected.Throttling`` (help.aliyun.com/knowledge_detail/444042.html)
    if code in _RETRYABLE_CODES or code.startswith("Throttling") or status == 429 or status >= 500:
        return Retryable(KeyServiceUnavailableError(f"{cmk}: KMS {action} kept failing {tail}"))
    if code in _DISABLED_CODES:
        return KeyUnavailableError(f"{cmk} is disabled {tail}")
    if code in _PENDING_DELETION_CODES:
        return KeyUnavailableError(f"{cmk} is pending deletion {tail}")
    if code in _NOT_FOUND_CODES:
        return KeyUnavailableError(f"{cmk} not found (deleted, or in another region/account) {tail}")
    if code.startswith(_CREDENTIAL_CODES_PREFIX):
        # Never echo the server message here: it carries the string-to-sign, i.e. the params.
        return KeyUnavailableError(f"{cmk}: KMS rejected the credentials {tail}")
    if code.startswith("Forbidden"):
        return KeyUnavailableError(f"{cmk}: KMS denied {action} {tail}")
    if action == "Decrypt" and code.startswith("InvalidParameter"):
        return WrongKeyError(f"{cmk}: KMS cannot decrypt this wrapped key (wrong encryption "
                             f"context, tampered header, or not a KMS blob) {tail}")
    msg = (e.get_error_msg() or "")[:200]
    return KeyUnavailableError(f"{cmk}: KMS {action} failed {tail}: {msg}")


def map_client_error(action: str, e: ClientException, target: str,
                     where: str) -> OssEncError | Retryable:
    """Typed error for a failure of the SDK client itself; ``where``: the endpoint or region."""
    code = e.get_error_code() or ""
    msg = _scrub(e.get_error_msg() or "")
    if code == "SDK.HttpError":        # refused, reset, or no answer within the timeouts
        return Retryable(KeyServiceUnavailableError(f"CMK {target}: KMS at {where} unreachable for "
                                                    f"{action} ({_network_cause(msg)})"), network=True)
    return KeyUnavailableError(f"CMK {target}: KMS client error for {action} ({code}: {msg})")


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] [^'\")(]*")


def _network_cause(msg: str) -> str:
    """The cause in an SDK network error, without urllib3's object reprs: "[Errno 111]
    Connection refused", "read timed out", "connection closed without an answer"."""
    found = _ERRNO_TEXT.findall(msg)
    if found:
        return found[-1].strip().rstrip(".")
    low = msg.lower()
    if "timed out" in low or "timeout" in low:
        return "no answer within the timeout"
    if "aborted" in low or "remotedisconnected" in low or "reset" in low:
        return "connection closed without an answer"
    return msg


def _scrub(msg: str) -> str:
    """Drop request URLs' query strings from SDK messages: they carry Encrypt's Plaintext
    (a data key in the java flavour) and Decrypt's blob."""
    msg = _QUERY_RE.sub("?<params>", msg)
    return msg if len(msg) <= 400 else msg[:400] + "..."
