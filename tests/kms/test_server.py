"""The local KMS speaks the RPC API as aliyunsdkcore sends it (SPEC §C): real HTTP, the real SDK
client and its request classes, signatures checked, real error codes and statuses."""
from __future__ import annotations

import base64
import json
import os
import stat
import urllib.error
import urllib.parse
import urllib.request

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.auth.composer import rpc_signature_composer
from aliyunsdkcore.client import AcsClient
from aliyunsdkkms.request.v20160120 import (CreateKeyRequest, DecryptRequest, DescribeKeyRequest,
                                            DisableKeyRequest, EnableKeyRequest, EncryptRequest,
                                            GenerateDataKeyRequest, ListKeysRequest,
                                            ReEncryptRequest, ScheduleKeyDeletionRequest)

from ossencfs.emulator.kms import KmsServer

from .conftest import AK, REGION, SK, STS_AK, STS_SK, STS_TOKEN


def client(server: KmsServer, ak: str = AK, sk: str = SK) -> AcsClient:
    c = AcsClient(ak, sk, REGION, auto_retry=False, proxy={"http": None, "https": None})
    c.add_endpoint(REGION, "kms", server.endpoint)
    return c


def call(c: AcsClient, req, **params) -> dict:
    for k, v in params.items():
        getattr(req, f"set_{k}")(v)
    return json.loads(c.do_action_with_exception(req))


def server_error(c: AcsClient, req, **params) -> ServerException:
    with pytest.raises(ServerException) as ei:
        call(c, req, **params)
    return ei.value


def test_key_management_actions(kms: KmsServer) -> None:
    c = client(kms)
    ids = [call(c, CreateKeyRequest.CreateKeyRequest(), Description=f"k{i}")["KeyMetadata"]["KeyId"]
           for i in range(3)]
    meta = call(c, DescribeKeyRequest.DescribeKeyRequest(), KeyId=ids[1])["KeyMetadata"]
    assert meta["KeyId"] == ids[1] and meta["KeyState"] == "Enabled" and meta["Description"] == "k1"
    assert meta["Arn"].startswith(f"acs:kms:{REGION}:") and meta["Arn"].endswith("key/" + ids[1])
    page1 = call(c, ListKeysRequest.ListKeysRequest(), PageNumber=1, PageSize=2)
    page2 = call(c, ListKeysRequest.ListKeysRequest(), PageNumber=2, PageSize=2)
    assert page1["TotalCount"] == 3
    listed = [k["KeyId"] for k in page1["Keys"]["Key"] + page2["Keys"]["Key"]]
    assert listed == ids
    call(c, DisableKeyRequest.DisableKeyRequest(), KeyId=ids[0])
    assert kms.key_state(ids[0]) == "Disabled"
    e = server_error(c, EncryptRequest.EncryptRequest(), KeyId=ids[0], Plaintext="x")
    assert (e.get_error_code(), e.get_http_status()) == ("Rejected.Disabled", 409)
    call(c, EnableKeyRequest.EnableKeyRequest(), KeyId=ids[0])
    call(c, EncryptRequest.EncryptRequest(), KeyId=ids[0], Plaintext="x")
    call(c, ScheduleKeyDeletionRequest.ScheduleKeyDeletionRequest(), KeyId=ids[2], PendingWindowInDays=7)
    e = server_error(c, GenerateDataKeyRequest.GenerateDataKeyRequest(), KeyId=ids[2])
    assert (e.get_error_code(), e.get_http_status()) == ("Rejetced.PendingDeletion", 409)
    e = server_error(c, DescribeKeyRequest.DescribeKeyRequest(), KeyId="no-such-key")
    assert (e.get_error_code(), e.get_http_status()) == ("Forbidden.KeyNotFound", 404)
    assert kms.calls["CreateKey"] == 3 and kms.calls["ListKeys"] == 2


