"""Files that keep secrets off the command line: a mount's TOML config and ossfs's passwd file.

``--config FILE`` (TOML, read with ``tomllib``)::

    url = "oss://my-bucket/photos"          # or: bucket = "my-bucket", prefix = "photos"
    mountpoint = "/srv/photos"
    endpoint = "https://oss-cn-hangzhou.aliyuncs.com"
    region = "cn-hangzhou"
    # credentials: at most one of these groups (else the chain, see `ossencfs mount --help`)
    access_key_id = "..."                   # with access_key_secret [, security_token]
    access_key_secret = "..."
    passwd_file = "/etc/passwd-ossfs"
    profile = "prod"
    ram_role = "my-ecs-role"
    credentials_uri = "http://127.0.0.1:8000/credentials"
    credential_process = "/usr/local/bin/get-creds"
    [[key]]                                 # master keys, the first one writes
    rsa = "/etc/ossencfs/master.pem"
    matdesc = '{"name": "photos"}'          # written verbatim (x-oss-meta-...-matdesc)
    [[key]]
    kms = "key-id or acs:kms:REGION:ACCOUNT:key/ID"
    kms_region = "cn-hangzhou"
    options = ["allow_other", "uid=1000"]   # as -o
    cache_dir = "/var/cache/ossencfs"       # and any other long option, '-' written '_'

A value given on the command line wins over the file's. The file must not be readable by
others when it holds a secret (``access_key_secret``/``security_token``), like a passwd file.

ossfs passwd file (``-o passwd_file=FILE`` or ``passwd_file`` above), ossfs 1.x / s3fs rules
(s3fs-fuse src/s3fs_cred.cpp ``CheckPasswdFilePerms`` and ``ReadPasswdFile``): lines
``bucket:AccessKeyId:AccessKeySecret`` (for that bucket) or ``AccessKeyId:AccessKeySecret``
(for any bucket); a bucket's own line wins; blank lines and ``#`` comments are skipped. The
file may have no permission for others, and none for the group either, except
``/etc/passwd-ossfs`` which may be group-readable but not group-writable.
"""
from __future__ import annotations

import argparse
import os
import stat
import tomllib
from typing import Any

from ..errors import OssEncError

DEFAULT_PASSWD_FILE = "/etc/passwd-ossfs"
_SECRET_FIELDS = ("access_key_secret", "security_token")


def check_private(path: str, what: str, *, group_readable_ok: bool = False) -> None:
    """Refuse a secrets file others may read (and, unless allowed, the group)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise OssEncError(f"cannot read {what} {path}: {exc.strerror}") from None
    if mode & stat.S_IRWXO:
        raise OssEncError(f"{what} {path} should not have others permissions (chmod 600 it)")
    if group_readable_ok:
        if mode & stat.S_IWGRP:
            raise OssEncError(f"{what} {path} should not have group writable permissions")
    elif mode & stat.S_IRWXG:
        raise OssEncError(f"{what} {path} should not have group permissions (chmod 600 it)")


def read_passwd_file(path: str, bucket: str) -> tuple[str, str]:
    """(AccessKeyId, AccessKeySecret) for ``bucket`` from an ossfs passwd file."""
    check_private(path, "credentials file",
                  group_readable_ok=os.path.abspath(path) == DEFAULT_PASSWD_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OssEncError(f"cannot read credentials file {path}: {exc}") from None
    default: tuple[str, str] | None = None
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) == 3 and all(fields):
            if fields[0] == bucket:
                return fields[1], fields[2]
        elif len(fields) == 2 and all(fields):
            default = default or (fields[0], fields[1])
        else:
            raise OssEncError(f"credentials file {path}, line {n}: expected "
                              f"bucket:AccessKeyId:AccessKeySecret or AccessKeyId:AccessKeySecret")
    if default is None:
        raise OssEncError(f"credentials file {path} has no line for bucket {bucket}")
    return default


def load_config(path: str) -> dict[str, Any]:
    """The TOML table of a ``--config`` file (checked private when it holds a secret); its
    values are whatever the file says (``Any``), checked field by field by ``apply_config``."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise OssEncError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise OssEncError(f"config file {path} is not valid TOML: {exc}") from None
    if any(data.get(k) for k in _SECRET_FIELDS):
        check_private(path, "config file")
    return data


def apply_config(args: argparse.Namespace, defaults: dict[str, object]) -> None:
    """Fill ``args`` from ``args.config`` where the command line left the default."""
    path = getattr(args, "config", None)
    if not path:
        return
    data = dict(load_config(path))
    if "bucket" in data and "url" not in data:
        prefix = str(data.pop("prefix", "")).strip("/")
        data["url"] = f"oss://{data.pop('bucket')}" + (f"/{prefix}" if prefix else "")
    keys = data.pop("key", [])
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise OssEncError(f"config file {path}: [[key]] must be tables")
    if not getattr(args, "key_order", None) and keys:
        args.key_order = [_key_entry(path, k) for k in keys]
        for kind, value, _ in args.key_order:
            getattr(args, kind).append(value)
    for kind in ("kms_region", "kms_endpoint", "kms_flavour", "kms_context"):
        for k in keys:
            if kind in k and kind not in data:
                data[kind] = k[kind]
    options = data.pop("options", None)
    if options:
        args.options = list(args.options or []) + [",".join(map(str, options))
                                                   if isinstance(options, list) else str(options)]
    for name, value in data.items():
        dest = name.replace("-", "_")
        if dest not in defaults:
            raise OssEncError(f"config file {path}: unknown field {name!r}")
        if getattr(args, dest, None) == defaults[dest]:
            setattr(args, dest, value)


def _key_entry(path: str, k: dict[str, Any]) -> tuple[str, str, str | None]:
    """A ``[[key]]`` table of the config file (TOML as written: ``Any`` until checked here)."""
    matdesc = k.get("matdesc")
    if "rsa" in k:
        return "rsa_key", str(k["rsa"]), matdesc
    if "kms" in k:
        return "kms_key", str(k["kms"]), matdesc
    raise OssEncError(f"config file {path}: a [[key]] needs rsa = PEM or kms = CMK")
