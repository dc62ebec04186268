"""Service and bucket operations: ListBuckets, Create/DeleteBucket, bucket info, location, ACLs (SPEC D.11)."""
from __future__ import annotations

from .xmlout import OssError, XML_HEAD, el, iso8601
from .ops_base import OWNER_ID, Ctx, Resp, OpsBase, valid_bucket_name


class BucketOps(OpsBase):
    """Buckets are directories of the storage; names follow OSS rules (3-63 of [a-z0-9-])."""

    def list_buckets(self, ctx: Ctx) -> Resp:
        p = ctx.params
        prefix, marker = p.get("prefix", ""), p.get("marker", "")
        max_keys = self._max(p, "max-keys", 100, 1000)
        names = sorted(n for n in list(self.st.buckets) if n.startswith(prefix) and n > marker)
        page, truncated = names[:max_keys], len(names) > max_keys
        out = [XML_HEAD, "<ListAllMyBucketsResult>", el("Prefix", prefix), el("Marker", marker),
               el("MaxKeys", max_keys), el("IsTruncated", "true" if truncated else "false")]
        if truncated:
            out.append(el("NextMarker", page[-1]))
        out.append(f"<Owner><ID>{OWNER_ID}</ID><DisplayName>{OWNER_ID}</DisplayName></Owner><Buckets>")
        for n in page:
            b = self.st.get_bucket(n)
            if b is None:
                continue
            out.append("<Bucket>" + el("CreationDate", iso8601(b.created)) +
                       el("ExtranetEndpoint", self.endpoint_host) + el("IntranetEndpoint", self.endpoint_host) +
                       el("Location", self.region) + el("Name", n) + el("Region", self.region.removeprefix("oss-")) +
                       el("StorageClass", "Standard") + "</Bucket>")
        out.append("</Buckets></ListAllMyBucketsResult>")
        return self._xml(out)

    def create_bucket(self, ctx: Ctx) -> Resp:
        name = ctx.bucket or ""
        if not valid_bucket_name(name):
            raise OssError(400, "InvalidBucketName", "The specified bucket is not valid.", BucketName=name)
        self.st.create_bucket(name)
        return Resp(200, [("Location", f"/{name}")])

    def delete_bucket(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        if b.uploads or not self.st.delete_bucket(b.name):
            raise OssError(409, "BucketNotEmpty", "The bucket you tried to delete is not empty.", BucketName=b.name)
        return Resp(204)

    def bucket_info(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        out = [XML_HEAD, "<BucketInfo><Bucket>", el("AccessMonitor", "Disabled"), el("CreationDate", iso8601(b.created)),
               el("ExtranetEndpoint", self.endpoint_host), el("IntranetEndpoint", self.endpoint_host),
               el("Location", self.region), el("StorageClass", "Standard"), el("TransferAcceleration", "Disabled"),
               el("CrossRegionReplication", "Disabled"), el("Name", b.name), el("Comment", ""),
               el("DataRedundancyType", "LRS"),
               f"<Owner><DisplayName>{OWNER_ID}</DisplayName><ID>{OWNER_ID}</ID></Owner>",
               "<AccessControlList><Grant>private</Grant></AccessControlList>",
               "</Bucket></BucketInfo>"]
        return self._xml(out)

    def bucket_location(self, ctx: Ctx) -> Resp:
        self.bucket(ctx)
        return self._xml([XML_HEAD, el("LocationConstraint", self.region)])

    def get_acl(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        if ctx.key:
            self._entry_or_404(b, ctx.key)
        return self._xml([XML_HEAD, "<AccessControlPolicy>",
                          f"<Owner><ID>{OWNER_ID}</ID><DisplayName>{OWNER_ID}</DisplayName></Owner>",
                          "<AccessControlList><Grant>", "private" if not ctx.key else "default",
                          "</Grant></AccessControlList></AccessControlPolicy>"])

    def put_acl(self, ctx: Ctx) -> Resp:
        b = self.bucket(ctx)
        if ctx.key:
            self._entry_or_404(b, ctx.key)
        return Resp(200)
