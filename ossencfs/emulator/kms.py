"""A local Alibaba Cloud KMS (RPC API 2016-01-20) for tests, benchmarks and ``ossencfs emulator``.

Why it exists: oss2's ``AliKMSProvider`` and our ``KmsMasterKey`` must be exercised over real
HTTP with the real aliyunsdkcore client, without an Alibaba Cloud account. The server therefore
speaks the wire protocol exactly as the SDK sends it (SPEC §C): ``POST /`` with every parameter
in the query string (a form body is accepted too), HMAC-SHA1 signature, Timestamp and
SignatureNonce checks, JSON answers, and JSON errors with the real codes and HTTP statuses.

Ciphertext blobs are real AES-256-GCM encryptions under per-key secret material that lives in
``<data_dir>/kms-keys/<key id>.json`` (written atomically, mode 0600), so blobs survive a restart
and a blob from another installation is rejected. A blob is ``b64(ascii(key id) + b64(nonce +
ciphertext + tag))``, which, like a real blob, starts with the key UUID once decoded (SPEC A.8).
The EncryptionContext (``""`` or ``{}`` = none; otherwise a JSON object, compared as a map) is
bound as associated data, so Decrypt with another context fails with ``InvalidParameter``.

Test hooks (Python API, not RPC): ``create_key(key_id=...)`` makes a key with a chosen id,
``add_recorded_blob(blob, plaintext)`` makes Decrypt of one exact foreign blob (e.g. the legacy
KMS vector recorded from real KMS) answer a recorded plaintext, and ``set_faults`` injects
``Throttling`` (400) and ``SerivceUnavailableTemporary`` (503) answers and outages: ``outage=
"hang"`` reads each request and never answers (until the outage ends or the server stops),
``outage="reset"`` closes each connection without an answer. A KMS that is down (connections
refused) is ``stop()``; ``start()`` brings it back on the same port.

``sts_tokens`` maps a temporary AccessKeyId to the SecurityToken that must accompany it (the
reverse mapping, token -> AccessKeyId, is accepted as well); its secret is in ``credentials``.
"""
from __future__ import annotations

import base64
import binascii
import collections
import datetime as _dt
import hashlib
import hmac
import json
import os
import random
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..atomicfile import replace_file

API_VERSION = "2016-01-20"
ACCOUNT_ID = "1234567890123456"
MAX_CLOCK_SKEW = 15 * 60          # seconds; the documented tolerance of the POP gateway
MAX_ENCRYPT_PLAINTEXT = 6144      # bytes (KMS Encrypt limit)
_NONCE_TTL = 2 * MAX_CLOCK_SKEW
_MAX_BODY = 1 << 20               # RPC bodies are tiny; refuse anything that is not
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_AAD_PREFIX = b"ossencfs-local-kms-v1\0"

ENABLED, DISABLED, PENDING_DELETION = "Enabled", "Disabled", "PendingDeletion"


