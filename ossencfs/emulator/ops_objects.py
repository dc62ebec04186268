"""Object operations (SPEC D.6/D.8): Put/Get/Head/Copy/Delete/Append, symlinks, DeleteMultipleObjects.

Bodies are streamed into temporary files; check-and-commit of one key (forbid-overwrite,
If-Match, append position) runs under that key's lock so concurrent writers never interleave.
"""
from __future__ import annotations

import base64
import hashlib
import os
import time
from urllib.parse import unquote_to_bytes
from xml.etree import ElementTree

from .storage import Entry, OpenObject, BucketState, crc64_combine
from .xmlout import OssError, XML_HEAD, el, http_date, iso8601, url_enc
from .ops_base import (Ctx, Resp, OpsBase, _crc_header, _truthy, _meta_headers, _check_key, _copy_source,
                       _check_conditions, _write_guard, parse_range)


class ObjectOps(OpsBase):
    """Writes become visible atomically (temp file + rename); reads keep their descriptors."""

    def put_object(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        _check_key(ctx.key)
        headers = _meta_headers(ctx.headers)
        self._content_type(ctx, headers)
        tmp = self.st.temp()
        try:
            self._stream_body(ctx, tmp)
        except BaseException:
            tmp.discard()
            raise
        e = Entry(ctx.key, tmp.size, tmp.md5_hex, tmp.crc64, time.time(), "Normal", headers,
                  storage_class=ctx.headers.get("x-oss-storage-class", "Standard"))
        self.st.seal(tmp, e)
        with self.st.key_lock(b.name, ctx.key):
            self.st.commit(b, tmp, e, _write_guard(ctx.headers, _truthy(ctx.headers.get("x-oss-forbid-overwrite"))))
        return Resp(200, [("ETag", f'"{e.etag}"'), *_crc_header(e.crc64),
                          ("Content-MD5", base64.b64encode(bytes.fromhex(e.etag)).decode())])

    def append_object(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        _check_key(ctx.key)
        try:
            pos = int(ctx.params.get("position", ""))
        except ValueError:
            raise OssError(400, "InvalidArgument", "position is not valid.", ArgumentName="position") from None
        part = self.st.temp()
        try:
            self._stream_body(ctx, part)
            part.finish(Entry("", part.size, "", 0, 0.0), False)
        except BaseException:
            part.discard()
            raise
        try:
            with self.st.key_lock(b.name, ctx.key):
                cur = self.st.lookup(b, ctx.key)
                size = cur.size if cur else 0
                if cur is not None and cur.type != "Appendable":
                    err = OssError(409, "ObjectNotAppendable", "The object is not appendable.")
                    err.headers["x-oss-next-append-position"] = str(size)
                    raise err
                if pos != size:
                    err = OssError(409, "PositionNotEqualToLength", "Position is not equal to file length.")
                    err.headers["x-oss-next-append-position"] = str(size)
                    raise err
                tmp = self.st.temp(hashing=False)
                try:
                    if cur is not None:
                        obj = self.st.open_object(b, ctx.key)
                        if obj is None:
                            raise OssError(409, "PositionNotEqualToLength", "The object changed.")
                        try:
                            obj.copy_to(tmp, 0, size)
                        finally:
                            obj.close()
                    pfd = os.open(part.path, os.O_RDONLY)
                    try:
                        tmp.copy_from(pfd, 0, part.size)
                    finally:
                        os.close(pfd)
                except BaseException:
                    tmp.discard()
                    raise
                crc = crc64_combine(cur.crc64, part.crc64, part.size) if cur else part.crc64
                etag = hashlib.md5(((cur.etag if cur else "") + part.md5_hex).encode()).hexdigest().upper()
                headers = cur.headers if cur else _meta_headers(ctx.headers)
                if cur is None:
                    self._content_type(ctx, headers)
                e = Entry(ctx.key, size + part.size, etag, crc, time.time(), "Appendable", headers)
                self.st.commit(b, tmp, e)
        finally:
            part.discard()
        return Resp(200, [("ETag", f'"{e.etag}"'), *_crc_header(e.crc64),
                          ("x-oss-next-append-position", str(e.size))])

    def copy_object(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        _check_key(ctx.key)
        sbucket, skey = _copy_source(ctx)
        sb = self.bucket(ctx, sbucket)
        directive = ctx.headers.get("x-oss-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise OssError(400, "InvalidArgument", "x-oss-metadata-directive is invalid.",
                           ArgumentName="x-oss-metadata-directive")
        obj = self.st.open_object(sb, skey)
        if obj is None:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.", Key=skey)
        src = obj.entry
        try:
            _check_conditions(ctx.headers, src, "x-oss-copy-source-")
            if directive == "REPLACE":
                headers = _meta_headers(ctx.headers)
                self._content_type(ctx, headers)
            else:
                headers = dict(src.headers)
            tmp = self.st.temp(hashing=False)
            try:
                if src.type != "Symlink":
                    obj.copy_to(tmp)
            except BaseException:
                tmp.discard()
                raise
        finally:
            obj.close()
        otype = "Normal" if src.type == "Appendable" else src.type
        e = Entry(ctx.key, src.size, src.etag, src.crc64, time.time(), otype, headers, target=src.target,
                  storage_class=ctx.headers.get("x-oss-storage-class", src.storage_class))
        self.st.seal(tmp, e)
        with self.st.key_lock(b.name, ctx.key):
            self.st.commit(b, tmp, e, _write_guard(ctx.headers, _truthy(ctx.headers.get("x-oss-forbid-overwrite"))))
        return self._xml([XML_HEAD, "<CopyObjectResult>", el("ETag", f'"{e.etag}"'),
                          el("LastModified", iso8601(e.mtime)), "</CopyObjectResult>"],
                         headers=[("ETag", f'"{e.etag}"'), *_crc_header(e.crc64)])

    def put_symlink(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        _check_key(ctx.key)
        raw = ctx.headers.get("x-oss-symlink-target")
        if not raw:
            raise OssError(400, "InvalidArgument", "x-oss-symlink-target is missing.", ArgumentName="x-oss-symlink-target")
        try:
            target = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise OssError(400, "InvalidArgument", "x-oss-symlink-target is not valid UTF-8.") from None
        _check_key(target)
        headers = _meta_headers(ctx.headers)
        self._content_type(ctx, headers)
        tb = target.encode("utf-8")
        tmp = self.st.temp(hashing=False)
        e = Entry(ctx.key, len(tb), hashlib.md5(tb).hexdigest().upper(), None, time.time(), "Symlink", headers,
                  target=target)
        self.st.seal(tmp, e)
        with self.st.key_lock(b.name, ctx.key):
            self.st.commit(b, tmp, e, _write_guard(ctx.headers, _truthy(ctx.headers.get("x-oss-forbid-overwrite"))))
        return Resp(200, [("ETag", f'"{e.etag}"')])

    def get_symlink(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        e = self._entry_or_404(b, ctx.key)
        if e.type != "Symlink":
            raise OssError(400, "NotSymlink", "The specified object is not a symlink.", Key=ctx.key)
        h = [("x-oss-symlink-target", url_enc(e.target or "")), ("ETag", f'"{e.etag}"'),
             ("Last-Modified", http_date(e.mtime))]
        h += [(k, v) for k, v in e.headers.items() if k.startswith("x-oss-meta-")]
        return Resp(200, h)

    def delete_object(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        self.st.delete(b, ctx.key)
        return Resp(204)

    def delete_multiple(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        body = ctx.body.read(4 << 20)
        md5 = ctx.headers.get("content-md5")
        if not md5:
            raise OssError(400, "InvalidDigest", "Content-MD5 is required for DeleteMultipleObjects.")
        if base64.b64encode(hashlib.md5(body).digest()).decode() != md5.strip():
            raise OssError(400, "InvalidDigest", "The Content-MD5 you specified did not match what we received.")
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            raise OssError(400, "MalformedXML", "The XML you provided was not well-formed.") from None
        if root.tag != "Delete":
            raise OssError(400, "MalformedXML", "The XML you provided was not well-formed.")
        quiet = (root.findtext("Quiet") or "false").strip().lower() == "true"
        keys = [o.findtext("Key") or "" for o in root.findall("Object")]
        if not keys or len(keys) > 1000:
            raise OssError(400, "MalformedXML", "The number of objects must be between 1 and 1000.")
        url = ctx.params.get("encoding-type", "") == "url"
        out = [XML_HEAD, "<DeleteResult>"]
        if url:
            out.append(el("EncodingType", "url"))
        for k in keys:
            self.st.delete(b, k)
            if not quiet:
                out.append("<Deleted>" + el("Key", url_enc(k) if url else k) + "</Deleted>")
        out.append("</DeleteResult>")
        return self._xml(out)

    # ---- objects: read -------------------------------------------------------------------
    def _resolve(self, b: BucketState, key: str) -> tuple[Entry, OpenObject]:
        """(link-or-object entry, open data object) — a symlink resolves to its target."""
        obj = self.st.open_object(b, key)
        if obj is None:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        e = obj.entry
        if e.type != "Symlink":
            return e, obj
        obj.close()
        t = self.st.open_object(b, e.target or "")
        if t is not None and t.entry.type == "Symlink":      # links to links are not followed
            t.close()
            t = None
        if t is None:
            raise OssError(404, "SymlinkTargetNotExist", "The symlink target object does not exist.",
                           Key=key, SymlinkTarget=e.target or "")
        return e, t

    def get_object(self, ctx: Ctx, head: bool = False) -> Resp:
        b = self.bucket(ctx)
        link, obj = self._resolve(b, ctx.key)
        e = obj.entry
        ok = False
        try:
            _check_conditions(ctx.headers, e)
            headers = self.object_headers(e)
            if link is not e:
                headers = [(k, "Symlink" if k == "x-oss-object-type" else v) for k, v in headers]
            for q, hname in (("response-content-type", "Content-Type"), ("response-content-language", "Content-Language"),
                             ("response-expires", "Expires"), ("response-cache-control", "Cache-Control"),
                             ("response-content-disposition", "Content-Disposition"),
                             ("response-content-encoding", "Content-Encoding")):
                if q in ctx.params:
                    headers = [(k, v) for k, v in headers if k.lower() != hname.lower()] + [(hname, ctx.params[q])]
            rng = None
            if "range" in ctx.headers:
                standard = ctx.headers.get("x-oss-range-behavior", "").lower() == "standard"
                rng = parse_range(ctx.headers["range"], e.size, standard)
            if rng is None:
                start, length, status = 0, e.size, 200
            else:
                start, length, status = rng[0], rng[1] - rng[0] + 1, 206
                headers.append(("Content-Range", f"bytes {rng[0]}-{rng[1]}/{e.size}"))
            if head:
                return Resp(status, headers, content_length=length)
            ok = True
            return Resp(status, headers, file=(obj, start, length))
        finally:
            if not ok:
                obj.close()

    def head_object(self, ctx: Ctx) -> Resp:
        return self.get_object(ctx, head=True)

    def get_object_meta(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        e = self._entry_or_404(b, ctx.key)
        return Resp(200, [("ETag", f'"{e.etag}"'), ("Last-Modified", http_date(e.mtime)),
                          ("x-oss-last-access-time", http_date(e.mtime))], content_length=e.size)
