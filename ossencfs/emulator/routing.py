"""Which OSS operation a request is: its bucket and key (virtual-hosted or path style) and the
operation its method, subresources and headers name.

Kept apart from the connection handling (``oss_handler.py``) so the table from request to
operation can be read in one place; the operations themselves are in the ``ops_*`` modules.
"""
from __future__ import annotations

import ipaddress
from typing import Callable
from urllib.parse import unquote, unquote_to_bytes

from .auth import SUBRESOURCES
from .ops import Ctx, Ops, Resp, valid_bucket_name
from .xmlout import OssError

Route = tuple[str, Callable[[Ctx], Resp]]

# Subresources the operations below read; any other one in SUBRESOURCES is 501.
_HANDLED = frozenset({"restore", "acl", "uploads", "location", "delete", "append", "position", "objectMeta", "uploadId",
                      "partNumber", "security-token", "symlink", "bucketInfo", "continuation-token",
                      "response-content-type", "response-content-language", "response-expires",
                      "response-cache-control", "response-content-disposition", "response-content-encoding"})


def is_ip(host: str) -> bool:
    """Whether ``host`` (brackets allowed around IPv6) is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def address(raw_path: str, host: str) -> tuple[str | None, str]:
    """(bucket, key) a request names: virtual-hosted (``bucket.host``) when the host name starts
    with a valid bucket name and is not an IP address, else path style (``/bucket/key``); (None, "")
    for the service (``/``). OssError 400 InvalidURI for a path that is not absolute or a key that
    is not UTF-8."""
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    vbucket = None
    if "." in hostname and not is_ip(hostname):
        first = hostname.split(".", 1)[0]
        if valid_bucket_name(first):
            vbucket = first
    path = raw_path
    if not path.startswith("/"):
        raise OssError(400, "InvalidURI", "Could not parse the specified URI.")
    if vbucket is not None:
        bucket, rest = vbucket, path[1:]
    else:
        p = path[1:]
        if not p:
            return None, ""
        b, _, rest = p.partition("/")
        bucket = unquote(b)
    try:
        key = unquote_to_bytes(rest).decode("utf-8")
    except UnicodeDecodeError:
        raise OssError(400, "InvalidURI", "The object name is not valid UTF-8.") from None
    return bucket, key


def route(ops: Ops, method: str, bucket: str | None, key: str, p: dict[str, str], h: dict[str, str]) -> Route:
    """Operation name (for counters) and the function implementing it.

    OssError 501 NotImplemented for a subresource the emulator does not model, 405
    MethodNotAllowed for a method the resource does not have."""
    unknown = (set(p) & SUBRESOURCES) - _HANDLED
    if unknown:
        raise OssError(501, "NotImplemented", f"Subresource {sorted(unknown)[0]} is not supported by the emulator.")
    if bucket is None:
        found: Route | None = ("ListBuckets", ops.list_buckets) if method == "GET" else None
    elif not key:
        found = _bucket_route(ops, method, p)
    else:
        found = _object_route(ops, method, p, h)
    if found is None:
        raise OssError(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
    return found


def _bucket_route(ops: Ops, method: str, p: dict[str, str]) -> Route | None:
    if method == "PUT":
        return ("PutBucketAcl", ops.put_acl) if "acl" in p else ("CreateBucket", ops.create_bucket)
    if method == "DELETE":
        return "DeleteBucket", ops.delete_bucket
    if method == "GET":
        if "bucketInfo" in p:
            return "GetBucketInfo", ops.bucket_info
        if "location" in p:
            return "GetBucketLocation", ops.bucket_location
        if "uploads" in p:
            return "ListMultipartUploads", ops.list_uploads
        if "acl" in p:
            return "GetBucketAcl", ops.get_acl
        if p.get("list-type") == "2":
            return "ListObjectsV2", ops.list_objects
        return "ListObjects", ops.list_objects
    if method == "HEAD":
        return "HeadBucket", ops.bucket_location
    if method == "POST" and "delete" in p:
        return "DeleteMultipleObjects", ops.delete_multiple
    return None


def _object_route(ops: Ops, method: str, p: dict[str, str], h: dict[str, str]) -> Route | None:
    if method == "PUT":
        if "symlink" in p:
            return "PutSymlink", ops.put_symlink
        if "uploadId" in p:
            if "x-oss-copy-source" in h:
                return "UploadPartCopy", ops.upload_part_copy
            return "UploadPart", ops.upload_part
        if "acl" in p:
            return "PutObjectAcl", ops.put_acl
        if "x-oss-copy-source" in h:
            return "CopyObject", ops.copy_object
        return "PutObject", ops.put_object
    if method == "POST":
        if "uploads" in p:
            return "InitiateMultipartUpload", ops.init_multipart
        if "uploadId" in p:
            return "CompleteMultipartUpload", ops.complete_multipart
        if "append" in p:
            return "AppendObject", ops.append_object
        if "restore" in p:
            return "RestoreObject", ops.restore_object
        return None
    if method == "GET":
        if "symlink" in p:
            return "GetSymlink", ops.get_symlink
        if "uploadId" in p:
            return "ListParts", ops.list_parts
        if "acl" in p:
            return "GetObjectAcl", ops.get_acl
        return "GetObject", ops.get_object
    if method == "HEAD":
        if "objectMeta" in p:
            return "GetObjectMeta", ops.get_object_meta
        return "HeadObject", ops.head_object
    if method == "DELETE":
        if "uploadId" in p:
            return "AbortMultipartUpload", ops.abort_multipart
        return "DeleteObject", ops.delete_object
    return None
