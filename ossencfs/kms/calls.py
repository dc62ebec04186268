"""One KMS action, run and retried: bounded concurrency, a fresh signature per attempt with the
credentials current at that moment (the STS token signed into the query, as aliyunsdkcore's
STS signer does), one retry with fresh credentials for a call refused with an expired or
unknown temporary key, retries with exponential backoff + full jitter for Throttling, 5xx and
network errors (aliyunsdkcore retries none of them for KMS, SPEC C.4) within one bounded wait
(``retry_deadline`` seconds, counting the connect/read timeouts of the attempt that would
follow), and an outage remembered for ``outage_ttl`` seconds: every call in that time fails at
once (``KeyServiceUnavailableError``, EIO), so a burst of reads during an outage costs one
wait, not one per read.
"""
from __future__ import annotations

import collections
import json
import logging
import random
import threading
import time
from typing import Callable

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import RpcRequest

from ..credentials import CredentialSource, Credentials
from ..errors import CredentialsError, KeyServiceUnavailableError, KeyUnavailableError
from .client import make_client
from .failures import STALE_CREDENTIAL_CODES, Retryable, map_client_error, map_server_error

log = logging.getLogger(__name__)

#: a JSON object as KMS answers it
JsonObject = dict[str, object]


class KmsCalls:
    """Calls of KMS actions for one CMK's master key (``master.KmsMasterKey``). Thread-safe;
    calls block."""

    def __init__(self, name: str, region: str, endpoint: str | None,
                 credentials: CredentialSource, *, max_concurrency: int, retries: int,
                 retry_base: float, retry_cap: float, retry_deadline: float,
                 connect_timeout: int, read_timeout: int, outage_ttl: float) -> None:
        self.name = name
        self.region = region
        self.endpoint = endpoint
        self.credentials = credentials
        self._retries = retries
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._retry_deadline = retry_deadline
        self._attempt_timeout = connect_timeout + read_timeout
        self._outage_ttl = outage_ttl
        self._outage: tuple[KeyServiceUnavailableError, float] | None = None    # (error, until)
        self._sem = threading.BoundedSemaphore(max_concurrency)
        self._rng = random.Random()
        self._calls_lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self._client_args = dict(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                 pool_size=max_concurrency)
        self._client_lock = threading.Lock()
        self._client_for: tuple[str, str] | None = None
        self._client: AcsClient | None = None

    def _remembered_outage(self, action: str) -> None:
        """Fail at once while a recent outage is remembered (KeyServiceUnavailableError)."""
        with self._calls_lock:
            outage = self._outage
        if outage is not None and time.monotonic() < outage[1]:
            err = KeyServiceUnavailableError(f"{outage[0]} (outage seen {self._outage_ttl:g} s ago at most; "
                                             f"{action} not attempted)")
            err.repeat = True
            raise err

    def _remember_outage(self, err: KeyServiceUnavailableError) -> KeyServiceUnavailableError:
        if self._outage_ttl > 0:
            with self._calls_lock:
                self._outage = (err, time.monotonic() + self._outage_ttl)
        return err

    def _call(self, action: str, build: Callable[[], RpcRequest], target: str) -> JsonObject:
        """One KMS action with bounded concurrency and retries (fresh signature per attempt,
        with the credentials current at that moment); ``target`` names the CMK in errors.

        Gives up when the next attempt could end after ``retry_deadline`` (for an attempt that got
        no answer, its connect + read timeouts count), and then remembers the outage."""
        self._remembered_outage(action)
        deadline = time.monotonic() + self._retry_deadline
        attempt = 0
        renewed = False
        while True:
            req = build()
            req.set_accept_format("JSON")
            req.set_method("POST")
            with self._calls_lock:
                self.calls[action] += 1
            creds: Credentials | None = None
            try:
                creds = self.credentials.get()
                return self._send(action, req, creds, target)
            except ServerException as e:
                if (not renewed and creds is not None and creds.security_token
                        and (e.get_error_code() or "") in STALE_CREDENTIAL_CODES
                        and self.credentials.renew(creds)):
                    renewed = True            # raced an expiry: once more, fresh credentials
                    continue
                err = map_server_error(action, e, target)
            except ClientException as e:
                err = map_client_error(action, e, target, self.endpoint or f"region {self.region}")
            except CredentialsError as e:
                err = Retryable(KeyServiceUnavailableError(f"CMK {target}: {e}"))
            except Retryable as e:
                err = e
            if not isinstance(err, Retryable):
                raise err
            attempt += 1
            self._back_off(action, err, attempt, deadline)

    def _send(self, action: str, req: RpcRequest, creds: Credentials, target: str) -> JsonObject:
        """One attempt of ``req`` signed with ``creds``; its answer as a JSON object."""
        if creds.security_token:
            # What aliyunsdkcore's StsTokenSigner does for RPC: a signed query parameter.
            req.add_query_param("SecurityToken", creds.security_token)
        client = self._client_with(creds)
        with self._sem:
            body = client.do_action_with_exception(req)
        with self._calls_lock:
            self._outage = None
        try:
            doc = json.loads(body)
        except ValueError:
            raise Retryable(KeyServiceUnavailableError(f"CMK {target}: KMS {action} answer is not JSON")) from None
        if not isinstance(doc, dict):
            raise KeyUnavailableError(f"CMK {target}: KMS {action} answer is not a JSON object")
        return doc

    def _back_off(self, action: str, err: Retryable, attempt: int, deadline: float) -> None:
        """Sleep before retry ``attempt`` of ``action``; raise ``err.final`` (and remember the
        outage) when attempts run out or the retry could end after ``deadline``."""
        delay = self._rng.uniform(0, min(self._retry_cap, self._retry_base * (2 ** attempt)))
        cost = delay + (self._attempt_timeout if err.network else 0.0)
        if attempt > self._retries or time.monotonic() + cost > deadline:
            raise self._remember_outage(err.final)
        log.debug("%s: %s failed transiently (%s); retry %d in %.2fs", self.name, action, err, attempt, delay)
        time.sleep(delay)

    def _client_with(self, creds: Credentials) -> AcsClient:
        """The client for this key pair, rebuilt (``make_client``) when the pair changed."""
        pair = (creds.access_key_id, creds.access_key_secret)
        with self._client_lock:
            if self._client is None or self._client_for != pair:
                self._client = make_client(creds, self.region, self.endpoint, **self._client_args)
                self._client_for = pair
            return self._client
