"""The local KMS's error answers: one exception carrying the HTTP status, Code and Message a
real KMS sends, and the two parameter errors every action uses.

Kept in its own module because the key store, the crypto, the actions and the request checks
all raise them (none of those may import the others just for an error type).
"""
from __future__ import annotations


class KmsApiError(Exception):
    """An RPC error answer: (HTTP status, Code, Message) exactly as the client will see it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def missing(name: str) -> KmsApiError:
    """400 MissingParameter: a mandatory parameter ``name`` is absent or empty."""
    return KmsApiError(400, "MissingParameter",
                       f'The input parameter "{name}" that is mandatory for processing this request is not supplied.')


def invalid(name: str, why: str = "") -> KmsApiError:
    """400 InvalidParameter: parameter ``name`` has a value the action refuses."""
    return KmsApiError(400, "InvalidParameter",
                       f"The specified parameter {name} is not valid." + (f" {why}" if why else ""))


def key_not_found() -> KmsApiError:
    """404 Forbidden.KeyNotFound: no key with the id (or the id a blob starts with)."""
    return KmsApiError(404, "Forbidden.KeyNotFound", "The specified Key is not found.")
