"""Option groups and builders shared by every command that talks to a bucket.

cp, cat and mount take the same connection and key options, so scripts can switch between
them without relearning flags. Credentials come from one chain (``ossencfs.credential_chain``,
order in ``CHAIN_HELP``) shared by the OSS and the KMS client of a command; the key flags
exist for completeness but put secrets into ``ps`` output.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

from ..credential_chain import CHAIN_ORDER, CredentialOptions
from ..errors import KeyFileError, OssEncError

if TYPE_CHECKING:
    from ..credentials import CredentialSource
    from ..envelope.keys import MasterKey
    from ..kms import KmsMasterKey

ENV_AK = "OSS_ACCESS_KEY_ID"
ENV_SK = "OSS_ACCESS_KEY_SECRET"
ENV_TOKEN = "OSS_SESSION_TOKEN"
ENV_ENDPOINT = "OSS_ENDPOINT"
ENV_REGION = "OSS_REGION"


class _OrderedKeyAction(argparse.Action):
    """Appends to its own list and to ``key_order`` ((kind, value, matdesc) triples) so that
    "the first key writes" holds across --rsa-key and --kms-key given in any mix."""

    # ``values``: the option's one argument (a str); argparse's signature is broader
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append(values)
        setattr(namespace, self.dest, items)
        order = list(getattr(namespace, "key_order", None) or [])
        order.append((self.dest, values, None))
        namespace.key_order = order


class _MatdescAction(argparse.Action):
    """``--matdesc STRING`` describes the key given just before it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        order = list(getattr(namespace, "key_order", None) or [])
        if not order:
            parser.error("--matdesc follows the --rsa-key or --kms-key it describes")
        kind, value, _ = order[-1]
        order[-1] = (kind, value, values)
        namespace.key_order = order


CHAIN_HELP = ("credentials, first found: " + "; ".join(
    f"{n}) {what}" for n, what in enumerate(CHAIN_ORDER, 1)) +
    ". Temporary credentials are renewed before they expire")


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("connection")
    g.add_argument("--endpoint", metavar="URL", default=os.environ.get(ENV_ENDPOINT),
                   help=f"OSS endpoint, e.g. https://oss-cn-hangzhou.aliyuncs.com "
                        f"(default: ${ENV_ENDPOINT})")
    g.add_argument("--access-key-id", metavar="ID", default=None,
                   help="AccessKey ID (without it: the credential chain below)")
    g.add_argument("--access-key-secret", metavar="SECRET", default=None,
                   help=f"AccessKey secret (shows in ps: prefer ${ENV_SK}, --config or a "
                        f"passwd file; a mount takes it off its command line)")
    c = parser.add_argument_group("credentials", CHAIN_HELP)
    c.add_argument("--profile", metavar="NAME",
                   help="profile of ~/.aliyun/config.json or ~/.alibabacloud/credentials")
    c.add_argument("--ram-role", metavar="NAME",
                   help="the ECS instance's RAM role (from the instance metadata service)")
    c.add_argument("--credentials-uri", metavar="URL",
                   help="URL answering with temporary credentials (ALIBABA_CLOUD_CREDENTIALS_URI "
                        "format)")
    c.add_argument("--credential-process", metavar="CMD",
                   help="command printing credentials as JSON (ossfs 2.0's credential_process, "
                        "aliyun CLI external mode)")
    g.add_argument("--region", metavar="REGION", default=os.environ.get(ENV_REGION),
                   help="region id, required for --auth-version v4 (e.g. cn-hangzhou)")
    g.add_argument("--auth-version", choices=("v1", "v4"), default="v1",
                   help="request signature version (default v1)")
    g.add_argument("--connections", type=int, default=32, metavar="N",
                   help="parallel HTTP connections to OSS for data (default 32)")
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
    g.add_argument("--matdesc", metavar="JSON", action=_MatdescAction,
                   help="material description of the key given just before, written verbatim "
                        "as the matdesc header of every object it wraps (SDKs with several keys "
                        "pick theirs by it), e.g. '{\"name\": \"photos\"}'")
    g.add_argument("--kms-key", metavar="CMK_ID", action=_OrderedKeyAction, dest="kms_key",
                   default=[], help="KMS customer master key id; repeatable")
    g.add_argument("--kms-region", metavar="REGION",
                   help="KMS region of --kms-key ids that are not ARNs, e.g. cn-hangzhou "
                        "(a key given as ARN acs:kms:REGION:UID:key/ID uses its own region)")
    g.add_argument("--kms-endpoint", metavar="[REGION=]URL", action="append", default=[],
                   help="KMS endpoint: URL for --kms-region, REGION=URL for any region "
                        "(VPC endpoint, or http://127.0.0.1:PORT); repeatable; default "
                        "https://kms.REGION.aliyuncs.com")
    g.add_argument("--no-esdk-probe", action="store_true",
                   help="do not look for Encryption SDK objects without metadata (Python "
                        "layout) in objects that carry no encryption headers; saves one small "
                        "GET per such object")
    g.add_argument("--kms-flavour", choices=("oss2", "java"), default="oss2",
                   help="KMS header flavour to write: oss2 (Python SDK) or java (Java/Go SDKs)")
    g.add_argument("--kms-context", metavar="JSON",
                   help='KMS encryption context, e.g. \'{"x-passphrase": "..."}\'')
    g.add_argument("--kms-passphrase-file", metavar="FILE",
                   help="oss2 AliKMSProvider passphrase (sets context {\"x-passphrase\": ...})")
    parser.set_defaults(key_order=[])


