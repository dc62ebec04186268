"""``ossencfs migrate``: encrypt plain objects in place into the SDK format.

Per object: HEAD; an object with any CSE header is skipped (already encrypted, or damaged:
``verify`` reports those), as is an Encryption SDK object (Java layout: its metadata; Python
layout: one ranged GET finds its DER message, unless ``esdk`` is None), and directory markers (keys ending in ``/``) and symlinks, which
other clients read as they are. A plain object is read with ranged GETs pinned to its ETag,
encrypted under a fresh data key of the first configured master key and uploaded over
itself (single PUT or multipart) with its user metadata (POSIX metadata included) and
standard headers; a HEAD right before the PUT/Complete skips an object changed meanwhile.
The plaintext length and, for a single-PUT object, its MD5 (the ETag) are recorded as
unencrypted-content-length/-md5 (SPEC A.7), which ``verify --deep`` checks.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from ..envelope import format as fmt
from ..envelope import esdk as esdk_format
from ..errors import ConflictError, FormatError, NotFoundError
from ..esdk_objects import EsdkObjects
from ..objects import EncryptedObjects, kept_headers
from ..store import ObjectInfo
from .walk import DONE, SKIPPED, WOULD, Outcome

ENCRYPTED = "already encrypted"
MARKER = "directory marker"
SYMLINK = "symlink"
CHANGED = "changed since it was read"
GONE = "deleted since it was listed"
ESDK = "esdk object (not rewritten)"
_HEX_MD5 = re.compile(r"^[0-9A-Fa-f]{32}$")


@dataclass
class Migration:
    objects: EncryptedObjects       # its keyring's first key wraps the new data keys
    dry_run: bool = False
    parallel: int = 4               # ranged GETs in flight per object
    esdk: EsdkObjects | None = None     # finds Python-layout Encryption SDK objects

    async def __call__(self, listed: ObjectInfo) -> Outcome:
        if listed.key.endswith("/"):
            return Outcome(listed.key, SKIPPED, MARKER)
        if listed.object_type == "Symlink":
            return Outcome(listed.key, SKIPPED, SYMLINK)
        info = await self.objects.store.head(listed.key)
        if info is None:
            return Outcome(listed.key, SKIPPED, GONE)
        if fmt.is_encrypted(info.headers):
            return Outcome(info.key, SKIPPED, ENCRYPTED)
        if await self._is_esdk(info):
            return Outcome(info.key, SKIPPED, ESDK)
        if self.dry_run:
            return Outcome(info.key, WOULD, "encrypt", nbytes=info.size)
        reader = await self.objects.open_reader(info.key, info)
        try:
            await self.objects.write(info.key, reader.chunks(parallelism=self.parallel),
                                     info.size, kept_headers(info.headers), if_match=info.etag,
                                     crypto_extra=plaintext_facts(info))
        except ConflictError:
            return Outcome(info.key, SKIPPED, CHANGED)
        except NotFoundError:
            return Outcome(info.key, SKIPPED, GONE)
        return Outcome(info.key, DONE, "encrypted", nbytes=info.size)

    async def _is_esdk(self, info: ObjectInfo) -> bool:
        """An Encryption SDK object, or one that starts like its message (never rewritten)."""
        if esdk_format.has_java_headers(info.headers):
            return True
        if self.esdk is None:
            return False
        try:
            return await self.esdk.layout(info) is not None
        except FormatError:
            return True


def plaintext_facts(info: ObjectInfo) -> dict[str, str]:
    """unencrypted-content-md5 from a Normal object's ETag (its content MD5); the length is
    recorded by every upload (``EncryptedObjects.upload``)."""
    if info.object_type == "Normal" and _HEX_MD5.match(info.etag):
        return {fmt.H_UNENC_MD5: base64.b64encode(bytes.fromhex(info.etag)).decode("ascii")}
    return {}
