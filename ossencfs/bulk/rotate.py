"""``ossencfs rotate``: wrap each object's data key under a new master key; content untouched.

Per object (docs/bulk-tools.md): HEAD; an object a source key opens gets the new key headers,
computed by KMS ReEncrypt where it fits (a current-format KMS header set, a KMS target: the
data key never leaves KMS) and otherwise by unwrap + wrap as the SDK does (RSA, legacy sets,
KMS <-> RSA). The object is then re-uploaded with its unchanged ciphertext
(``EncryptedObjects.replace_crypto``: single PUT, or multipart fed by parallel ranged GETs),
since OSS refuses metadata changes of CSE objects by CopyObject (SPEC D.13). A HEAD right
before the PUT/Complete skips an object changed meanwhile. Until its PUT lands an object keeps
its old headers, so at every moment each object opens with the old or the new key.
"""
from __future__ import annotations

from dataclasses import dataclass

import trio

from ..envelope import format as fmt
from ..envelope.keys import KeyRing, MasterKey
from ..errors import ConflictError, NotFoundError
from ..esdk_objects import EsdkObjects
from ..objects import EncryptedObjects, keep_layout
from ..store import ObjectInfo
from .classify import DAMAGED, NO_KEY, Inspection, inspect, open_data_key
from .walk import DONE, FAILED, SKIPPED, WOULD, Outcome

ALREADY = "already under the target key"
OTHER_KEY = "not under a configured key"
PLAIN = "plain object"
CHANGED = "changed since it was read"
GONE = "deleted since it was listed"


@dataclass
class Rotation:
    objects: EncryptedObjects       # its keyring: the source keys
    target: MasterKey
    dry_run: bool = False
    esdk: EsdkObjects | None = None     # finds Encryption SDK objects, which are skipped

    @property
    def keyring(self) -> KeyRing:
        assert self.objects.keyring is not None
        return self.objects.keyring

    async def __call__(self, listed: ObjectInfo) -> Outcome:
        ins = await inspect(self.objects.store, listed, self.keyring, unwrap=False,
                            esdk=self.esdk)
        rec, info = ins.record, ins.info
        if info is None:
            return Outcome(listed.key, SKIPPED, GONE)
        if rec.kind not in ("cse", "cse-legacy"):
            return Outcome(rec.key, SKIPPED, PLAIN if rec.kind == "plain" else
                           f"{rec.kind} object (not re-wrapped)")
        if DAMAGED in rec.problems:
            return Outcome(rec.key, FAILED, DAMAGED, rec.detail)
        target = target_identity(self.target)
        if rec.master == target:
            return Outcome(rec.key, SKIPPED, ALREADY)
        if rec.master is not None and rec.master not in self._sources():
            return Outcome(rec.key, SKIPPED, OTHER_KEY)     # a KMS blob names another CMK
        if not self._reencrypt_fits(ins):
            await open_data_key(ins, self.keyring)
            if rec.master == target:
                return Outcome(rec.key, SKIPPED, ALREADY)
            if ins.material is None:
                if rec.problems and rec.problems[-1] != NO_KEY:
                    return Outcome(rec.key, FAILED, rec.problems[-1], rec.detail)
                return Outcome(rec.key, SKIPPED, OTHER_KEY)
            if rec.master not in self._sources():
                # a KMS blob of a CMK not given: KMS opens it for any key with access
                return Outcome(rec.key, SKIPPED, OTHER_KEY)
        if self.dry_run:
            return Outcome(rec.key, WOULD, f"re-wrap {rec.master} -> {target}", nbytes=info.size)
        new = await trio.to_thread.run_sync(self._new_headers, ins)
        try:
            await self.objects.replace_crypto(info, new)
        except ConflictError:
            return Outcome(rec.key, SKIPPED, CHANGED)
        except NotFoundError:
            return Outcome(rec.key, SKIPPED, GONE)
        return Outcome(rec.key, DONE, f"{rec.master} -> {target}", nbytes=info.size)

    def _reencrypt_fits(self, ins: Inspection) -> bool:
        """A current-format KMS object of a configured source CMK, to a KMS target: KMS
        ReEncrypt moves its blobs without the data key leaving KMS."""
        h = ins.headers
        return (callable(getattr(self.target, "reencrypt", None)) and h is not None
                and not h.legacy and h.wrap_alg == fmt.WRAP_KMS
                and ins.record.master in self._sources())

    def _sources(self) -> set[str]:
        return {target_identity(m) for m in self.keyring.masters}

    def _new_headers(self, ins: Inspection) -> fmt.CryptoHeaders:
        """BLOCKING (KMS calls). ReEncrypt where it fits; unwrap + wrap as the SDK otherwise."""
        old = ins.headers
        assert old is not None
        if ins.material is None:
            source = next(m for m in self.keyring.masters
                          if target_identity(m) == ins.record.master)
            new = self.target.reencrypt(old, getattr(source, "context", None))  # type: ignore[attr-defined]
            if new is not None:
                return keep_layout(new, old)
            ins.material, ins.opener = self.keyring.open_with(old, object_name=ins.record.key)
        return keep_layout(self.target.wrap(ins.material), old)


def target_identity(master: MasterKey) -> str:
    """What ``Record.master`` says of objects under ``master``: ``kms:<cmk>`` or its name."""
    cmk = getattr(master, "cmk_id", None)
    return f"kms:{cmk}" if cmk else master.name