def credential_source(args: argparse.Namespace) -> "CredentialSource":
    """The command's one CredentialSource (built on first use, shared by OSS and KMS)."""
    source = getattr(args, "_credential_source", None)
    if source is None:
        from ..credential_chain import build_source
        source = build_source(credential_options(args))
        args._credential_source = source
    return source


def credential_options(args: argparse.Namespace) -> CredentialOptions:
    """What the options (and the --config / passwd file behind them) ask for."""
    opts = CredentialOptions(
        access_key_id=getattr(args, "access_key_id", None),
        access_key_secret=getattr(args, "access_key_secret", None),
        security_token=getattr(args, "security_token", None),
        keys_from="--config file" if getattr(args, "config", None) and getattr(
            args, "access_key_id", None) else "--access-key-id/--access-key-secret",
        profile=getattr(args, "profile", None), ram_role=getattr(args, "ram_role", None),
        credentials_uri=getattr(args, "credentials_uri", None),
        credential_process=getattr(args, "credential_process", None))
    passwd = getattr(args, "passwd_file", None)
    if passwd and not opts.access_key_id:
        from .configfile import read_passwd_file
        bucket = parse_oss_url(args.url)[0] if getattr(args, "url", None) else ""
        opts.access_key_id, opts.access_key_secret = read_passwd_file(passwd, bucket)
        opts.keys_from = f"passwd file {passwd}"
    return opts


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
    for kind, value, matdesc in order:
        if kind == "rsa_key":
            from ..envelope.keys import RsaMasterKey
            masters.append(RsaMasterKey.from_pem_file(value, passphrase, matdesc=matdesc))
        else:
            masters.append(_kms_master(args, value, matdesc))
    return masters


def _kms_master(args: argparse.Namespace, value: str, matdesc: str | None = None) -> "KmsMasterKey":
    """A --kms-key: a CMK id in --kms-region, or an ARN naming its own region."""
    from ..envelope.esdk import parse_arn
    from ..kms import kms_client
    from ..kms_regions import region_endpoint
    arn = parse_arn(value)
    region, cmk = (arn[0], arn[2]) if arn else (getattr(args, "kms_region", None), value)
    if not region:
        raise OssEncError("--kms-key needs --kms-region (or give the key as its ARN "
                          "acs:kms:REGION:UID:key/ID)")
    default, per_region = kms_endpoints(args)
    endpoint = region_endpoint(region, getattr(args, "kms_region", None), default, per_region)
    return kms_client(cmk, region, credential_source(args), endpoint=endpoint, matdesc=matdesc,
                      flavour=getattr(args, "kms_flavour", "oss2"), context=_kms_context(args))


def kms_endpoints(args: argparse.Namespace) -> tuple[str | None, dict[str, str]]:
    """``--kms-endpoint`` values: (URL of ``--kms-region``, {region: URL}). A bare URL without
    ``--kms-region`` would silently go unused (every region would use its public endpoint):
    OssEncError instead."""
    from ..kms_regions import parse_kms_endpoints
    default, per_region = parse_kms_endpoints(getattr(args, "kms_endpoint", None) or [])
    if default is not None and not getattr(args, "kms_region", None):
        raise OssEncError(f"--kms-endpoint {default} is the endpoint of --kms-region, which is "
                          f"not given: add --kms-region REGION, or write REGION={default}")
    return default, per_region


def build_esdk(args: argparse.Namespace, store):
    """Readers of Encryption SDK objects on ``store``: KMS in every region their ARNs name,
    signing with the OSS credentials (as the SDK's samples do)."""
    from ..esdk_objects import EsdkObjects
    from ..kms import kms_client
    from ..kms_regions import EsdkKeyring, KmsRegions
    creds = credential_source(args)
    default, per_region = kms_endpoints(args)

    def connect(region: str, endpoint: str | None, cmk: str):
        return kms_client(cmk, region, creds, endpoint=endpoint)

    regions = KmsRegions(connect, default_region=getattr(args, "kms_region", None),
                         default_endpoint=default, endpoints=per_region)
    return EsdkObjects(store, EsdkKeyring(regions),
                       probe=not getattr(args, "no_esdk_probe", False))


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
    return ObjectStore.connect(args.endpoint, bucket, credentials=credential_source(args),
                               region=getattr(args, "region", None),
                               auth_version=getattr(args, "auth_version", "v1"),
                               connect_timeout=getattr(args, "timeout", None),
                               concurrency=getattr(args, "connections", 32),
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
