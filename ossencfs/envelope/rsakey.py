"""RSA key pairs as CSE master keys (SPEC A.3): PEM loading and export, wrap and unwrap.

Writes ``RSA/NONE/PKCS1Padding``; reads PKCS#1 v1.5, OAEP-SHA1 (oss2 LocalRsaProvider) and
the legacy ``rsa`` form. The one file read in the envelope is ``from_pem_file`` (a key file
given on the command line); everything else is CPU only.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Mapping

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import KeyFileError, WrongKeyError
from .ctr import iv_to_counter, new_data_key, new_iv
from .format import (CEK_AES_CTR, WRAP_LEGACY_RSA, WRAP_RSA_OAEP, WRAP_RSA_PKCS1, CryptoHeaders,
                     matdesc_option)
from .material import ContentMaterial, matdesc_matches, material_from_plaintext

_MAX_KEY_FILE = 1 << 20


_OAEP_SHA1 = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
_PKCS1 = padding.PKCS1v15()
_RSA_READ_ALGS = {WRAP_RSA_PKCS1: _PKCS1, WRAP_RSA_OAEP: _OAEP_SHA1, WRAP_LEGACY_RSA: _OAEP_SHA1}
_RSA_WRITE_ALGS = {WRAP_RSA_PKCS1: _PKCS1, WRAP_RSA_OAEP: _OAEP_SHA1}


class RsaMasterKey:
    """An RSA key pair (or public key only) used as a CSE master key.

    Writes ``RSA/NONE/PKCS1Padding`` (the one RSA wrapping every SDK reads); reads PKCS#1 v1.5,
    OAEP-SHA1 (oss2 LocalRsaProvider) and the legacy ``rsa`` form. A public-only key can wrap
    new objects but opens nothing.
    """

    LOCAL_WRAP = True        # wrap_new is CPU only (KeyRing.local_writer)

    def __init__(self, private_key: rsa.RSAPrivateKey | None = None,
                 public_key: rsa.RSAPublicKey | None = None, *,
                 matdesc: Mapping[str, str] | str | None = None,
                 write_alg: str = WRAP_RSA_PKCS1, source: str = "") -> None:
        if private_key is None and public_key is None:
            raise ValueError("need a private or a public key")
        if write_alg not in _RSA_WRITE_ALGS:
            raise ValueError(f"cannot write wrap-alg {write_alg!r} with RSA")
        if private_key is not None:
            derived = private_key.public_key()
            if public_key is not None and public_key.public_numbers() != derived.public_numbers():
                raise ValueError("public key does not belong to the private key")
            public_key = derived
        assert public_key is not None
        self._private = private_key
        self._public = public_key
        self.wrap_alg = write_alg
        self.matdesc, self.matdesc_text = matdesc_option(matdesc)
        der = public_key.public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        self.fingerprint = hashlib.sha256(der).hexdigest()
        self.name = "rsa:" + self.fingerprint[:16]
        self.source = source

    def __repr__(self) -> str:
        kind = "private" if self._private is not None else "public"
        return f"RsaMasterKey({self.name}, {kind}, {self.key_size} bits)"

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def generate(cls, bits: int = 3072, **kw: object) -> "RsaMasterKey":
        if bits not in (2048, 3072, 4096):
            raise ValueError("RSA key size must be 2048, 3072 or 4096 bits")
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits), **kw)  # type: ignore[arg-type]

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None, *,
                 matdesc: Mapping[str, str] | str | None = None, source: str = "key") -> "RsaMasterKey":
        """PKCS#1 / PKCS#8 private (optionally encrypted) or PKCS#1 / SPKI public PEM."""
        if b"PRIVATE KEY-----" in data:
            key = _load_private(data, passphrase, source)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise KeyFileError(f"{source}: not an RSA private key")
            master = cls(key, matdesc=matdesc, source=source)
        elif b"PUBLIC KEY-----" in data:
            try:
                pub = serialization.load_pem_public_key(data)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise KeyFileError(f"{source}: not a valid PEM public key") from None
            if not isinstance(pub, rsa.RSAPublicKey):
                raise KeyFileError(f"{source}: not an RSA public key")
            master = cls(public_key=pub, matdesc=matdesc, source=source)
        else:
            raise KeyFileError(f"{source}: not a PEM RSA key (no 'PRIVATE KEY' or 'PUBLIC KEY' block)")
        if master.key_size < 1024:
            raise KeyFileError(f"{source}: RSA key of {master.key_size} bits is too small")
        return master

    @classmethod
    def from_pem_file(cls, path: str, passphrase: bytes | None = None, *,
                      matdesc: Mapping[str, str] | str | None = None) -> "RsaMasterKey":
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_KEY_FILE + 1)
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from None
        if len(data) > _MAX_KEY_FILE:
            raise KeyFileError(f"{path}: too large for a key file")
        return cls.from_pem(data, passphrase, matdesc=matdesc, source=str(path))

    # -- export (keygen) ------------------------------------------------------------------
    def private_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM (read by oss2, Java and Go; Go cannot read an encrypted one)."""
        if self._private is None:
            raise ValueError("no private key")
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase
            else serialization.NoEncryption())
        return self._private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8, enc)

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM ("PUBLIC KEY"), the form every SDK reads."""
        return self._public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)

    # -- MasterKey protocol ---------------------------------------------------------------
    @property
    def has_private(self) -> bool:
        return self._private is not None

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def can_unwrap(self, h: CryptoHeaders) -> bool:
        if self._private is None or h.wrap_alg not in _RSA_READ_ALGS:
            return False
        if h.wrap_alg == WRAP_LEGACY_RSA and not h.legacy:
            return False
        return matdesc_matches(self.matdesc, h.matdesc)

    def unwrap(self, h: CryptoHeaders) -> ContentMaterial:
        if self._private is None:
            raise WrongKeyError("public key only; opening objects needs the private key")
        pad = _RSA_READ_ALGS.get(h.wrap_alg)
        if pad is None:
            raise WrongKeyError(f"RSA key cannot unwrap wrap-alg {h.wrap_alg!r}")
        plain_key = self._decrypt(h.wrapped_key_bytes(), pad, "data key")
        plain_start = self._decrypt(h.wrapped_start_bytes(), pad, "start")
        return material_from_plaintext(h, plain_key, plain_start)

    def _decrypt(self, blob: bytes, pad: padding.AsymmetricPadding, what: str) -> bytes:
        assert self._private is not None
        try:
            return self._private.decrypt(blob, pad)
        except (ValueError, TypeError):
            # Deliberately no detail: padding-oracle style messages help nobody here.
            raise WrongKeyError(f"wrapped {what} does not decrypt with this key "
                                "(wrong key or tampered header)") from None

    def wrap_new(self) -> tuple[ContentMaterial, CryptoHeaders]:
        material = ContentMaterial(new_data_key(), iv_to_counter(new_iv()))
        return material, self.wrap(material)

    def wrap(self, material: ContentMaterial) -> CryptoHeaders:
        """The V2 header set for an *existing* data key (re-wrapping under this master).

        Used by ``objects.rewrap``. Never use it to give new content an old key.
        """
        pad = _RSA_WRITE_ALGS[self.wrap_alg]
        return CryptoHeaders(
            wrapped_key=base64.b64encode(self._public.encrypt(material.key, pad)).decode("ascii"),
            wrapped_start=base64.b64encode(self._public.encrypt(material.iv, pad)).decode("ascii"),
            wrap_alg=self.wrap_alg,
            cek_alg=CEK_AES_CTR,
            legacy=False,
            matdesc=dict(self.matdesc) if self.matdesc else None,
            matdesc_text=self.matdesc_text,
        )


def _load_private(data: bytes, passphrase: bytes | None, source: str) -> object:
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        # cryptography raises TypeError both for "encrypted but no password" and for
        # "password given but the key is not encrypted".
        if passphrase is None:
            raise KeyFileError(f"{source}: private key is passphrase-protected; "
                               "give its passphrase") from None
        try:
            return serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyFileError(f"{source}: not a valid PEM private key") from None
    except (ValueError, UnsupportedAlgorithm):
        hint = "wrong passphrase or " if passphrase is not None or b"ENCRYPTED" in data else ""
        raise KeyFileError(f"{source}: cannot load private key ({hint}not a valid PEM key)") from None
