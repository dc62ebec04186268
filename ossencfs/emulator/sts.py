"""Temporary (STS) credentials for the emulator, and local stand-ins for the endpoints that hand
them out: a credentials URI and the ECS instance metadata paths.

``StsIssuer`` mints credentials the way STS AssumeRole does (an ``STS.``-prefixed AccessKey id,
a secret, a SecurityToken, an ``Expiration`` in whole seconds, UTC) and registers them with the
OSS verifier and the KMS server, which then accept them until they expire and afterwards answer
with the real services' codes:

* OSS: 403 ``SecurityTokenExpired``, "The security token you provided has expired.", EC
  0002-00000007 (https://www.alibabacloud.com/help/en/oss/support/0002-00000007; the same
  StatusCode/ErrorCode/ErrorMessage/Ec quadruple is quoted from a real answer at
  https://developer.aliyun.com/ask/553273);
* KMS (the POP gateway's public error, list at
  https://error-center.alibabacloud.com/status/product/Public, mirrored in
  terraform-provider-alicloud's ``ERR_INVALID_SECURITY_TOKEN_EXPIRED``): 400
  ``InvalidSecurityToken.Expired``, "Specified SecurityToken is expired.".

Real STS refuses a DurationSeconds below 900; the emulator takes any lifetime (tests use 15-30 s)
so that renewals happen within a test.

``CredentialEndpoints`` serves, on 127.0.0.1 (one port):

* ``GET /credentials``: the credentials-URI answer alibabacloud-credentials reads
  (provider/uri.py): ``{"Code": "Success", "AccessKeyId", "AccessKeySecret", "SecurityToken",
  "Expiration"}``;
* the ECS metadata paths of the same library (provider/ecs_ram_role.py): ``PUT
  /latest/api/token`` (IMDSv2 token; needs ``X-aliyun-ecs-metadata-token-ttl-seconds``), ``GET
  /latest/meta-data/ram/security-credentials/`` (the role name) and ``GET
  .../security-credentials/ROLE`` (the same JSON plus ``LastUpdated``); 404 for another role.

* ``GET /?Action=AssumeRoleWithOIDC&RoleArn=..&OIDCProviderArn=..&OIDCToken=..`` (STS's RPC
  API as the library's OIDC provider calls it, provider/oidc.py; the answer's ``Credentials``
  element as in https://www.alibabacloud.com/help/en/ram/developer-reference/api-sts-2015-04-01-assumerolewithoidc);
  a missing parameter gets 400 ``MissingParameter``-style JSON.

``stop()`` closes the listening socket (a dead endpoint: connections are refused) and
``start()`` opens it again on the same port.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping

from .xmlout import OssError

#: EC of OSS's SecurityTokenExpired (error page 0002-00000007)
EC_TOKEN_EXPIRED = "0002-00000007"
DEFAULT_ROLE = "ossencfs-test-role"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class StsIssuer:
    """Mints temporary credentials valid ``lifetime`` seconds; thread-safe.

    ``targets`` are (credentials, sts_tokens) dict pairs of the servers that must accept them
    (the OSS verifier's and the KMS server's), filled in as credentials are issued."""

    def __init__(self, lifetime: float, role: str = DEFAULT_ROLE) -> None:
        if lifetime <= 0:
            raise ValueError("the STS lifetime must be positive")
        self.lifetime = float(lifetime)
        self.role = role
        self.targets: list[tuple[dict[str, str], dict[str, str]]] = []
        self._expiry: dict[str, float] = {}        # SecurityToken -> expiry (Unix seconds)
        self._lock = threading.Lock()
        #: how many credentials were issued (tests count renewals with it)
        self.issued = 0

    def issue(self) -> dict[str, str]:
        """New credentials as the credentials URI / ECS metadata JSON (``Code`` Success)."""
        now = time.time()
        expiry = float(int(now + self.lifetime))     # Expiration has whole seconds
        ak = "STS." + secrets.token_hex(10)
        sk = secrets.token_urlsafe(24)
        token = "CAIS" + secrets.token_urlsafe(48)
        with self._lock:
            for creds, tokens in self.targets:
                creds[ak] = sk
                tokens[ak] = token
            self._expiry[token] = expiry
            self.issued += 1
        return {"Code": "Success", "AccessKeyId": ak, "AccessKeySecret": sk,
                "SecurityToken": token, "Expiration": _iso(expiry), "LastUpdated": _iso(now)}

    def expired(self, token: str | None) -> bool:
        """Whether ``token`` is one of ours past its Expiration."""
        if not token:
            return False
        with self._lock:
            expiry = self._expiry.get(token)
        return expiry is not None and time.time() >= expiry

    def check_oss(self, headers: Mapping[str, str], params: Mapping[str, str]) -> None:
        """Raise OSS's SecurityTokenExpired for a request signed with an expired token
        (header ``x-oss-security-token``, or ``security-token`` / ``x-oss-security-token`` in a
        presigned URL)."""
        token = (headers.get("x-oss-security-token") or params.get("security-token")
                 or params.get("x-oss-security-token"))
        if self.expired(token):
            raise OssError(403, "SecurityTokenExpired",
                           "The security token you provided has expired.", EC=EC_TOKEN_EXPIRED)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet by design
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        ends = self.server.owner
        if self.path != "/latest/api/token":
            return self._reply(404, b"Not Found", "text/plain")
        if not self.headers.get("X-aliyun-ecs-metadata-token-ttl-seconds"):
            return self._reply(400, b"missing token ttl", "text/plain")
        ends.requests["token"] += 1
        return self._reply(200, secrets.token_urlsafe(32).encode(), "text/plain")

    def do_GET(self) -> None:
        ends = self.server.owner
        issuer = ends.issuer
        base = "/latest/meta-data/ram/security-credentials/"
        path = self.path.split("?", 1)[0]
        if path == "/":
            return self._assume_role_with_oidc()
        if path == "/credentials":
            ends.requests["uri"] += 1
            return self._reply(200, json.dumps(issuer.issue()).encode())
        if path == base:
            ends.requests["role"] += 1
            return self._reply(200, issuer.role.encode(), "text/plain")
        if path.startswith(base) and path[len(base):] == issuer.role:
            ends.requests["ecs"] += 1
            return self._reply(200, json.dumps(issuer.issue()).encode())
        return self._reply(404, b"Not Found", "text/plain")


    def _assume_role_with_oidc(self) -> None:
        from urllib.parse import parse_qs
        ends = self.server.owner
        q = {k: v[0] for k, v in parse_qs(self.path.partition("?")[2]).items()}
        if q.get("Action") != "AssumeRoleWithOIDC":
            return self._reply(400, json.dumps({"Code": "InvalidAction.NotFound"}).encode())
        for name in ("RoleArn", "OIDCProviderArn", "OIDCToken"):
            if not q.get(name):
                return self._reply(400, json.dumps({"Code": f"Missing{name}"}).encode())
        ends.requests["oidc"] += 1
        issued = ends.issuer.issue()
        creds = {k: issued[k] for k in ("AccessKeyId", "AccessKeySecret", "SecurityToken",
                                         "Expiration")}
        body = {"RequestId": secrets.token_hex(8).upper(), "Credentials": creds,
                "AssumedRoleUser": {"Arn": q["RoleArn"] + "/" + q.get("RoleSessionName", ""),
                                    "AssumedRoleId": "3000:" + q.get("RoleSessionName", "")}}
        return self._reply(200, json.dumps(body).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], owner: "CredentialEndpoints") -> None:
        self.owner = owner
        super().__init__(addr, _Handler)


class CredentialEndpoints:
    """The credentials URI and the ECS metadata paths for one ``StsIssuer``, on 127.0.0.1."""

    def __init__(self, issuer: StsIssuer, host: str = "127.0.0.1", port: int = 0) -> None:
        import collections
        self.issuer = issuer
        self.host, self.port = host, port
        self.requests: collections.Counter[str] = collections.Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        """For ``--credentials-uri`` / ALIBABA_CLOUD_CREDENTIALS_URI."""
        return f"http://{self.host}:{self.port}/credentials"

    @property
    def sts_endpoint(self) -> str:
        """For OSSENCFS_STS_ENDPOINT (AssumeRoleWithOIDC)."""
        return f"http://{self.host}:{self.port}"

    @property
    def metadata_host(self) -> str:
        """For OSSENCFS_ECS_METADATA_ENDPOINT (HOST:PORT)."""
        return f"{self.host}:{self.port}"

    def start(self) -> "CredentialEndpoints":
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.1},
                                            name=f"sts-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
