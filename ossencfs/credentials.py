"""Credentials shared by the OSS and KMS clients, renewed before they expire.

A ``CredentialSource`` wraps one credential provider of ``alibabacloud-credentials`` (the official
library: environment variables, profiles, ECS RAM role, OIDC, credentials URI, external
process; ``ossencfs.credential_chain`` picks which) and adds what a mount that runs for weeks
needs on top of it:

* temporary credentials are renewed ahead of their ``Expiration``: a quarter of their lifetime
  before it (at least 1 s, at most 5 min), by whichever request thread notices first, while
  the other threads keep signing with the current ones (no request waits for a renewal while
  the current credentials are still valid);
* a failed renewal is logged once (one WARNING naming the source, never a key), retried with
  capped exponential backoff (1 s, 2 s, ... 60 s, never past half the remaining lifetime), and
  the current credentials stay in use until they expire; a later success logs one line;
* ``renew(rejected)`` fetches new credentials at once when a server refused the ones a request
  carried (a request that raced an expiry): the caller retries that request once;
* ``Credentials`` has the ``get_access_key_id()`` / ``get_access_key_secret()`` /
  ``get_security_token()`` methods of oss2's credentials object, and ``CredentialSource`` has
  oss2's ``CredentialsProvider.get_credentials()``, so ``oss2.ProviderAuth(source)`` and
  ``oss2.ProviderAuthV4(source)`` sign every request with the current credentials.

Nothing here prints a secret: ``repr`` shows a masked AccessKey id, and the library's own logger
(``credentials``, which logs at WARNING through its own stderr handler and puts HTTP bodies in
its exception texts) is silenced; failures are reported here with ``scrub``bed messages.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import CredentialsError

log = logging.getLogger(__name__)

MIN_MARGIN = 1.0          # seconds before expiry, at least
MAX_MARGIN = 300.0        # ... and at most
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0
TOKEN_RECHECK = 60.0     # seconds between asking again for a token of unknown expiry


def quiet_library_logger() -> None:
    """alibabacloud-credentials adds a stderr handler at INFO to the ``credentials`` logger on
    import and logs refresh failures (with their HTTP bodies) and tracebacks there."""
    lib = logging.getLogger("credentials")
    lib.setLevel(logging.CRITICAL + 1)
    lib.propagate = False


def scrub(text: str) -> str:
    """An error text of the library, without what may follow "result:" / "stderr:" (the body
    of a credentials answer or a process's error output, which may hold a secret)."""
    for marker in ("result:", "stderr:", "response:"):
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut] + marker + " <not shown>"
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:300] + "..."


