"""The local KMS's customer master keys (CMKs) and recorded blobs, in memory and on disk.

Why it exists: keys must survive a restart (a blob made before must decrypt after), and their
secret material must never be lost or readable by others, so each key is one JSON file in
``<data_dir>/kms-keys/<key id>.json`` written atomically and durably (mode 0600). Recorded blobs
(real-KMS answers for vectors no local key can decrypt) are in ``<data_dir>/kms-recorded.json``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import re
import threading
import time
import uuid
from typing import TypedDict, cast

from ..atomicfile import replace_file
from .kms_errors import KmsApiError, invalid, key_not_found

ENABLED, DISABLED, PENDING_DELETION = "Enabled", "Disabled", "PendingDeletion"
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


class KeyRecord(TypedDict):
    """One CMK as stored: ids, state, dates (ISO 8601 UTC, DeleteDate "" unless pending
    deletion), and ``Material``, the base64 of its 32-byte AES-256 secret."""
    KeyId: str
    KeyVersionId: str
    Material: str
    KeyState: str
    CreationDate: str
    DeleteDate: str
    Description: str
    KeySpec: str
    KeyUsage: str
    Seq: int                   # creation order (ns), the order ListKeys answers in


class RecordedBlob(TypedDict):
    """The answer Decrypt gives for one exact foreign blob; Context None accepts any context."""
    Plaintext: str
    KeyId: str
    Context: str | None


def now_iso(delta: _dt.timedelta = _dt.timedelta()) -> str:
    """The time now (plus ``delta``) as KMS writes dates: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return (_dt.datetime.now(_dt.timezone.utc) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


class KeyStore:
    """The CMKs and recorded blobs, in memory and mirrored on disk. Thread-safe."""

    def __init__(self, data_dir: str) -> None:
        self.dir = os.path.join(data_dir, "kms-keys")
        self.recorded_path = os.path.join(data_dir, "kms-recorded.json")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.lock = threading.RLock()
        self.keys: dict[str, KeyRecord] = {}
        self.recorded: dict[str, RecordedBlob] = {}
        for name in os.listdir(self.dir):
            if name.endswith(".json") and not name.startswith("."):
                with open(os.path.join(self.dir, name), "rb") as f:
                    rec = cast(KeyRecord, json.loads(f.read()))
                self.keys[rec["KeyId"]] = rec
        if os.path.exists(self.recorded_path):
            with open(self.recorded_path, "rb") as f:
                self.recorded = cast(dict[str, RecordedBlob], json.loads(f.read()))

    def _save(self, rec: KeyRecord) -> None:
        # key material is secret: 0600, and durable so a crash never loses a key
        replace_file(os.path.join(self.dir, rec["KeyId"] + ".json"),
                     json.dumps(rec, indent=1, sort_keys=True).encode(), durable=True)

    def create(self, key_id: str | None = None, description: str = "",
               key_spec: str = "Aliyun_AES_256", key_usage: str = "ENCRYPT/DECRYPT") -> KeyRecord:
        key_id = key_id or str(uuid.uuid4())
        if not _KEY_ID_RE.match(key_id):
            raise invalid("KeyId")
        rec: KeyRecord = {
            "KeyId": key_id,
            "KeyVersionId": str(uuid.uuid4()),
            "Material": base64.b64encode(os.urandom(32)).decode(),
            "KeyState": ENABLED,
            "CreationDate": now_iso(),
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
        return rec.copy()

    def get(self, key_ref: str) -> KeyRecord:
        """KeyId or key ARN -> record; aliases are not emulated."""
        if key_ref.startswith("alias/"):
            raise KmsApiError(404, "Forbidden.AliasNotFound", f"The specified alias {key_ref} is not found.")
        if key_ref.startswith("acs:kms:") and ":key/" in key_ref:
            key_ref = key_ref.rsplit(":key/", 1)[1]
        with self.lock:
            rec = self.keys.get(key_ref)
        if rec is None:
            raise key_not_found()
        return rec

    def set_state(self, key_ref: str, state: str, delete_date: str = "") -> None:
        with self.lock:
            rec = self.get(key_ref).copy()
            rec["KeyState"] = state
            rec["DeleteDate"] = delete_date
            self._save(rec)
            self.keys[rec["KeyId"]] = rec

    def schedule_deletion(self, key_ref: str, days: int) -> None:
        """PendingDeletion, to be deleted ``days`` days from now."""
        self.set_state(key_ref, PENDING_DELETION, now_iso(_dt.timedelta(days=days)))

    def owner_of(self, text: str) -> KeyRecord | None:
        """The key whose id prefixes a decoded blob (longest id wins, ids may share prefixes)."""
        with self.lock:
            best: KeyRecord | None = None
            for kid, rec in self.keys.items():
                if text.startswith(kid) and (best is None or len(kid) > len(best["KeyId"])):
                    best = rec
        return best

    def add_recorded(self, blob: str, plaintext: str, key_id: str, context: str | None) -> None:
        with self.lock:
            self.recorded[blob] = {"Plaintext": plaintext, "KeyId": key_id, "Context": context}
            replace_file(self.recorded_path,
                         json.dumps(self.recorded, indent=1, sort_keys=True).encode(), durable=True)


def usable(rec: KeyRecord) -> None:
    """Raise the real rejection for a key that exists but may not be used."""
    if rec["KeyState"] == DISABLED:
        raise KmsApiError(409, "Rejected.Disabled", f"The key {rec['KeyId']} is disabled.")
    if rec["KeyState"] == PENDING_DELETION:
        # The real service spells it this way (SPEC C.4).
        raise KmsApiError(409, "Rejetced.PendingDeletion", f"The key {rec['KeyId']} is pending deletion.")