def test_encrypt_decrypt_opaque_plaintext_and_context(kms: KmsServer, cmk: str) -> None:
    c = client(kms)
    # legacy oss2 encrypted a decimal counter string: not base64, returned verbatim
    blob = call(c, EncryptRequest.EncryptRequest(), KeyId=cmk, Plaintext="8",
                EncryptionContext="")["CiphertextBlob"]
    assert base64.b64decode(blob).decode().startswith(cmk)     # blobs name their key (SPEC A.8)
    out = call(c, DecryptRequest.DecryptRequest(), CiphertextBlob=blob, EncryptionContext="")
    assert out["Plaintext"] == "8" and out["KeyId"] == cmk
    ctx = '{"x-passphrase":"pw"}'
    gdk = call(c, GenerateDataKeyRequest.GenerateDataKeyRequest(), KeyId=cmk, KeySpec="AES_256",
               NumberOfBytes=32, EncryptionContext=ctx)
    assert len(base64.b64decode(gdk["Plaintext"])) == 32
    # same map, other JSON spelling: accepted; other map or none: rejected
    same = call(c, DecryptRequest.DecryptRequest(), CiphertextBlob=gdk["CiphertextBlob"],
                EncryptionContext='{ "x-passphrase" : "pw" }')
    assert same["Plaintext"] == gdk["Plaintext"]
    for other in ("", '{"x-passphrase":"PW"}'):
        e = server_error(c, DecryptRequest.DecryptRequest(), CiphertextBlob=gdk["CiphertextBlob"],
                         EncryptionContext=other)
        assert (e.get_error_code(), e.get_http_status()) == ("InvalidParameter", 400)
    # a tampered blob fails authentication
    raw = bytearray(base64.b64decode(blob))
    raw[-3] ^= 1
    e = server_error(c, DecryptRequest.DecryptRequest(), CiphertextBlob=base64.b64encode(bytes(raw)).decode())
    assert e.get_error_code() == "InvalidParameter"


def test_reencrypt_moves_a_blob_to_another_key(kms: KmsServer, cmk: str) -> None:
    """ReEncrypt (help: api-kms-2016-01-20-reencrypt): decrypt under the source context, encrypt
    under DestinationKeyId and the destination context; the plaintext never comes back."""
    c = client(kms)
    dest = kms.create_key(description="dest")
    ctx = '{"x-passphrase":"pw"}'
    blob = call(c, EncryptRequest.EncryptRequest(), KeyId=cmk, Plaintext="c2VjcmV0",
                EncryptionContext=ctx)["CiphertextBlob"]
    out = call(c, ReEncryptRequest.ReEncryptRequest(), CiphertextBlob=blob, DestinationKeyId=dest,
               SourceEncryptionContext=ctx)
    assert "Plaintext" not in out and out["KeyId"] == dest
    assert base64.b64decode(out["CiphertextBlob"]).decode().startswith(dest)
    back = call(c, DecryptRequest.DecryptRequest(), CiphertextBlob=out["CiphertextBlob"])
    assert back["Plaintext"] == "c2VjcmV0" and back["KeyId"] == dest
    e = server_error(c, ReEncryptRequest.ReEncryptRequest(), CiphertextBlob=blob,
                     DestinationKeyId=dest)                       # source context missing
    assert (e.get_error_code(), e.get_http_status()) == ("InvalidParameter", 400)
    e = server_error(c, ReEncryptRequest.ReEncryptRequest(), CiphertextBlob=blob,
                     SourceEncryptionContext=ctx)
    assert (e.get_error_code(), e.get_http_status()) == ("MissingParameter", 400)
    kms.disable_key(dest)
    e = server_error(c, ReEncryptRequest.ReEncryptRequest(), CiphertextBlob=blob,
                     DestinationKeyId=dest, SourceEncryptionContext=ctx)
    assert (e.get_error_code(), e.get_http_status()) == ("Rejected.Disabled", 409)


def test_signature_and_credentials_checked(kms: KmsServer, cmk: str) -> None:
    e = server_error(client(kms, AK, "wrong"), EncryptRequest.EncryptRequest(), KeyId=cmk, Plaintext="x")
    # the SDK renames SignatureDoesNotMatch when our string-to-sign equals its own (SPEC C.4),
    # which proves the server canonicalises exactly like aliyunsdkcore
    assert (e.get_error_code(), e.get_http_status()) == ("InvalidAccessKeySecret", 400)
    e = server_error(client(kms, "nobody", SK), EncryptRequest.EncryptRequest(), KeyId=cmk, Plaintext="x")
    assert (e.get_error_code(), e.get_http_status()) == ("InvalidAccessKeyId.NotFound", 404)
    # STS credentials: the token is required and must match
    e = server_error(client(kms, STS_AK, STS_SK), EncryptRequest.EncryptRequest(), KeyId=cmk, Plaintext="x")
    assert e.get_error_code().startswith("InvalidSecurityToken")
    req = EncryptRequest.EncryptRequest()
    req.add_query_param("SecurityToken", STS_TOKEN)
    assert call(client(kms, STS_AK, STS_SK), req, KeyId=cmk, Plaintext="x")["CiphertextBlob"]


def _signed(params: dict, body: dict | None = None, ak: str = AK, sk: str = SK) -> str:
    """A request URL signed by aliyunsdkcore's own composer (an independent signer)."""
    common = {"Version": "2016-01-20", "RegionId": REGION}
    url, _ = rpc_signature_composer.get_signed_url(dict(common, **params), ak, sk, "JSON", "POST", body or {})
    return url


