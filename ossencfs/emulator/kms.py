"""A local Alibaba Cloud KMS (RPC API 2016-01-20) for tests, benchmarks and ``ossencfs emulator``.

Why it exists: oss2's ``AliKMSProvider`` and our ``KmsMasterKey`` must be exercised over real
HTTP with the real aliyunsdkcore client, without an Alibaba Cloud account. The server therefore
speaks the wire protocol exactly as the SDK sends it (SPEC §C): ``POST /`` with every parameter
in the query string (a form body is accepted too), HMAC-SHA1 signature, Timestamp and
SignatureNonce checks, JSON answers, and JSON errors with the real codes and HTTP statuses.

This module is the service as a whole: its life cycle, test hooks, faults and the request
pipeline (count, authenticate, check Action and Version, fault, act, answer). The parts:
``kms_http.py`` (HTTP front), ``kms_auth.py`` (signature, timestamp, token, nonce checks),
``kms_actions.py`` (what each action does), ``kms_keys.py`` (the CMKs on disk, mode 0600, so
blobs survive a restart), ``kms_crypto.py`` (real AES-256-GCM blobs bound to the
EncryptionContext; a blob from another installation is rejected), ``kms_errors.py``.

Test hooks (Python API, not RPC): ``create_key(key_id=...)`` makes a key with a chosen id,
``add_recorded_blob(blob, plaintext)`` makes Decrypt of one exact foreign blob (e.g. the legacy
KMS vector recorded from real KMS) answer a recorded plaintext, and ``set_faults`` injects
``Throttling`` (400, and 429 ``Rejected.Throttling`` in turn) and
``SerivceUnavailableTemporary`` (503) answers and outages: ``outage=
"hang"`` reads each request and never answers (until the outage ends or the server stops),
``outage="reset"`` closes each connection without an answer. A KMS that is down (connections
refused) is ``stop()``; ``start()`` brings it back on the same port.

``sts_tokens`` maps a temporary AccessKeyId to the SecurityToken that must accompany it (the
reverse mapping, token -> AccessKeyId, is accepted as well); its secret is in ``credentials``.
"""
from __future__ import annotations

import collections
import random
import threading
import time
import uuid
from typing import Callable

from .kms_actions import Action, JsonDoc, KmsActions
from .kms_auth import RpcAuthenticator
from .kms_crypto import blob_key_id, canonical_context
from .kms_errors import KmsApiError, missing
from .kms_http import KmsHandler, KmsHTTPServer, KmsHTTPServer6
from .kms_keys import DISABLED, ENABLED, KeyStore

API_VERSION = "2016-01-20"


