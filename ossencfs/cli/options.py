"""Option groups and builders shared by every command that talks to a bucket.

cp, cat and mount take the same connection and key options, so scripts can switch between
them without relearning flags. Credentials come from the environment variables oss2 and
ossutil use; the flags exist for completeness but put secrets into ``ps`` output.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from ..errors import KeyFileError, OssEncError

if TYPE_CHECKING:
    from ..envelope.keys import MasterKey

ENV_AK = "OSS_ACCESS_KEY_ID"
ENV_SK = "OSS_ACCESS_KEY_SECRET"
ENV_TOKEN = "OSS_SESSION_TOKEN"
ENV_ENDPOINT = "OSS_ENDPOINT"
ENV_REGION = "OSS_REGION"


class _OrderedKeyAction(argparse.Action):
    """Appends to its own list and to ``key_order`` so that "the first key writes" holds
    across --rsa-key and --kms-key given in any mix."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append(values)
        setattr(namespace, self.dest, items)
        order = list(getattr(namespace, "key_order", None) or [])
        order.append((self.dest, values))
        namespace.key_order = order


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("connection")
    g.add_argument("--endpoint", metavar="URL", default=os.environ.get(ENV_ENDPOINT),
                   help=f"OSS endpoint, e.g. https://oss-cn-hangzhou.aliyuncs.com "
                        f"(default: ${ENV_ENDPOINT})")
    g.add_argument("--access-key-id", metavar="ID", default=None,
                   help=f"AccessKey ID (default: ${ENV_AK})")
    g.add_argument("--access-key-secret", metavar="SECRET", default=None,
                   help=f"AccessKey secret (default: ${ENV_SK}; prefer the variable)")
    g.add_argument("--region", metavar="REGION", default=os.environ.get(ENV_REGION),
                   help="region id, required for --auth-version v4 (e.g. cn-hangzhou)")
    g.add_argument("--auth-version", choices=("v1", "v4"), default="v1",
                   help="request signature version (default v1)")
    g.add_argument("--connections", type=int, default=16, metavar="N",
                   help="parallel HTTP connections to OSS (default 16)")
    g.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="connect/read timeout per request (default 30)")
    g.add_argument("--retries", type=int, default=5, metavar="N",
                   help="retries of a failed request before giving up (default 5)")
    parser.set_defaults(key_order=[])


def add_key_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("master keys (the first one given writes; all are tried "
                                  "for reading)")
    g.add_argument("--rsa-key", metavar="PEM", action=_OrderedKeyAction, dest="rsa_key",
                   default=[], help="RSA key file, private (read+write) or public (write only); "
                                    "repeatable")
    g.add_argument("--rsa-passphrase-file", metavar="FILE",
                   help="file whose first line is the passphrase of encrypted RSA key files")
    g.add_argument("--kms-key", metavar="CMK_ID", action=_OrderedKeyAction, dest="kms_key",
                   default=[], help="KMS customer master key id; repeatable")
    g.add_argument("--kms-region", metavar="REGION", help="KMS region, e.g. cn-hangzhou")
    g.add_argument("--kms-endpoint", metavar="URL",
                   help="KMS endpoint (VPC endpoint, or http://127.0.0.1:PORT)")
    g.add_argument("--kms-flavour", choices=("oss2", "java"), default="oss2",
                   help="KMS header flavour to write: oss2 (Python SDK) or java (Java/Go SDKs)")
    g.add_argument("--kms-context", metavar="JSON",
                   help='KMS encryption context, e.g. \'{"x-passphrase": "..."}\'')
    g.add_argument("--kms-passphrase-file", metavar="FILE",
                   help="oss2 AliKMSProvider passphrase (sets context {\"x-passphrase\": ...})")
    parser.set_defaults(key_order=[])