@dataclass(frozen=True, repr=False)
class Credentials:
    """One AccessKey pair, with its STS token and expiry (Unix seconds) when temporary."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None
    expiration: float | None = None

    def __repr__(self) -> str:
        ak = self.access_key_id
        shown = ak[:4] + "***" if len(ak) > 8 else "***"
        return f"Credentials({shown}, temporary={self.security_token is not None})"

    # oss2's credentials object (oss2/credentials.py: Credentials)
    def get_access_key_id(self) -> str:
        return self.access_key_id

    def get_access_key_secret(self) -> str:
        return self.access_key_secret

    def get_security_token(self) -> str | None:
        return self.security_token


def from_library(value: Any) -> Credentials:
    """A library ``Credentials`` (alibabacloud_credentials.provider.refreshable) as ours."""
    ak, sk = value.get_access_key_id(), value.get_access_key_secret()
    if not ak or not sk:
        raise CredentialsError("the credential provider returned an empty AccessKey pair")
    expiration = getattr(value, "get_expiration", lambda: None)()
    return Credentials(ak, sk, value.get_security_token() or None,
                       float(expiration) if expiration else None)


class CredentialSource:
    """Thread-safe current credentials of one provider. ``fetch`` returns fresh ``Credentials``
    or raises; ``name`` says where they come from (for messages)."""

    def __init__(self, fetch: Callable[[], Credentials], name: str, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self.name = name
        self._clock = clock
        self._current: Credentials | None = None
        self._refresh_at = float("inf")
        self._next_try = 0.0
        self._failures = 0
        self._lock = threading.Lock()          # guards the fields
        self._refreshing = threading.Lock()    # one renewal at a time
        #: successful fetches that gave new credentials (tests, status)
        self.renewals = 0

    @classmethod
    def static(cls, access_key_id: str, access_key_secret: str,
               security_token: str | None = None, name: str = "static") -> "CredentialSource":
        creds = Credentials(access_key_id, access_key_secret, security_token or None)
        return cls(lambda: creds, name)

    # ---- public ----------------------------------------------------------------------------
    def get(self) -> Credentials:
        """Credentials to sign a request with now; renewed first when due. CredentialsError
        when there are none that are still valid."""
        with self._lock:
            current, now = self._current, self._clock()
            usable = current is not None and not self._expired(current, now)
            due = not usable or (now >= self._refresh_at and now >= self._next_try)
        if not due:
            assert current is not None
            return current
        if usable:
            # someone else renewing: keep signing with the current ones meanwhile
            if not self._refreshing.acquire(blocking=False):
                assert current is not None
                return current
        else:
            self._refreshing.acquire()
        try:
            return self._renew_locked(force=False)
        finally:
            self._refreshing.release()

    get_credentials = get          # oss2's CredentialsProvider protocol

    def renew(self, rejected: Credentials | None) -> bool:
        """A server refused ``rejected`` as expired or unknown: fetch new credentials now
        (unless another thread already did). True when different credentials are in use now,
        i.e. one retry of the refused request is worth it."""
        with self._refreshing:
            with self._lock:
                if self._current is not None and self._current != rejected:
                    return True
            try:
                fresh = self._renew_locked(force=True)
            except CredentialsError:
                return False
            return fresh != rejected

    def seconds_to_renewal(self) -> float:
        """How long until ``get()`` would try a renewal (at least 0.5 s); for a background
        task that keeps an idle mount's credentials fresh."""
        with self._lock:
            now = self._clock()
            current = self._current
            if current is not None and self._expired(current, now):
                return max(0.5, self._next_try - now)
            return max(0.5, min(max(self._refresh_at, self._next_try) - now, 3600.0))

    def prime(self, first: Credentials) -> None:
        """Start with credentials fetched already (the chain's probe)."""
        with self._lock:
            self._current = first
            self._refresh_at = self._schedule(first, self._clock())

    @property
    def current(self) -> Credentials | None:
        """The credentials in use now, without renewing (None before the first fetch)."""
        return self._current

    @property
    def temporary(self) -> bool:
        c = self._current
        return c is not None and c.security_token is not None

    # ---- internals -------------------------------------------------------------------------
    @staticmethod
    def _expired(c: Credentials, now: float) -> bool:
        return c.expiration is not None and now >= c.expiration - 0.5

    def _renew_locked(self, force: bool) -> Credentials:
        """Fetch (the caller holds ``_refreshing``); on failure keep the current ones while
        they are valid, else raise CredentialsError."""
        with self._lock:
            current, now = self._current, self._clock()
            if (not force and current is not None and now < self._refresh_at
                    and not self._expired(current, now)):
                return current              # renewed by another thread meanwhile
        try:
            fresh = self._fetch()
        except Exception as exc:  # noqa: BLE001 - any provider failure is reported the same way
            return self._failed(exc, current)
        with self._lock:
            now = self._clock()
            if self._failures:
                log.warning("credentials from %s renewed after %d failed attempt(s)", self.name,
                            self._failures)
            self._failures = 0
            if fresh != self._current:
                if self._current is not None:
                    self.renewals += 1
                self._current = fresh
                self._refresh_at = self._schedule(fresh, now)
                self._next_try = 0.0
            elif fresh.expiration is None:
                self._refresh_at = self._schedule(fresh, now)
            else:
                # the provider handed back what we had (its own cache): ask again a bit later
                self._next_try = now + self._backoff(fresh, now, 1)
            return fresh

    def _failed(self, exc: Exception, current: Credentials | None) -> Credentials:
        with self._lock:
            now = self._clock()
            self._failures += 1
            if current is None:
                raise CredentialsError(f"no credentials from {self.name}: "
                                       f"{scrub(str(exc)) or type(exc).__name__}") from None
            if self._failures == 1:
                left = (current.expiration or now) - now
                log.warning("credentials: renewing from %s failed (%s); retrying with backoff, "
                            "the current ones stay in use for %.0f s more", self.name,
                            scrub(str(exc)) or type(exc).__name__, max(0.0, left))
            self._next_try = now + self._backoff(current, now, self._failures)
            if self._expired(current, now):
                raise CredentialsError(f"credentials from {self.name} expired and could not be "
                                       f"renewed") from None
            return current

    @staticmethod
    def _schedule(c: Credentials, now: float) -> float:
        if c.expiration is None:
            # a token without a known expiry (profile providers do not pass it on): ask the
            # provider again every minute, it renews them from its own cache
            return now + TOKEN_RECHECK if c.security_token else float("inf")
        lifetime = max(0.0, c.expiration - now)
        return c.expiration - min(MAX_MARGIN, max(MIN_MARGIN, lifetime / 4))

    @staticmethod
    def _backoff(c: Credentials, now: float, failures: int) -> float:
        delay = min(BACKOFF_MAX, BACKOFF_BASE * (2 ** (failures - 1)))
        if c.expiration is not None:
            delay = min(delay, max(0.5, (c.expiration - now) / 2))
        return delay