def _post(server: KmsServer, url: str, body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(server.endpoint + url, data=body or b"", method="POST")
    if body:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_raw_wire_rules(kms: KmsServer, cmk: str, monkeypatch) -> None:
    awkward = "a+b/c= d*~%&"
    url = _signed({"Action": "Encrypt", "KeyId": cmk, "Plaintext": awkward})
    status, doc = _post(kms, url)
    assert status == 200
    blob = doc["CiphertextBlob"]
    status, doc = _post(kms, url)                          # replayed nonce
    assert (status, doc["Code"]) == (400, "SignatureNonceUsed")
    # params in a form body are signed and accepted too
    url = _signed({"Action": "Decrypt"}, body={"CiphertextBlob": blob})
    status, doc = _post(kms, url, urllib.parse.urlencode({"CiphertextBlob": blob}).encode())
    assert (status, doc.get("Plaintext")) == (200, awkward)
    # unsigned
    status, doc = _post(kms, "/?Action=Encrypt&KeyId=" + cmk + "&Plaintext=x")
    assert status == 400 and doc["Code"] in ("MissingParameter", "IncompleteSignature")
    assert set(doc) >= {"RequestId", "HostId", "Code", "Message"}
    # a client clock far behind
    from aliyunsdkcore.utils import parameter_helper
    monkeypatch.setattr(parameter_helper, "get_iso_8061_date", lambda: "2020-01-01T00:00:00Z")
    status, doc = _post(kms, _signed({"Action": "Encrypt", "KeyId": cmk, "Plaintext": "x"}))
    assert (status, doc["Code"]) == (400, "IllegalTimestamp")
    monkeypatch.undo()
    status, doc = _post(kms, _signed({"Action": "NoSuchAction"}))
    assert (status, doc["Code"]) == (404, "InvalidAction.NotFound")


def test_keys_persist_across_restart(tmp_path) -> None:
    d = str(tmp_path / "kms")
    with KmsServer(d, credentials={AK: SK}) as s1:
        kid = s1.create_key()
        blob = call(client(s1), EncryptRequest.EncryptRequest(), KeyId=kid, Plaintext="hello")["CiphertextBlob"]
        s1.disable_key(kid)
    key_file = os.path.join(d, "kms-keys", kid + ".json")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert not [n for n in os.listdir(os.path.dirname(key_file)) if n.startswith(".tmp")]
    with KmsServer(d, credentials={AK: SK}) as s2:
        assert s2.key_state(kid) == "Disabled"
        s2.enable_key(kid)
        assert call(client(s2), DecryptRequest.DecryptRequest(), CiphertextBlob=blob)["Plaintext"] == "hello"
    # another installation with a key of the same id but other material cannot decrypt it
    with KmsServer(str(tmp_path / "other"), credentials={AK: SK}) as s3:
        e = server_error(client(s3), DecryptRequest.DecryptRequest(), CiphertextBlob=blob)
        assert (e.get_error_code(), e.get_http_status()) == ("Forbidden.KeyNotFound", 404)
        s3.create_key(kid)
        e = server_error(client(s3), DecryptRequest.DecryptRequest(), CiphertextBlob=blob)
        assert e.get_error_code() == "InvalidParameter"


def test_recorded_blob_hook_and_faults(kms: KmsServer) -> None:
    with open(os.path.join(os.path.dirname(__file__), "..", "fixtures", "sdk",
                           "deprecated_encrypted_1MB_a_meta_kms.json")) as f:
        meta = json.load(f)
    blob = meta["x-oss-meta-oss-crypto-start"]
    kms.add_recorded_blob(blob, meta["plain-start"])
    c = client(kms)
    assert call(c, DecryptRequest.DecryptRequest(), CiphertextBlob=blob)["Plaintext"] == "8"
    owner = base64.b64decode(blob)[:36].decode()
    kms.disable_key(owner)
    assert server_error(c, DecryptRequest.DecryptRequest(), CiphertextBlob=blob).get_error_code() == "Rejected.Disabled"
    kms.enable_key(owner)
    kms.set_faults(throttle_next=2)              # both of real KMS's throttle answers, in turn
    e = server_error(c, DecryptRequest.DecryptRequest(), CiphertextBlob=blob)
    assert (e.get_error_code(), e.get_http_status()) == ("Throttling", 400)
    e = server_error(c, DecryptRequest.DecryptRequest(), CiphertextBlob=blob)
    assert (e.get_error_code(), e.get_http_status()) == ("Rejected.Throttling", 429)
    kms.set_faults(fail_next=1)
    e = server_error(c, DecryptRequest.DecryptRequest(), CiphertextBlob=blob)
    assert e.get_http_status() == 503
    assert call(c, DecryptRequest.DecryptRequest(), CiphertextBlob=blob)["Plaintext"] == "8"
