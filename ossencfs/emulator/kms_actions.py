"""The local KMS's actions (RPC API 2016-01-20): key management (CreateKey, DescribeKey,
ListKeys, EnableKey, DisableKey, ScheduleKeyDeletion, CancelKeyDeletion) and the cryptographic
operations (GenerateDataKey, Encrypt, Decrypt, ReEncrypt).

Why it exists: what each action checks and answers, apart from how requests arrive and are
authenticated (``kms.py``, ``kms_http.py``, ``kms_auth.py``), where keys live (``kms_keys.py``)
and how blobs are made (``kms_crypto.py``).
"""
from __future__ import annotations

import base64
import os
from typing import Callable

from .kms_crypto import canonical_context, open_blob, seal
from .kms_errors import KmsApiError, invalid, missing
from .kms_keys import DISABLED, ENABLED, PENDING_DELETION, KeyRecord, KeyStore, usable

ACCOUNT_ID = "1234567890123456"
MAX_ENCRYPT_PLAINTEXT = 6144      # bytes (KMS Encrypt limit)

JsonDoc = dict[str, object]       # a JSON answer document
Action = Callable[[dict[str, str]], JsonDoc]


class KmsActions:
    """The actions over one key store; ``region`` is the RegionId when a request names none."""

    def __init__(self, store: KeyStore, region: str) -> None:
        self.store = store
        self.region = region

    def table(self) -> dict[str, Action]:
        """Action name -> implementation (request parameters -> answer without RequestId)."""
        return {
            "CreateKey": self._create_key, "DescribeKey": self._describe_key, "ListKeys": self._list_keys,
            "EnableKey": self._enable_key, "DisableKey": self._disable_key,
            "ScheduleKeyDeletion": self._schedule_key_deletion, "CancelKeyDeletion": self._cancel_key_deletion,
            "GenerateDataKey": self._generate_data_key, "Encrypt": self._encrypt, "Decrypt": self._decrypt,
            "ReEncrypt": self._re_encrypt,
        }

    def _metadata(self, rec: KeyRecord, region: str) -> JsonDoc:
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
            raise missing("KeyId")
        return kid

    def _region(self, params: dict[str, str]) -> str:
        return params.get("RegionId") or self.region

    def _create_key(self, p: dict[str, str]) -> JsonDoc:
        spec = p.get("KeySpec") or "Aliyun_AES_256"
        usage = p.get("KeyUsage") or "ENCRYPT/DECRYPT"
        if spec != "Aliyun_AES_256" or usage != "ENCRYPT/DECRYPT":
            raise KmsApiError(400, "UnsupportedOperation",
                              "This local KMS supports only Aliyun_AES_256 ENCRYPT/DECRYPT keys.")
        rec = self.store.create(None, p.get("Description", ""), spec, usage)
        return {"KeyMetadata": self._metadata(rec, self._region(p))}

    def _describe_key(self, p: dict[str, str]) -> JsonDoc:
        return {"KeyMetadata": self._metadata(self.store.get(self._key_id(p)), self._region(p))}

    def _list_keys(self, p: dict[str, str]) -> JsonDoc:
        try:
            page = int(p.get("PageNumber") or 1)
            size = int(p.get("PageSize") or 10)
        except ValueError:
            raise invalid("PageNumber/PageSize") from None
        if page < 1 or not 1 <= size <= 100:
            raise invalid("PageNumber/PageSize")
        with self.store.lock:
            recs = sorted(self.store.keys.values(), key=lambda r: (r["Seq"], r["KeyId"]))
        chunk = recs[(page - 1) * size: page * size]
        region = self._region(p)
        return {"Keys": {"Key": [{"KeyId": r["KeyId"], "KeyArn": self._metadata(r, region)["Arn"]} for r in chunk]},
                "TotalCount": len(recs), "PageNumber": page, "PageSize": size}

    def _enable_key(self, p: dict[str, str]) -> JsonDoc:
        return self._switch(p, ENABLED)

    def _disable_key(self, p: dict[str, str]) -> JsonDoc:
        return self._switch(p, DISABLED)

    def _switch(self, p: dict[str, str], state: str) -> JsonDoc:
        """EnableKey/DisableKey: a key pending deletion is refused as ``usable`` refuses it."""
        rec = self.store.get(self._key_id(p))
        if rec["KeyState"] == PENDING_DELETION:
            usable(rec)
        self.store.set_state(rec["KeyId"], state)
        return {}

    def _schedule_key_deletion(self, p: dict[str, str]) -> JsonDoc:
        kid = self.store.get(self._key_id(p))["KeyId"]
        days_s = p.get("PendingWindowInDays")
        if not days_s:
            raise missing("PendingWindowInDays")
        try:
            days = int(days_s)
        except ValueError:
            raise invalid("PendingWindowInDays") from None
        if not 7 <= days <= 366:
            raise invalid("PendingWindowInDays")
        self.store.schedule_deletion(kid, days)
        return {}

    def _cancel_key_deletion(self, p: dict[str, str]) -> JsonDoc:
        rec = self.store.get(self._key_id(p))
        if rec["KeyState"] != PENDING_DELETION:
            raise KmsApiError(409, "Rejected.Unexpected", "The key is not pending deletion.")
        self.store.set_state(rec["KeyId"], ENABLED)
        return {}

    def _generate_data_key(self, p: dict[str, str]) -> JsonDoc:
        rec = self.store.get(self._key_id(p))
        context = canonical_context(p.get("EncryptionContext"))
        spec = p.get("KeySpec") or ""
        if spec not in ("", "AES_256", "AES_128"):
            raise invalid("KeySpec")
        n = 16 if spec == "AES_128" else 32
        if p.get("NumberOfBytes"):
            try:
                n = int(p["NumberOfBytes"])
            except ValueError:
                raise invalid("NumberOfBytes") from None
            if not 1 <= n <= 1024:
                raise invalid("NumberOfBytes")
        usable(rec)
        plaintext = base64.b64encode(os.urandom(n)).decode()
        return {"KeyId": rec["KeyId"], "KeyVersionId": rec["KeyVersionId"],
                "CiphertextBlob": seal(rec, plaintext, context), "Plaintext": plaintext}

    def _encrypt(self, p: dict[str, str]) -> JsonDoc:
        rec = self.store.get(self._key_id(p))
        if "Plaintext" not in p:
            raise missing("Plaintext")
        plaintext = p["Plaintext"]
        if len(plaintext.encode("utf-8")) > MAX_ENCRYPT_PLAINTEXT:
            raise invalid("Plaintext", "It is longer than 6 KB.")
        context = canonical_context(p.get("EncryptionContext"))
        usable(rec)
        return {"KeyId": rec["KeyId"], "KeyVersionId": rec["KeyVersionId"],
                "CiphertextBlob": seal(rec, plaintext, context)}

    def _decrypt(self, p: dict[str, str]) -> JsonDoc:
        blob = p.get("CiphertextBlob")
        if not blob:
            raise missing("CiphertextBlob")
        context = canonical_context(p.get("EncryptionContext"))
        rec, plaintext = open_blob(self.store, blob, context)
        return {"KeyId": rec["KeyId"], "KeyVersionId": rec["KeyVersionId"], "Plaintext": plaintext}

    def _re_encrypt(self, p: dict[str, str]) -> JsonDoc:
        """ReEncrypt of a symmetric-key blob: Decrypt under SourceEncryptionContext, then
        Encrypt under DestinationKeyId and DestinationEncryptionContext; the plaintext never
        leaves the server. Answer: CiphertextBlob, KeyId and KeyVersionId of the destination
        key (https://www.alibabacloud.com/help/en/kms/key-management-service/developer-reference/
        api-kms-2016-01-20-reencrypt). SourceKeyId/SourceEncryptionAlgorithm are for
        asymmetric keys, which this KMS does not make, so they are refused."""
        blob = p.get("CiphertextBlob")
        if not blob:
            raise missing("CiphertextBlob")
        dest_id = p.get("DestinationKeyId")
        if not dest_id:
            raise missing("DestinationKeyId")
        if p.get("SourceKeyId") or p.get("SourceEncryptionAlgorithm"):
            raise KmsApiError(400, "UnsupportedOperation",
                              "This local KMS has no asymmetric keys to re-encrypt from.")
        dest = self.store.get(dest_id)
        _src, plaintext = open_blob(self.store, blob, canonical_context(p.get("SourceEncryptionContext")))
        usable(dest)
        sealed = seal(dest, plaintext, canonical_context(p.get("DestinationEncryptionContext")))
        return {"KeyId": dest["KeyId"], "KeyVersionId": dest["KeyVersionId"], "CiphertextBlob": sealed}
