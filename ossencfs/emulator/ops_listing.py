"""ListObjects V1/V2 over the in-memory sorted key index (SPEC D.7): byte order, delimiters,
truncation tokens, encoding-type=url.
"""
from __future__ import annotations

from typing import Callable

from .storage import Entry, BucketState
from .xmlout import OssError, XML_HEAD, el, iso8601, url_enc
from .ops_base import OWNER_ID, Ctx, Resp, OpsBase, _truthy


class ListingOps(OpsBase):
    """Listings never touch the disk: they walk the sorted key index of the bucket."""

    def _scan(self, b: BucketState, prefix: str, after: str, delimiter: str, max_keys: int
              ) -> tuple[list[Entry], list[str], bool, str]:
        """Objects and common prefixes after ``after`` in byte order; (objs, prefixes, truncated, last)."""
        objs: list[Entry] = []
        prefixes: list[str] = []
        last = ""
        if after and after >= prefix:
            it = b.iter_from(after, False)
        else:
            it = b.iter_from(prefix, True)
        count = 0
        while True:
            key = next(it, None)
            if key is None:
                return objs, prefixes, False, last
            if not key.startswith(prefix):
                return objs, prefixes, False, last
            if delimiter:
                i = key.find(delimiter, len(prefix))
                if i >= 0:
                    cp = key[:i + len(delimiter)]
                    if after and cp <= after:
                        it = b.skip_past_prefix(cp)
                        continue
                    if count >= max_keys:
                        return objs, prefixes, True, last
                    prefixes.append(cp)
                    count += 1
                    last = cp
                    it = b.skip_past_prefix(cp)
                    continue
            e = self.st.lookup(b, key)
            if e is None:
                continue
            if count >= max_keys:
                return objs, prefixes, True, last
            objs.append(e)
            count += 1
            last = key

    def _contents(self, e: Entry, enc: Callable[[str], str], owner: bool) -> str:
        s = ("<Contents>" + el("Key", enc(e.key)) + el("LastModified", iso8601(e.mtime)) +
             el("ETag", f'"{e.etag}"') + el("Type", e.type) + el("Size", e.size) +
             el("StorageClass", e.storage_class))
        if owner:
            s += f"<Owner><ID>{OWNER_ID}</ID><DisplayName>{OWNER_ID}</DisplayName></Owner>"
        return s + "</Contents>"

    def list_objects(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        p = ctx.params
        v2 = p.get("list-type") == "2"
        prefix, delimiter = p.get("prefix", ""), p.get("delimiter", "")
        max_keys = self._max(p, "max-keys", 100, 1000)
        url = p.get("encoding-type", "") == "url"
        enc: Callable[[str], str] = url_enc if url else (lambda s: s)
        if v2:
            token = p.get("continuation-token", "")
            if token:
                try:
                    after = bytes.fromhex(token).decode("utf-8")
                except ValueError:
                    raise OssError(400, "InvalidArgument", "The continuation token provided is incorrect.",
                                   ArgumentName="continuation-token", ArgumentValue=token) from None
            else:
                after = p.get("start-after", "")
        else:
            after = p.get("marker", "")
        objs, prefixes, truncated, last = self._scan(b, prefix, after, delimiter, max_keys)
        out = [XML_HEAD, "<ListBucketResult>", el("Name", b.name), el("Prefix", enc(prefix))]
        if v2:
            out += [el("MaxKeys", max_keys), el("Delimiter", enc(delimiter))]
            if p.get("start-after"):
                out.append(el("StartAfter", enc(p["start-after"])))
            if p.get("continuation-token"):
                out.append(el("ContinuationToken", p["continuation-token"]))
            if url:
                out.append(el("EncodingType", "url"))
            out.append(el("IsTruncated", "true" if truncated else "false"))
            if truncated:
                out.append(el("NextContinuationToken", last.encode("utf-8").hex()))
            out.append(el("KeyCount", len(objs) + len(prefixes)))
        else:
            out += [el("Marker", enc(after)), el("MaxKeys", max_keys), el("Delimiter", enc(delimiter))]
            if url:
                out.append(el("EncodingType", "url"))
            out.append(el("IsTruncated", "true" if truncated else "false"))
            if truncated:
                out.append(el("NextMarker", enc(last)))
        owner = (not v2) or _truthy(p.get("fetch-owner"))
        for e in objs:
            out.append(self._contents(e, enc, owner))
        for cp in prefixes:
            out.append("<CommonPrefixes>" + el("Prefix", enc(cp)) + "</CommonPrefixes>")
        out.append("</ListBucketResult>")
        return self._xml(out)
