"""Multipart uploads (SPEC D.9) and the CSE-aware checks real OSS makes on them (SPEC A.4).

Complete does not copy data: the chosen part files become the object's segments.
"""
from __future__ import annotations

import base64
import hashlib
import re
import time
from typing import Callable

from .storage import Entry, BucketState, TempObject, Upload, crc64_combine
from .xmlout import OssError, XML_HEAD, el, iso8601, url_enc
from .ops_base import (MIN_PART, _CHUNK, _CSE, Ctx, Resp, OpsBase, _crc_header, _strip_etag,
                       _meta_headers, _check_key, _copy_source, _check_conditions, _write_guard, _forbid_overwrite,
                       _storage_class, _cse_check_required, _cse_int, _cse_error, parse_xml_body)


class MultipartOps(OpsBase):
    """Metadata is fixed at Initiate and applied at Complete, like OSS."""

    def _upload(self, b: BucketState, ctx: Ctx):
        up = self.st.get_upload(b, ctx.params.get("uploadId", ""))
        if up is None or up.key != ctx.key:
            raise OssError(404, "NoSuchUpload", "The specified upload does not exist.",
                           UploadId=ctx.params.get("uploadId", ""))
        return up

    def init_multipart(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        _check_key(ctx.key)
        headers = _meta_headers(ctx.headers)
        self._content_type(ctx, headers)
        forbid = _forbid_overwrite(ctx.headers)
        sclass = _storage_class(ctx.headers)
        if forbid and self.st.lookup(b, ctx.key) is not None:
            raise OssError(409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten.")
        self._cse_check_init(ctx.headers)
        stored = dict(headers)
        if "x-oss-forbid-overwrite" in ctx.headers:
            stored["x-emu-forbid-overwrite"] = ctx.headers["x-oss-forbid-overwrite"]
        if sclass != "Standard":
            stored["x-emu-storage-class"] = sclass
        up = self.st.init_upload(b, ctx.key, stored)
        url = ctx.params.get("encoding-type", "") == "url"
        out = [XML_HEAD, "<InitiateMultipartUploadResult>", el("Bucket", b.name),
               el("Key", url_enc(ctx.key) if url else ctx.key), el("UploadId", up.upload_id)]
        if url:
            out.append(el("EncodingType", "url"))
        out.append("</InitiateMultipartUploadResult>")
        return self._xml(out)

    def _part_number(self, ctx: Ctx) -> int:
        v = ctx.params.get("partNumber", "")
        try:
            n = int(v)
        except ValueError:
            n = 0
        if not 1 <= n <= 10000:
            raise OssError(400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive.",
                           ArgumentName="partNumber", ArgumentValue=v)
        return n

    def upload_part(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        up = self._upload(b, ctx)
        n = self._part_number(ctx)
        expect = self._cse_check_part(up.headers, ctx.headers, n)
        tmp = self.st.temp()
        try:
            self._stream_body(ctx, tmp)
            if expect is not None and tmp.size != expect:
                # help.aliyun.com/en/oss/user-guide/0005-00000419: checked at UploadPart (the doc's example
                # is an UploadPart); the part number tells whether it is the last part (see _cse_check_part).
                raise _cse_error("0005-00000419", "The part size of a client-side encrypted multipart upload "
                                 "does not match the part size given at InitiateMultipartUpload.")
        except BaseException:
            tmp.discard()
            raise
        e = Entry(ctx.key, tmp.size, tmp.md5_hex, tmp.crc64, time.time(), "Part")
        self._commit_part(b, up, n, tmp, e)
        return Resp(200, [("ETag", f'"{e.etag}"'), *_crc_header(e.crc64),
                          ("Content-MD5", base64.b64encode(bytes.fromhex(e.etag)).decode())])

    def upload_part_copy(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        up = self._upload(b, ctx)
        n = self._part_number(ctx)
        sbucket, skey = _copy_source(ctx)
        sb = self.bucket(ctx, sbucket)
        obj = self.st.open_object(sb, skey)
        if obj is None:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.", Key=skey)
        src = obj.entry
        tmp = self.st.temp()
        try:
            _check_conditions(ctx.headers, src, "x-oss-copy-source-")
            # CSE source (0042-00000309), appendable source, unrestored Archive source; the CopyObject size
            # limit does not apply here (UploadPartCopy is the documented way above it).
            self._check_copy_source(sb.name, src, part_copy=True)
            start, end = 0, src.size - 1
            rng = ctx.headers.get("x-oss-copy-source-range")
            if rng:
                m = re.fullmatch(r"\s*bytes\s*=\s*(\d+)\s*-\s*(\d*)\s*", rng)
                if not m:
                    raise OssError(400, "InvalidArgument", "x-oss-copy-source-range is invalid.",
                                   ArgumentName="x-oss-copy-source-range", ArgumentValue=rng)
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else src.size - 1
                if start > end or end >= src.size:
                    raise OssError(416, "InvalidRange", "The requested range cannot be satisfied.")
            pos = start
            while pos <= end and src.type != "Symlink":
                chunk = obj.pread(pos, min(_CHUNK, end + 1 - pos))
                if not chunk:
                    break
                tmp.write(chunk)
                pos += len(chunk)
        except BaseException:
            tmp.discard()
            raise
        finally:
            obj.close()
        e = Entry(ctx.key, tmp.size, tmp.md5_hex, tmp.crc64, time.time(), "Part")
        self._commit_part(b, up, n, tmp, e)
        return self._xml([XML_HEAD, "<CopyPartResult>", el("LastModified", iso8601(e.mtime)),
                          el("ETag", f'"{e.etag}"'), "</CopyPartResult>"],
                         headers=[("ETag", f'"{e.etag}"'), *_crc_header(e.crc64)])

    def _commit_part(self, b: BucketState, up, n: int, tmp: TempObject, e: Entry) -> None:
        if self.st.get_upload(b, up.upload_id) is None:
            tmp.discard()
            raise OssError(404, "NoSuchUpload", "The specified upload does not exist.", UploadId=up.upload_id)
        try:
            with self.st.key_lock(b.name, up.key):       # not between a Complete's checks and its commit
                self.st.commit_part(b, up, n, tmp, e)
        except KeyError:
            raise OssError(404, "NoSuchUpload", "The specified upload does not exist.",
                           UploadId=up.upload_id) from None

    def complete_multipart(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        up = self._upload(b, ctx)
        body = ctx.body.read(8 << 20)
        with b.lock:
            have = dict(up.parts)
        chosen = _chosen_parts(ctx.headers, body, have, ctx.s3)
        if not chosen:
            raise OssError(400, "MalformedXML", "The XML you provided was not well-formed.")
        self._cse_check_complete(up.headers, [(num, have[num].size) for num in chosen])
        for num in chosen[:-1]:
            if have[num].size < MIN_PART:
                raise OssError(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size.",
                               PartNumber=str(num), MinSizeAllowed=str(MIN_PART))
        headers = dict(up.headers)
        stored_forbid = headers.pop("x-emu-forbid-overwrite", None)
        sclass = headers.pop("x-emu-storage-class", "Standard")
        if "x-oss-forbid-overwrite" in ctx.headers:
            forbid = _forbid_overwrite(ctx.headers)
        else:
            forbid = stored_forbid == "true"
        size, crc, etag = _combined([have[num] for num in chosen])
        e = Entry(ctx.key, size, etag, crc, time.time(), "Multipart", headers, storage_class=sclass)
        with self.st.key_lock(b.name, ctx.key):
            if self.st.get_upload(b, up.upload_id) is None:
                raise OssError(404, "NoSuchUpload", "The specified upload does not exist.", UploadId=up.upload_id)
            with b.lock:
                now = {n: up.parts.get(n) for n in chosen}
            for num in chosen:                    # a part re-uploaded since the check above
                p = now[num]
                if p is None or p.etag != have[num].etag or p.size != have[num].size:
                    raise OssError(400, "InvalidPart", "A part changed while completing.", PartNumber=str(num))
            _write_guard(forbid)(self.st.lookup(b, ctx.key))
            e.segments = self.st.adopt_upload(b, up, chosen)
            self.st.commit(b, self.st.temp(hashing=False), e)
        return self._xml(_complete_result(ctx, b.name, etag), headers=[("ETag", f'"{etag}"'), *_crc_header(crc)])

    def abort_multipart(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        up = self._upload(b, ctx)
        with self.st.key_lock(b.name, ctx.key):          # not while a Complete commits
            self.st.drop_upload(b, up.upload_id)
        return Resp(204)

    def list_parts(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        up = self._upload(b, ctx)
        p = ctx.params
        marker = self._max(p, "part-number-marker", 0, 10000)
        max_parts = self._max(p, "max-parts", 1000, 1000)
        with b.lock:
            nums = sorted(n for n in up.parts if n > marker)
            parts = [(n, up.parts[n]) for n in nums]
        page, truncated = parts[:max_parts], len(parts) > max_parts
        url = p.get("encoding-type", "") == "url"
        out = [XML_HEAD, "<ListPartsResult>", el("Bucket", b.name),
               el("Key", url_enc(up.key) if url else up.key), el("UploadId", up.upload_id),
               el("StorageClass", "Standard"), el("PartNumberMarker", marker),
               el("NextPartNumberMarker", page[-1][0] if page else marker), el("MaxParts", max_parts),
               el("IsTruncated", "true" if truncated else "false")]
        if url:
            out.append(el("EncodingType", "url"))
        for n, e in page:
            out.append("<Part>" + el("PartNumber", n) + el("LastModified", iso8601(e.mtime)) +
                       el("ETag", f'"{e.etag}"') +
                       (el("HashCrc64ecma", e.crc64) if e.crc64 is not None else "") + el("Size", e.size) + "</Part>")
        out.append("</ListPartsResult>")
        return self._xml(out)

    def list_uploads(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        p = ctx.params
        prefix, delimiter = p.get("prefix", ""), p.get("delimiter", "")
        key_marker, id_marker = p.get("key-marker", ""), p.get("upload-id-marker", "")
        max_up = self._max(p, "max-uploads", 1000, 1000)
        url = p.get("encoding-type", "") == "url"
        enc: Callable[[str], str] = url_enc if url else (lambda s: s)
        with b.lock:
            ups = sorted(b.uploads.values(), key=lambda u: (u.key, u.upload_id))
        items = _upload_items(ups, prefix, delimiter, key_marker, id_marker)
        page, truncated = items[:max_up], len(items) > max_up
        next_key = next_id = ""
        if truncated and page:
            last = page[-1]
            if isinstance(last, Upload):
                next_key, next_id = last.key, last.upload_id
            else:
                next_key = last
        out = [XML_HEAD, "<ListMultipartUploadsResult>", el("Bucket", b.name), el("KeyMarker", enc(key_marker)),
               el("UploadIdMarker", id_marker), el("NextKeyMarker", enc(next_key)),
               el("NextUploadIdMarker", next_id), el("Delimiter", enc(delimiter)), el("Prefix", enc(prefix)),
               el("MaxUploads", max_up), el("IsTruncated", "true" if truncated else "false")]
        if url:
            out.append(el("EncodingType", "url"))
        for it in page:
            if isinstance(it, Upload):
                out.append("<Upload>" + el("Key", enc(it.key)) + el("UploadId", it.upload_id) +
                           el("StorageClass", "Standard") + el("Initiated", iso8601(it.initiated)) + "</Upload>")
            else:
                out.append("<CommonPrefixes>" + el("Prefix", enc(it)) + "</CommonPrefixes>")
        out.append("</ListMultipartUploadsResult>")
        return self._xml(out)

    # ---- client-side-encryption awareness (SPEC A.4, D.13; help.aliyun.com/en/oss/user-guide/0005-000004xx) ----
    def _cse_check_init(self, h: dict[str, str]) -> None:
        """Initiate with CSE headers: key/start/cek-alg/wrap-alg (0005-00000401..404), data-size (-406, -408)
        and part-size (-407, -409) are required."""
        if not _cse_check_required(h):
            return
        _cse_int(h, "data-size", "0005-00000406", "0005-00000408")
        _cse_int(h, "part-size", "0005-00000407", "0005-00000409")

    def _cse_check_part(self, init: dict[str, str], h: dict[str, str], n: int) -> int | None:
        """UploadPart checks; returns the exact size this part must have (0005-00000419) or None.

        Only parts that carry CSE headers are checked (Java's encryption client sends none on UploadPart and
        works against real OSS, SPEC A.4). Such a part must carry the full set incl. data-size and part-size
        (0005-00000401..407), repeat Initiate's part-size (-418) and start (-413). Size (-419): every part but
        the last is exactly part-size; data-size tells which part number is the last, and the last part must be
        the remainder (stricter reading; exactly what oss2 CryptoBucket and Go send).
        """
        if not _cse_check_required(h):
            return None
        data = _cse_int(h, "data-size", "0005-00000406", "0005-00000408")
        part = _cse_int(h, "part-size", "0005-00000407", "0005-00000409")
        if h.get(_CSE + "part-size") != init.get(_CSE + "part-size"):
            raise _cse_error("0005-00000418", f"The {_CSE}part-size header differs from the one given at "
                             "InitiateMultipartUpload.")
        if h.get(_CSE + "start") != init.get(_CSE + "start"):
            raise _cse_error("0005-00000413", f"The {_CSE}start header differs from the one given at "
                             "InitiateMultipartUpload.")
        if part <= 0:
            return None
        last = max(1, -(-data // part))
        if n < last:
            return part
        if n == last:
            return data - (last - 1) * part
        return None                                   # beyond data-size: refused at Complete (0005-00000411)

    def _cse_check_complete(self, init: dict[str, str], parts: list[tuple[int, int]]) -> None:
        """Complete of a CSE upload: at most ceil(data-size/part-size) parts (0005-00000411) and every part
        but the last exactly part-size (0005-00000419; also catches parts sent without CSE headers)."""
        if not any(k.startswith(_CSE) for k in init):
            return
        data = _cse_int(init, "data-size", "0005-00000406", "0005-00000408")
        part = _cse_int(init, "part-size", "0005-00000407", "0005-00000409")
        if part and len(parts) > max(1, -(-data // part)):
            raise _cse_error("0005-00000411", "The number of parts exceeds the number that data-size and "
                             "part-size allow.")
        for num, size in parts[:-1]:
            if size != part:
                raise _cse_error("0005-00000419", "The part size of a client-side encrypted multipart upload "
                                 "does not match the part size given at InitiateMultipartUpload.")


def _chosen_parts(headers: dict[str, str], body: bytes, have: dict[int, Entry],
                  s3: bool = False) -> list[int]:
    """The part numbers a CompleteMultipartUpload names: every uploaded part with
    ``x-oss-complete-all: yes`` (body must be empty), else the body's <Part> list, which must be
    in ascending order and name uploaded parts by their ETags."""
    if headers.get("x-oss-complete-all", "").lower() == "yes":
        if body.strip():
            raise OssError(400, "InvalidArgument", "Body must be empty with x-oss-complete-all.")
        return sorted(have)
    root = parse_xml_body(body, s3=s3)
    chosen: list[int] = []
    prev = 0
    for p in root.findall("Part"):
        try:
            num = int((p.findtext("PartNumber") or "").strip())
        except ValueError:
            raise OssError(400, "MalformedXML", "PartNumber is not an integer.") from None
        etag = _strip_etag(p.findtext("ETag") or "")
        if num <= prev:
            raise OssError(400, "InvalidPartOrder",
                           "The list of parts was not in ascending order. Parts must be ordered by part number.")
        prev = num
        part = have.get(num)
        if part is None or part.etag != etag:
            raise OssError(400, "InvalidPart", "One or more of the specified parts could not be found or "
                           "the specified entity tag might not have matched the part's entity tag.",
                           PartNumber=str(num), ETag=etag)
        chosen.append(num)
    return chosen


def _combined(parts: list[Entry]) -> tuple[int, int | None, str]:
    """(size, CRC-64 (None when a part's is unknown), multipart ETag) of the object made of ``parts``."""
    crc: int | None = 0
    size, digests = 0, b""
    for part in parts:
        crc = crc64_combine(crc, part.crc64, part.size) if size else part.crc64
        size += part.size
        digests += bytes.fromhex(part.etag)
    return size, crc, hashlib.md5(digests).hexdigest().upper() + f"-{len(parts)}"


def _complete_result(ctx: Ctx, bucket: str, etag: str) -> list[str]:
    """The CompleteMultipartUploadResult document, as XML pieces."""
    url = ctx.params.get("encoding-type", "") == "url"
    k = url_enc(ctx.key) if url else ctx.key
    out = [XML_HEAD, "<CompleteMultipartUploadResult>"]
    if url:
        out.append(el("EncodingType", "url"))
    out += [el("Location", f"http://{ctx.host}/{bucket}/{k}"), el("Bucket", bucket), el("Key", k),
            el("ETag", f'"{etag}"'), "</CompleteMultipartUploadResult>"]
    return out


def _upload_items(ups: list[Upload], prefix: str, delimiter: str, key_marker: str, id_marker: str
                  ) -> list[Upload | str]:
    """ListMultipartUploads' entries after the markers, in order: an upload, or a common prefix
    (a str) standing for the uploads whose keys share it up to the delimiter."""
    items: list[Upload | str] = []
    seen_prefixes: set[str] = set()
    for u in ups:
        if not u.key.startswith(prefix):
            continue
        if key_marker:
            if u.key < key_marker:
                continue
            if u.key == key_marker and (not id_marker or u.upload_id <= id_marker):
                continue
        if delimiter:
            i = u.key.find(delimiter, len(prefix))
            if i >= 0:
                cp = u.key[:i + len(delimiter)]
                if cp in seen_prefixes or (key_marker and cp <= key_marker):
                    continue
                seen_prefixes.add(cp)
                items.append(cp)
                continue
        items.append(u)
    return items
