"""Where credentials come from: one chain for OSS and KMS, built from alibabacloud-credentials.

Order (``CHAIN_ORDER``, also in ``ossencfs mount --help`` and the README):

1. explicit: ``--access-key-id``/``--access-key-secret`` (or the ``--config`` file's keys, or
   an ossfs ``-o passwd_file=FILE``), ``--profile NAME``, ``--ram-role NAME``,
   ``--credentials-uri URL``, ``--credential-process CMD``: the first one given is used alone;
   when it fails, the mount fails (no silent fallback to other credentials);
2. ``OSS_ACCESS_KEY_ID`` / ``OSS_ACCESS_KEY_SECRET`` [/ ``OSS_SESSION_TOKEN``] (ossutil, oss2,
   ossfs 2.0);
3. ``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` [/
   ``ALIBABA_CLOUD_SECURITY_TOKEN``];
4. OIDC / RRSA (ACK pods): ``ALIBABA_CLOUD_ROLE_ARN``, ``ALIBABA_CLOUD_OIDC_PROVIDER_ARN``,
   ``ALIBABA_CLOUD_OIDC_TOKEN_FILE`` [, ``ALIBABA_CLOUD_ROLE_SESSION_NAME``];
5. the aliyun CLI's ``~/.aliyun/config.json`` (its current profile, or ``ALIBABA_CLOUD_PROFILE``);
6. ``~/.alibabacloud/credentials`` (or ``ALIBABA_CLOUD_CREDENTIALS_FILE``; section
   ``default`` or ``ALIBABA_CLOUD_PROFILE``);
7. the ECS instance's RAM role from the metadata service (role ``ALIBABA_CLOUD_ECS_METADATA``
   or detected); skipped when ``ALIBABA_CLOUD_ECS_METADATA_DISABLED=true``;
8. ``ALIBABA_CLOUD_CREDENTIALS_URI``.

The first source that yields credentials is kept for the life of the process (as the library's
own ``DefaultCredentialsProvider`` does) and renewed by ``ossencfs.credentials``.

The metadata service address: alibabacloud-credentials 1.0.12 hard-codes ``100.100.100.200``
(provider/ecs_ram_role.py: ``self.__metadata_service_host``; no option or variable changes
it). ``OSSENCFS_ECS_METADATA_ENDPOINT=HOST:PORT`` replaces it, so that tests serve the
metadata paths from a local stand-in and never reach the real address; likewise
``OSSENCFS_STS_ENDPOINT`` for the STS endpoint OIDC (RRSA) asks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping, NoReturn, Protocol

from .credentials import CredentialSource, Credentials, from_library, quiet_library_logger, scrub
from .errors import CredentialsError

ENV_ECS_METADATA_ENDPOINT = "OSSENCFS_ECS_METADATA_ENDPOINT"
#: STS endpoint for OIDC (host, or http(s)://host:port); default the library's choice
#: (sts.aliyuncs.com, or per ALIBABA_CLOUD_STS_REGION / ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED)
ENV_STS_ENDPOINT = "OSSENCFS_STS_ENDPOINT"

CHAIN_ORDER = (
    "explicit options (keys; for mount also the --config keys or -o passwd_file; --profile, "
    "--ram-role, --credentials-uri, --credential-process)",
    "OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET[/OSS_SESSION_TOKEN]",
    "ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET[/ALIBABA_CLOUD_SECURITY_TOKEN]",
    "OIDC/RRSA (ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN, "
    "ALIBABA_CLOUD_OIDC_TOKEN_FILE)",
    "~/.aliyun/config.json",
    "~/.alibabacloud/credentials",
    "ECS RAM role (instance metadata)",
    "ALIBABA_CLOUD_CREDENTIALS_URI",
)


@dataclass
class CredentialOptions:
    """What the command line (or a config / passwd file) asked for; all optional."""

    access_key_id: str | None = None
    access_key_secret: str | None = None
    security_token: str | None = None
    keys_from: str = "--access-key-id/--access-key-secret"
    profile: str | None = None
    ram_role: str | None = None
    credentials_uri: str | None = None
    credential_process: str | None = None


class Provider(Protocol):
    """What we use of an alibabacloud-credentials provider (its ``ICredentialsProvider``; the
    library ships no type information): ``get_credentials`` returns a library
    ``Credentials``, which ``credentials.from_library`` reads."""

    def get_credentials(self) -> object: ...


#: (name, make a library provider, a ready source, or None: not configured)
Candidate = tuple[str, Callable[[], Provider | CredentialSource | None]]


def build_source(opts: CredentialOptions,
                 environ: Mapping[str, str] | None = None) -> CredentialSource:
    """The first source of the chain that yields credentials, primed with them.

    CredentialsError names every source tried and why it gave nothing (never a secret)."""
    env = os.environ if environ is None else environ
    explicit = _explicit(opts, env)
    if explicit is not None:
        return _first([explicit], only=True)
    return _first(_automatic(env), only=False)


def _first(candidates: list[Candidate], *, only: bool) -> CredentialSource:
    tried: list[str] = []
    for name, make in candidates:
        try:
            provider = make()
        except (ValueError, CredentialsError) as exc:     # not configured
            tried.append(f"{name}: {scrub(str(exc))}")
            continue
        if provider is None:
            continue
        if isinstance(provider, CredentialSource):
            return provider
        quiet_library_logger()
        fetch = _fetch_from(provider)
        try:
            first = fetch()
        except Exception as exc:  # noqa: BLE001 - the library raises many types
            if only:
                raise CredentialsError(f"no credentials from {name}: "
                                       f"{scrub(str(exc)) or type(exc).__name__}") from None
            tried.append(f"{name}: {scrub(str(exc)) or type(exc).__name__}")
            continue
        source = CredentialSource(fetch, name)
        source.prime(first)
        return source
    detail = "; ".join(tried) if tried else "nothing configured"
    raise CredentialsError("no OSS credentials found (" + detail + "). Set OSS_ACCESS_KEY_ID and "
                           "OSS_ACCESS_KEY_SECRET, or see `ossencfs mount --help` for the order "
                           "of sources")


def _fetch_from(provider: Provider) -> Callable[[], Credentials]:
    def fetch() -> Credentials:
        return from_library(provider.get_credentials())
    return fetch


def _static(name: str, ak: str | None, sk: str | None, token: str | None) -> Candidate | None:
    if not ak and not sk:
        return None
    if not ak or not sk:
        def incomplete() -> NoReturn:
            raise CredentialsError("an AccessKey id needs its secret and the other way round")
        return name, incomplete
    return name, lambda: CredentialSource.static(ak, sk, token, name)


def _explicit(opts: CredentialOptions, env: Mapping[str, str]) -> Candidate | None:
    keys = _static(opts.keys_from, opts.access_key_id, opts.access_key_secret,
                   opts.security_token)
    if keys is not None:
        return keys
    if opts.profile:
        return f"profile {opts.profile}", lambda: _ProfileProvider(opts.profile or "", env)
    if opts.ram_role:
        return f"ECS RAM role {opts.ram_role}", lambda: ecs_provider(opts.ram_role, env)
    if opts.credentials_uri:
        return "--credentials-uri", lambda: _uri_provider(opts.credentials_uri or "")
    if opts.credential_process:
        return "--credential-process", lambda: _process_provider(opts.credential_process or "")
    return None


def _automatic(env: Mapping[str, str]) -> list[Candidate]:
    out: list[Candidate] = []
    for name, prefix, token in (("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_", "OSS_SESSION_TOKEN"),
                                ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_",
                                 "ALIBABA_CLOUD_SECURITY_TOKEN")):
        c = _static(name.rsplit("_ACCESS", 1)[0] + "_* variables", env.get(prefix + "ID"),
                    env.get(prefix + "SECRET"), env.get(token))
        if c is not None:
            out.append(c)
    if all(env.get(v) for v in ("ALIBABA_CLOUD_ROLE_ARN", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
                                "ALIBABA_CLOUD_OIDC_TOKEN_FILE")):
        out.append(("OIDC (RRSA)", lambda: _oidc_provider(env)))
    home = os.path.expanduser("~")
    cli_config = os.path.join(home, ".aliyun", "config.json")
    if os.path.isfile(cli_config) and env.get("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "") != "true":
        out.append((cli_config, lambda: _cli_profile(cli_config, env.get("ALIBABA_CLOUD_PROFILE"))))
    cred_file = env.get("ALIBABA_CLOUD_CREDENTIALS_FILE") or os.path.join(
        home, ".alibabacloud", "credentials")
    if os.path.isfile(cred_file):
        out.append((cred_file, lambda: _profile_file(cred_file, env.get("ALIBABA_CLOUD_PROFILE"))))
    if env.get("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "").lower() != "true":
        out.append(("ECS RAM role", lambda: ecs_provider(env.get("ALIBABA_CLOUD_ECS_METADATA"),
                                                         env)))
    if env.get("ALIBABA_CLOUD_CREDENTIALS_URI"):
        out.append(("ALIBABA_CLOUD_CREDENTIALS_URI",
                    lambda: _uri_provider(env["ALIBABA_CLOUD_CREDENTIALS_URI"])))
    return out


# ---- library providers -----------------------------------------------------------------------
def ecs_provider(role_name: str | None, env: Mapping[str, str]) -> Provider:
    """The library's ECS RAM role provider (IMDSv2 token first, then v1), refreshed by us (its
    own APScheduler thread off), talking to ``OSSENCFS_ECS_METADATA_ENDPOINT`` when set."""
    from alibabacloud_credentials.provider import EcsRamRoleCredentialsProvider
    provider = EcsRamRoleCredentialsProvider(role_name=role_name or None,
                                             async_update_enabled=False)
    host = env.get(ENV_ECS_METADATA_ENDPOINT)
    if host:
        # no public override exists in the library (see the module docstring)
        provider._EcsRamRoleCredentialsProvider__metadata_service_host = host
    return provider


def _uri_provider(uri: str) -> Provider:
    from alibabacloud_credentials.provider import URLCredentialsProvider
    return URLCredentialsProvider(uri=uri)


def _process_provider(command: str) -> Provider:
    """ossfs 2.0's ``credential_process``: the command prints the aliyun CLI's external-mode
    JSON (``mode``, ``access_key_id``, ``access_key_secret``, ``sts_token``, ``expiration``)."""
    from alibabacloud_credentials.provider import ExternalCredentialsProvider
    return ExternalCredentialsProvider(process_command=command)


def _oidc_provider(env: Mapping[str, str]) -> Provider:
    from alibabacloud_credentials.provider import OIDCRoleArnCredentialsProvider
    return OIDCRoleArnCredentialsProvider(
        role_arn=env["ALIBABA_CLOUD_ROLE_ARN"],
        oidc_provider_arn=env["ALIBABA_CLOUD_OIDC_PROVIDER_ARN"],
        oidc_token_file_path=env["ALIBABA_CLOUD_OIDC_TOKEN_FILE"],
        role_session_name=env.get("ALIBABA_CLOUD_ROLE_SESSION_NAME") or None,
        sts_region_id=env.get("ALIBABA_CLOUD_STS_REGION") or None,
        sts_endpoint=env.get(ENV_STS_ENDPOINT) or None)


def _cli_profile(path: str, name: str | None) -> Provider:
    from alibabacloud_credentials.provider import CLIProfileCredentialsProvider
    return CLIProfileCredentialsProvider(profile_file=path, profile_name=name or None)


def _profile_file(path: str, name: str | None) -> Provider:
    from alibabacloud_credentials.provider import ProfileCredentialsProvider
    return ProfileCredentialsProvider(profile_file=path, profile_name=name or "default")


class _ProfileProvider:
    """``--profile NAME``: that profile of the aliyun CLI config, else of the credentials file."""

    def __init__(self, name: str, env: Mapping[str, str]) -> None:
        home = os.path.expanduser("~")
        self.options: list[tuple[str, Provider]] = []
        cli_config = os.path.join(home, ".aliyun", "config.json")
        if os.path.isfile(cli_config):
            self.options.append((cli_config, _cli_profile(cli_config, name)))
        cred_file = env.get("ALIBABA_CLOUD_CREDENTIALS_FILE") or os.path.join(
            home, ".alibabacloud", "credentials")
        if os.path.isfile(cred_file):
            self.options.append((cred_file, _profile_file(cred_file, name)))
        if not self.options:
            raise CredentialsError(f"no {cli_config} and no {cred_file}")
        self._chosen: Provider | None = None

    def get_credentials(self) -> object:
        if self._chosen is not None:
            return self._chosen.get_credentials()
        errors = []
        for where, provider in self.options:
            try:
                creds = provider.get_credentials()
            except Exception as exc:  # noqa: BLE001 - library errors of every kind
                errors.append(f"{where}: {scrub(str(exc))}")
                continue
            self._chosen = provider
            return creds
        raise CredentialsError("; ".join(errors))