class KmsServer:
    """Local KMS over HTTP on 127.0.0.1; run it with ``start()``/``stop()`` or ``with KmsServer(...)``."""

    def __init__(self, data_dir: str, *, host: str = "127.0.0.1", port: int = 0,
                 credentials: dict[str, str], sts_tokens: dict[str, str] | None = None,
                 region: str = "cn-hangzhou") -> None:
        self.data_dir = data_dir
        self.host, self.port = host, port
        self.auth = RpcAuthenticator(dict(credentials), dict(sts_tokens or {}))
        self.region = region
        self.store = KeyStore(data_dir)
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._throttle_rate = 0.0
        self._fail_rate = 0.0
        self._throttle_next = 0
        self._throttles = 0           # throttle answers given (they alternate: ``_maybe_fault``)
        self._fail_next = 0
        self._latency = 0.0
        self.outage = ""                  # "", "hang" or "reset" (see set_faults)
        self._outage_over = threading.Event()
        self.inflight = 0
        self.max_inflight = 0         # highest number of requests served at once (tests, bench)
        self._httpd: KmsHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._actions: dict[str, Action] = KmsActions(self.store, region).table()

    @property
    def credentials(self) -> dict[str, str]:
        """AccessKeyId -> secret (the emulator adds STS credentials to this very dict)."""
        return self.auth.credentials

    @property
    def sts_tokens(self) -> dict[str, str]:
        """Temporary AccessKeyId -> the SecurityToken that must accompany it."""
        return self.auth.sts_tokens

    @property
    def token_expired(self) -> Callable[[str], bool] | None:
        """Set by the emulator when it issues expiring STS credentials (``emulator/sts.py``)."""
        return self.auth.token_expired

    @token_expired.setter
    def token_expired(self, check: Callable[[str], bool] | None) -> None:
        self.auth.token_expired = check

    # ---- life cycle -------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("KmsServer not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._httpd.server_address[1]}"

    def start(self) -> "KmsServer":
        server = self
        if self.outage:
            self._outage_over.clear()

        class Handler(KmsHandler):
            kms = server

        server_cls = KmsHTTPServer6 if ":" in self.host else KmsHTTPServer
        self._httpd = server_cls((self.host, self.port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"kms-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._outage_over.set()           # release hanging requests
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_all()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "KmsServer":
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- test hooks (Python API) ------------------------------------------------------------
    def create_key(self, key_id: str | None = None, *, description: str = "") -> str:
        """Create an enabled CMK; a chosen ``key_id`` lets tests reproduce ids from recorded vectors."""
        return self.store.create(key_id, description)["KeyId"]

    def enable_key(self, key_id: str) -> None:
        self.store.set_state(key_id, ENABLED)

    def disable_key(self, key_id: str) -> None:
        self.store.set_state(key_id, DISABLED)

    def schedule_key_deletion(self, key_id: str, days: int = 7) -> None:
        self.store.schedule_deletion(key_id, days)

    def key_state(self, key_id: str) -> str:
        return self.store.get(key_id)["KeyState"]

    def add_recorded_blob(self, blob: str, plaintext: str, *, key_id: str | None = None,
                          encryption_context: str | None = None) -> None:
        """Make Decrypt(CiphertextBlob=blob) answer ``plaintext`` (a recorded real-KMS answer).

        Needed for vectors made by real KMS, whose blobs no local key can decrypt. The owning key
        (``key_id``, else the UUID the decoded blob starts with) is created if absent and its state
        is honoured (disabled -> Rejected.Disabled). ``encryption_context=None`` accepts any
        context; a string must match like a real one. Persisted in ``<data_dir>/kms-recorded.json``.
        """
        if key_id is None:
            key_id = blob_key_id(blob)
            if key_id is None:
                raise ValueError("cannot tell the key id of this blob; pass key_id=")
        try:
            self.store.get(key_id)
        except KmsApiError:
            self.store.create(key_id, "recorded")
        ctx = None if encryption_context is None else canonical_context(encryption_context)
        self.store.add_recorded(blob, plaintext, key_id, ctx)

    def set_faults(self, *, throttle_rate: float | None = None, fail_rate: float | None = None,
                   throttle_next: int | None = None, fail_next: int | None = None,
                   latency_ms: float | None = None, seed: int | None = None, outage: str | None = None) -> None:
        """Inject throttling (400 Throttling and 429 Rejected.Throttling in turn) /
        SerivceUnavailableTemporary (503) answers after authentication.

        Rates apply to every request at random; ``*_next`` fail exactly the next N requests, which
        is what deterministic tests want. ``latency_ms`` delays every answer (to make concurrency
        visible in ``max_inflight``). ``outage``: "hang" (accept, never answer), "reset" (close
        without an answer) or "" (none). ``None`` leaves a setting unchanged.
        """
        if outage is not None:
            if outage not in ("", "hang", "reset"):
                raise ValueError(f"outage must be '', 'hang' or 'reset', not {outage!r}")
            self.outage = outage
            (self._outage_over.clear if outage else self._outage_over.set)()
        with self._lock:
            if latency_ms is not None:
                self._latency = latency_ms / 1000.0
            if throttle_rate is not None:
                self._throttle_rate = throttle_rate
            if fail_rate is not None:
                self._fail_rate = fail_rate
            if throttle_next is not None:
                self._throttle_next = throttle_next
            if fail_next is not None:
                self._fail_next = fail_next
            if seed is not None:
                self._rng.seed(seed)

    # ---- request pipeline -------------------------------------------------------------------
    def handle(self, method: str, params: dict[str, str]) -> tuple[int, JsonDoc]:
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            latency = self._latency
        try:
            if latency:
                time.sleep(latency)
            return self._handle(method, params)
        finally:
            with self._lock:
                self.inflight -= 1

    def _handle(self, method: str, params: dict[str, str]) -> tuple[int, JsonDoc]:
        request_id = str(uuid.uuid4()).upper()
        try:
            action = params.get("Action")
            if action:
                with self._lock:
                    self.calls[action] += 1
            self.auth.authenticate(method, params)
            if not action:
                raise missing("Action")
            if params.get("Version") != API_VERSION:
                raise KmsApiError(400, "InvalidVersion", "Specified parameter Version is not valid.")
            fn = self._actions.get(action)
            if fn is None:
                raise KmsApiError(404, "InvalidAction.NotFound",
                                  "Specified api is not found, please check your url and method.")
            self._maybe_fault()
            body = fn(params)
            body["RequestId"] = request_id
            return 200, body
        except KmsApiError as e:
            return e.status, {"RequestId": request_id, "HostId": f"kms.{self.region}.aliyuncs.com",
                              "Code": e.code, "Message": e.message,
                              "Recommend": f"https://api.aliyun.com/troubleshoot?q={e.code}"}

    def _maybe_fault(self) -> None:
        with self._lock:
            if self._throttle_next > 0:
                self._throttle_next -= 1
                throttle = True
            else:
                throttle = self._throttle_rate > 0 and self._rng.random() < self._throttle_rate
            if throttle:
                # both answers real KMS gives, in turn: ``Throttling`` 400 (the public error
                # codes, SPEC C.5) and, for the QPS quota, 429 ``Rejected.Throttling`` "QPS Limit
                # Exceeded" (help.aliyun.com/knowledge_detail/444042.html)
                self._throttles += 1
                if self._throttles % 2:
                    raise KmsApiError(400, "Throttling", "Request was denied due to request throttling.")
                raise KmsApiError(429, "Rejected.Throttling", "QPS Limit Exceeded")
            if self._fail_next > 0:
                self._fail_next -= 1
                fail = True
            else:
                fail = self._fail_rate > 0 and self._rng.random() < self._fail_rate
            if fail:
                raise KmsApiError(503, "SerivceUnavailableTemporary",
                                  "Service unavailable temporarily. Please try again later.")

    def wait_outage_end(self) -> None:
        """Block until a "hang" outage ends (or the server stops)."""
        self._outage_over.wait()