def credentials(args: argparse.Namespace) -> tuple[str, str, str | None]:
    ak = getattr(args, "access_key_id", None) or os.environ.get(ENV_AK)
    sk = getattr(args, "access_key_secret", None) or os.environ.get(ENV_SK)
    token = os.environ.get(ENV_TOKEN) or None
    if not ak or not sk:
        raise OssEncError(f"no OSS credentials: set {ENV_AK} and {ENV_SK}")
    return ak, sk, token


def _read_secret_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} file {path}: {exc.strerror}") from None
    return line.rstrip("\r\n")


def _kms_context(args: argparse.Namespace) -> dict[str, str] | None:
    ctx: dict[str, str] = {}
    if getattr(args, "kms_context", None):
        try:
            parsed = json.loads(args.kms_context)
        except ValueError:
            raise OssEncError("--kms-context is not valid JSON") from None
        if not isinstance(parsed, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
            raise OssEncError("--kms-context must be a JSON object of strings")
        ctx.update(parsed)
    if getattr(args, "kms_passphrase_file", None):
        ctx["x-passphrase"] = _read_secret_file(args.kms_passphrase_file, "KMS passphrase")
    return ctx or None


def build_masters(args: argparse.Namespace) -> list[MasterKey]:
    """The master keys in command-line order (the first one writes)."""
    order = list(getattr(args, "key_order", None) or [])
    if not order:
        return []
    passphrase: bytes | None = None
    if getattr(args, "rsa_passphrase_file", None):
        passphrase = _read_secret_file(args.rsa_passphrase_file, "RSA passphrase").encode()
    masters: list[MasterKey] = []
    kms_args: dict[str, Any] | None = None
    for kind, value in order:
        if kind == "rsa_key":
            from ..envelope.keys import RsaMasterKey
            masters.append(RsaMasterKey.from_pem_file(value, passphrase))
        else:
            if kms_args is None:
                if not getattr(args, "kms_region", None):
                    raise OssEncError("--kms-key needs --kms-region")
                ak, sk, token = credentials(args)
                kms_args = dict(access_key_id=ak, access_key_secret=sk, security_token=token,
                                endpoint=getattr(args, "kms_endpoint", None),
                                flavour=getattr(args, "kms_flavour", "oss2"),
                                context=_kms_context(args))
            from ..kms import KmsMasterKey
            masters.append(KmsMasterKey(value, args.kms_region, **kms_args))
    return masters


def build_keyring(args: argparse.Namespace):
    """A KeyRing of every key given; KeyFileError when none was given."""
    from ..envelope.keys import KeyRing
    masters = build_masters(args)
    if not masters:
        raise KeyFileError("no master key given: use --rsa-key PEM or --kms-key CMK_ID")
    return KeyRing(masters)


def optional_keyring(args: argparse.Namespace):
    """Like build_keyring, but None when no key was given (reading plain objects needs none)."""
    if not getattr(args, "key_order", None):
        return None
    return build_keyring(args)


def build_store(args: argparse.Namespace, bucket: str):
    from ..store import ObjectStore
    if not getattr(args, "endpoint", None):
        raise OssEncError(f"no endpoint: use --endpoint URL or set {ENV_ENDPOINT}")
    ak, sk, token = credentials(args)
    return ObjectStore.connect(args.endpoint, bucket, ak, sk, token,
                               region=getattr(args, "region", None),
                               auth_version=getattr(args, "auth_version", "v1"),
                               connect_timeout=getattr(args, "timeout", None),
                               concurrency=getattr(args, "connections", 16),
                               retries=getattr(args, "retries", 5))


def parse_oss_url(url: str) -> tuple[str, str]:
    """``oss://BUCKET/KEY`` -> (bucket, key); the key may be empty or end in '/'."""
    if not is_oss_url(url):
        raise OssEncError(f"not an oss:// URL: {url}")
    rest = url[len("oss://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise OssEncError(f"no bucket in {url}")
    return bucket, key


def is_oss_url(text: str) -> bool:
    return text.startswith("oss://")