class KmsApiError(Exception):
    """An RPC error answer: (HTTP status, Code, Message) exactly as the client will see it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _missing(name: str) -> KmsApiError:
    return KmsApiError(400, "MissingParameter",
                       f'The input parameter "{name}" that is mandatory for processing this request is not supplied.')


def _invalid(name: str, why: str = "") -> KmsApiError:
    return KmsApiError(400, "InvalidParameter",
                       f"The specified parameter {name} is not valid." + (f" {why}" if why else ""))


def pct(s: str) -> str:
    """RFC 3986 percent-encoding as POP signing wants it (unreserved: A-Z a-z 0-9 - _ . ~)."""
    return quote(s, safe="-_.~")


def string_to_sign(method: str, params: dict[str, str]) -> str:
    """SPEC C.2: METHOD&%2F&pct(sorted canonical query), every param except Signature."""
    items = sorted((pct(k), pct(v)) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{k}={v}" for k, v in items)
    return f"{method}&{pct('/')}&{pct(canonical)}"


def rpc_signature(secret: str, sts: str) -> str:
    mac = hmac.new((secret + "&").encode(), sts.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def canonical_context(raw: str | None) -> str:
    """EncryptionContext as bound to a blob: "" for none, else sorted compact JSON of the map."""
    if raw is None or raw == "":
        return ""
    try:
        obj = json.loads(raw)
    except ValueError:
        raise _invalid("EncryptionContext", "It must be a JSON object.") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise _invalid("EncryptionContext", "It must be a JSON object.")
    if not obj:
        return ""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _KeyStore:
    """The CMKs and recorded blobs, in memory and mirrored on disk. Thread-safe."""

    def __init__(self, data_dir: str) -> None:
        self.dir = os.path.join(data_dir, "kms-keys")
        self.recorded_path = os.path.join(data_dir, "kms-recorded.json")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.lock = threading.RLock()
        self.keys: dict[str, dict[str, Any]] = {}
        self.recorded: dict[str, dict[str, Any]] = {}
        for name in os.listdir(self.dir):
            if name.endswith(".json") and not name.startswith("."):
                with open(os.path.join(self.dir, name), "rb") as f:
                    rec = json.loads(f.read())
                self.keys[rec["KeyId"]] = rec
        if os.path.exists(self.recorded_path):
            with open(self.recorded_path, "rb") as f:
                self.recorded = json.loads(f.read())

    def _save(self, rec: dict[str, Any]) -> None:
        # key material is secret: 0600, and durable so a crash never loses a key
        replace_file(os.path.join(self.dir, rec["KeyId"] + ".json"),
                     json.dumps(rec, indent=1, sort_keys=True).encode(), durable=True)

    def create(self, key_id: str | None = None, description: str = "",
               key_spec: str = "Aliyun_AES_256", key_usage: str = "ENCRYPT/DECRYPT") -> dict[str, Any]:
        key_id = key_id or str(uuid.uuid4())
        if not _KEY_ID_RE.match(key_id):
            raise _invalid("KeyId")
        rec = {
            "KeyId": key_id,
            "KeyVersionId": str(uuid.uuid4()),
            "Material": base64.b64encode(os.urandom(32)).decode(),
            "KeyState": ENABLED,
            "CreationDate": _now_iso(),
            "DeleteDate": "",
            "Description": description,
            "KeySpec": key_spec,
            "KeyUsage": key_usage,
            "Seq": time.time_ns(),
        }
        with self.lock:
            if key_id in self.keys:
                raise KmsApiError(409, "Rejected.ResourceExist", f"The key {key_id} already exists.")
            self._save(rec)
            self.keys[key_id] = rec
        return dict(rec)

    def get(self, key_ref: str) -> dict[str, Any]:
        """KeyId or key ARN -> record; aliases are not emulated."""
        if key_ref.startswith("alias/"):
            raise KmsApiError(404, "Forbidden.AliasNotFound", f"The specified alias {key_ref} is not found.")
        if key_ref.startswith("acs:kms:") and ":key/" in key_ref:
            key_ref = key_ref.rsplit(":key/", 1)[1]
        with self.lock:
            rec = self.keys.get(key_ref)
        if rec is None:
            raise KmsApiError(404, "Forbidden.KeyNotFound", "The specified Key is not found.")
        return rec

    def set_state(self, key_ref: str, state: str, delete_date: str = "") -> None:
        with self.lock:
            rec = dict(self.get(key_ref))
            rec["KeyState"] = state
            rec["DeleteDate"] = delete_date
            self._save(rec)
            self.keys[rec["KeyId"]] = rec

    def owner_of(self, text: str) -> dict[str, Any] | None:
        """The key whose id prefixes a decoded blob (longest id wins, ids may share prefixes)."""
        with self.lock:
            best = None
            for kid, rec in self.keys.items():
                if text.startswith(kid) and (best is None or len(kid) > len(best["KeyId"])):
                    best = rec
        return best

    def add_recorded(self, blob: str, plaintext: str, key_id: str, context: str | None) -> None:
        with self.lock:
            self.recorded[blob] = {"Plaintext": plaintext, "KeyId": key_id, "Context": context}
            replace_file(self.recorded_path,
                         json.dumps(self.recorded, indent=1, sort_keys=True).encode(), durable=True)


def usable(rec: dict[str, Any]) -> None:
    """Raise the real rejection for a key that exists but may not be used."""
    if rec["KeyState"] == DISABLED:
        raise KmsApiError(409, "Rejected.Disabled", f"The key {rec['KeyId']} is disabled.")
    if rec["KeyState"] == PENDING_DELETION:
        # The real service spells it this way (SPEC C.4).
        raise KmsApiError(409, "Rejetced.PendingDeletion", f"The key {rec['KeyId']} is pending deletion.")


class KmsServer:
    """Local KMS over HTTP on 127.0.0.1; run it with ``start()``/``stop()`` or ``with KmsServer(...)``."""

    def __init__(self, data_dir: str, *, host: str = "127.0.0.1", port: int = 0,
                 credentials: dict[str, str], sts_tokens: dict[str, str] | None = None,
                 region: str = "cn-hangzhou") -> None:
        self.data_dir = data_dir
        self.host, self.port = host, port
        self.credentials = dict(credentials)
        self.sts_tokens = dict(sts_tokens or {})
        self.region = region
        self.store = _KeyStore(data_dir)
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._nonces: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._rng = random.Random()
        self._throttle_rate = 0.0
        self._fail_rate = 0.0
        self._throttle_next = 0
        self._fail_next = 0
        self._latency = 0.0
        self.outage = ""                  # "", "hang" or "reset" (see set_faults)
        self._outage_over = threading.Event()
        self.inflight = 0
        self.max_inflight = 0         # highest number of requests served at once (tests, bench)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._actions: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
            "CreateKey": self._create_key, "DescribeKey": self._describe_key, "ListKeys": self._list_keys,
            "EnableKey": self._enable_key, "DisableKey": self._disable_key,
            "ScheduleKeyDeletion": self._schedule_key_deletion, "CancelKeyDeletion": self._cancel_key_deletion,
            "GenerateDataKey": self._generate_data_key, "Encrypt": self._encrypt, "Decrypt": self._decrypt,
        }

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

        class Handler(_Handler):
            kms = server

        server_cls = _Server6 if ":" in self.host else _Server
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
        when = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=days)
        self.store.set_state(key_id, PENDING_DELETION, when.strftime("%Y-%m-%dT%H:%M:%SZ"))

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
            try:
                text = base64.b64decode(blob, validate=True).decode("ascii")
            except (binascii.Error, UnicodeDecodeError):
                text = ""
            m = _UUID_RE.match(text)
            if not m:
                raise ValueError("cannot tell the key id of this blob; pass key_id=")
            key_id = m.group(0)
        try:
            self.store.get(key_id)
        except KmsApiError:
            self.store.create(key_id, "recorded")
        ctx = None if encryption_context is None else canonical_context(encryption_context)
        self.store.add_recorded(blob, plaintext, key_id, ctx)

    def set_faults(self, *, throttle_rate: float | None = None, fail_rate: float | None = None,
                   throttle_next: int | None = None, fail_next: int | None = None,
                   latency_ms: float | None = None, seed: int | None = None, outage: str | None = None) -> None:
        """Inject Throttling (400) / SerivceUnavailableTemporary (503) answers after authentication.

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
    def handle(self, method: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
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

    def _handle(self, method: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request_id = str(uuid.uuid4()).upper()
        try:
            action = params.get("Action")
            if action:
                with self._lock:
                    self.calls[action] += 1
            self._authenticate(method, params)
            if not action:
                raise _missing("Action")
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
                raise KmsApiError(400, "Throttling", "Request was denied due to request throttling.")
            if self._fail_next > 0:
                self._fail_next -= 1
                fail = True
            else:
                fail = self._fail_rate > 0 and self._rng.random() < self._fail_rate
            if fail:
                raise KmsApiError(503, "SerivceUnavailableTemporary",
                                  "Service unavailable temporarily. Please try again later.")

    def _authenticate(self, method: str, params: dict[str, str]) -> None:
        for name in ("AccessKeyId", "Signature", "SignatureMethod", "SignatureVersion",
                     "SignatureNonce", "Timestamp"):
            if not params.get(name):
                if name.startswith("Signature") and name != "SignatureNonce":
                    raise KmsApiError(400, "IncompleteSignature",
                                      f"The request signature does not conform to Aliyun standards: {name} missing.")
                raise _missing(name)
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            raise KmsApiError(400, "IncompleteSignature",
                              "The request signature does not conform to Aliyun standards.")
        ak = params["AccessKeyId"]
        secret = self.credentials.get(ak)
        if secret is None:
            raise KmsApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        sts = string_to_sign(method, params)
        if not hmac.compare_digest(rpc_signature(secret, sts).encode(), params["Signature"].encode()):
            # The client compares the text after ':' with its own string-to-sign (SPEC C.4).
            raise KmsApiError(400, "SignatureDoesNotMatch",
                              "Specified signature is not matched with our calculation. server string to sign is:" + sts)
        try:
            ts = _dt.datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=_dt.timezone.utc).timestamp()
        except ValueError:
            raise KmsApiError(400, "IllegalTimestamp",
                              'The input parameter "Timestamp" that is mandatory for processing this request is not supplied.') from None
        now = time.time()
        if abs(now - ts) > MAX_CLOCK_SKEW:
            raise KmsApiError(400, "IllegalTimestamp",
                              "Specified time stamp or date value is expired.")
        token = params.get("SecurityToken")
        expected = self.sts_tokens.get(ak)
        if expected is None and token is not None and self.sts_tokens.get(token) == ak:
            expected = token
        if expected is not None and token != expected:
            raise KmsApiError(400, "InvalidSecurityToken.MismatchWithAccessKey",
                              "Specified SecurityToken mismatch with the AccessKey.")
        if expected is None and token:
            raise KmsApiError(400, "InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed.")
        nonce = params["SignatureNonce"]
        with self._lock:
            # insertion order == time order, so expired nonces are at the front
            while self._nonces:
                oldest, t = next(iter(self._nonces.items()))
                if now - t <= _NONCE_TTL:
                    break
                del self._nonces[oldest]
            if nonce in self._nonces:
                raise KmsApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
            self._nonces[nonce] = now

    # ---- crypto -----------------------------------------------------------------------------
    @staticmethod
    def _aad(key_id: str, context: str) -> bytes:
        return _AAD_PREFIX + key_id.encode() + b"\0" + context.encode()

    def _seal(self, rec: dict[str, Any], plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        ct = AESGCM(base64.b64decode(rec["Material"])).encrypt(
            nonce, plaintext.encode("utf-8"), self._aad(rec["KeyId"], context))
        inner = base64.b64encode(nonce + ct).decode()
        return base64.b64encode((rec["KeyId"] + inner).encode()).decode()

    def _open(self, blob: str, context: str) -> tuple[dict[str, Any], str]:
        bad = _invalid("CiphertextBlob")
        recorded = self.store.recorded.get(blob)
        if recorded is not None:
            rec = self.store.get(recorded["KeyId"])
            usable(rec)
            if recorded["Context"] is not None and recorded["Context"] != context:
                raise bad
            return rec, recorded["Plaintext"]
        try:
            text = base64.b64decode(blob, validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise bad from None
        owner = self.store.owner_of(text)
        if owner is None:
            if _UUID_RE.match(text):
                raise KmsApiError(404, "Forbidden.KeyNotFound", "The specified Key is not found.")
            raise bad
        rec = owner
        usable(rec)
        inner = text[len(rec["KeyId"]):]
        if not _B64_RE.match(inner):
            raise bad
        try:
            raw = base64.b64decode(inner, validate=True)
            pt = AESGCM(base64.b64decode(rec["Material"])).decrypt(
                raw[:12], raw[12:], self._aad(rec["KeyId"], context))
            return rec, pt.decode("utf-8")
        except (binascii.Error, InvalidTag, ValueError, UnicodeDecodeError):
            raise bad from None

    # ---- actions ----------------------------------------------------------------------------
    def _metadata(self, rec: dict[str, Any], region: str) -> dict[str, Any]:
        return {
            "KeyId": rec["KeyId"],
            "Arn": f"acs:kms:{region}:{ACCOUNT_ID}:key/{rec['KeyId']}",
            "KeyState": rec["KeyState"],
            "CreationDate": rec["CreationDate"],
            "DeleteDate": rec["DeleteDate"],
            "Description": rec["Description"],
            "KeyUsage": rec["KeyUsage"],
            "KeySpec": rec["KeySpec"],
            "Origin": "Aliyun_KMS",
            "ProtectionLevel": "SOFTWARE",
            "PrimaryKeyVersion": rec["KeyVersionId"],
            "AutomaticRotation": "Disabled",
            "Creator": ACCOUNT_ID,
            "MaterialExpireTime": "",
            "LastRotationDate": rec["CreationDate"],
        }

    @staticmethod
    def _key_id(params: dict[str, str]) -> str:
        kid = params.get("KeyId")
        if not kid:
            raise _missing("KeyId")
        return kid

    def _region(self, params: dict[str, str]) -> str:
        return params.get("RegionId") or self.region

    def _create_key(self, p: dict[str, str]) -> dict[str, Any]:
        spec = p.get("KeySpec") or "Aliyun_AES_256"
        usage = p.get("KeyUsage") or "ENCRYPT/DECRYPT"
        if spec != "Aliyun_AES_256" or usage != "ENCRYPT/DECRYPT":
            raise KmsApiError(400, "UnsupportedOperation",
                              "This local KMS supports only Aliyun_AES_256 ENCRYPT/DECRYPT keys.")
        rec = self.store.create(None, p.get("Description", ""), spec, usage)
        return {"KeyMetadata": self._metadata(rec, self._region(p))}

    def _describe_key(self, p: dict[str, str]) -> dict[str, Any]:
        return {"KeyMetadata": self._metadata(self.store.get(self._key_id(p)), self._region(p))}

    def _list_keys(self, p: dict[str, str]) -> dict[str, Any]:
        try:
            page = int(p.get("PageNumber") or 1)
            size = int(p.get("PageSize") or 10)
        except ValueError:
            raise _invalid("PageNumber/PageSize") from None
        if page < 1 or not 1 <= size <= 100:
            raise _invalid("PageNumber/PageSize")
        with self.store.lock:
            recs = sorted(self.store.keys.values(), key=lambda r: (r["Seq"], r["KeyId"]))
        chunk = recs[(page - 1) * size: page * size]
        region = self._region(p)
        return {"Keys": {"Key": [{"KeyId": r["KeyId"], "KeyArn": self._metadata(r, region)["Arn"]} for r in chunk]},
                "TotalCount": len(recs), "PageNumber": page, "PageSize": size}

    def _enable_key(self, p: dict[str, str]) -> dict[str, Any]:
        rec = self.store.get(self._key_id(p))
        if rec["KeyState"] == PENDING_DELETION:
            usable(rec)
        self.store.set_state(rec["KeyId"], ENABLED)
        return {}

    def _disable_key(self, p: dict[str, str]) -> dict[str, Any]:
        rec = self.store.get(self._key_id(p))
        if rec["KeyState"] == PENDING_DELETION:
            usable(rec)
        self.store.set_state(rec["KeyId"], DISABLED)
        return {}

    def _schedule_key_deletion(self, p: dict[str, str]) -> dict[str, Any]:
        kid = self.store.get(self._key_id(p))["KeyId"]
        days_s = p.get("PendingWindowInDays")
        if not days_s:
            raise _missing("PendingWindowInDays")
        try:
            days = int(days_s)
        except ValueError:
            raise _invalid("PendingWindowInDays") from None
        if not 7 <= days <= 366:
            raise _invalid("PendingWindowInDays")
        self.schedule_key_deletion(kid, days)
        return {}

    def _cancel_key_deletion(self, p: dict[str, str]) -> dict[str, Any]:
        rec = self.store.get(self._key_id(p))
        if rec["KeyState"] != PENDING_DELETION:
            raise KmsApiError(409, "Rejected.Unexpected", "The key is not pending deletion.")
        self.store.set_state(rec["KeyId"], ENABLED)
        return {}

    def _generate_data_key(self, p: dict[str, str]) -> dict[str, Any]:
        rec = self.store.get(self._key_id(p))
        context = canonical_context(p.get("EncryptionContext"))
        spec = p.get("KeySpec") or ""
        if spec not in ("", "AES_256", "AES_128"):
            raise _invalid("KeySpec")
        n = 16 if spec == "AES_128" else 32
        if p.get("NumberOfBytes"):
            try:
                n = int(p["NumberOfBytes"])
            except ValueError:
                raise _invalid("NumberOfBytes") from None
            if not 1 <= n <= 1024:
                raise _invalid("NumberOfBytes")
        usable(rec)
        plaintext = base64.b64encode(os.urandom(n)).decode()
        return {"KeyId": rec["KeyId"], "KeyVersionId": rec["KeyVersionId"],
                "CiphertextBlob": self._seal(rec, plaintext, context), "Plaintext": plaintext}

    def _encrypt(self, p: dict[str, str]) -> dict[str, Any]:
        rec = self.store.get(self._key_id(p))
        if "Plaintext" not in p:
            raise _missing("Plaintext")
        plaintext = p["Plaintext"]
        if len(plaintext.encode("utf-8")) > MAX_ENCRYPT_PLAINTEXT:
            raise _invalid("Plaintext", "It is longer than 6 KB.")
        context = canonical_context(p.get("EncryptionContext"))
        usable(rec)
        return {"KeyId": rec["KeyId"], "KeyVersionId": rec["KeyVersionId"],
                "CiphertextBlob": self._seal(rec, plaintext, context)}

    def _decrypt(self, p: dict[str, str]) -> dict[str, Any]:
        blob = p.get("CiphertextBlob")
        if not blob:
            raise _missing("CiphertextBlob")
        context = canonical_context(p.get("EncryptionContext"))
        rec, plaintext = self._open(blob, context)
        return {"KeyId": rec["KeyId"], "KeyVersionId": rec["KeyVersionId"], "Plaintext": plaintext}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.open_connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()

    def close_all(self) -> None:
        """Cut keep-alive connections too, so a stopped server really answers nothing more."""
        with self.conn_lock:
            conns = list(self.open_connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler; all logic is in ``KmsServer.handle``."""

    kms: KmsServer
    protocol_version = "HTTP/1.1"
    server_version = "ossencfs-local-kms"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request logs
        pass

    def setup(self) -> None:
        super().setup()
        srv: _Server = self.server  # type: ignore[assignment]
        with srv.conn_lock:
            srv.open_connections.add(self.connection)

    def finish(self) -> None:
        srv: _Server = self.server  # type: ignore[assignment]
        with srv.conn_lock:
            srv.open_connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _serve(self) -> None:
        if self.kms.outage:
            if self.kms.outage == "hang":
                self.kms._outage_over.wait()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self.send_error(413 if length > 0 else 400)
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        params: dict[str, str] = {}
        if parts.path not in ("/", ""):
            status, doc = 404, {"RequestId": str(uuid.uuid4()).upper(), "Code": "InvalidAction.NotFound",
                                "Message": "Specified api is not found, please check your url and method."}
        else:
            params.update(parse_qsl(parts.query, keep_blank_values=True))
            ctype = (self.headers.get("Content-Type") or "").lower()
            if body and "application/x-www-form-urlencoded" in ctype:
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            status, doc = self.kms.handle(self.command, params)
        out = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("x-acs-request-id", doc.get("RequestId", ""))
        self.end_headers()
        self.wfile.write(out)

    do_POST = _serve
    do_GET = _serve
