"""Offline commands: keygen, encrypt, decrypt — no bucket, no network.

They are how a user gets data back without any mount (download the object and its metadata
with any tool, then ``ossencfs decrypt``), and a proof of the format: ``encrypt`` writes exactly
what the mount uploads. Every failure leaves no partial OUTPUT file behind: output goes to a
temporary file in the same directory, renamed into place only after the last byte. Writing to
stdout (``-``) cannot be undone; the key and headers are checked before the first byte is
written, so only an I/O error in the middle can leave a partial stream there.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import IO, BinaryIO, Iterator

from ..envelope.ctr import CtrStream
from ..envelope.format import parse_headers, parse_matdesc
from ..envelope.keys import KeyRing, RsaMasterKey
from ..errors import FormatError, KeyFileError, OssEncError

CHUNK = 1 << 20
ENV_PASSPHRASE = "OSSENCFS_KEY_PASSPHRASE"
_MAX_HEADERS_FILE = 1 << 20


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser(
        "keygen", help="create an RSA key pair for client-side encryption",
        description="Write KEYFILE (private key, PKCS#8 PEM, mode 0600) and KEYFILE.pub "
                    "(public key, SubjectPublicKeyInfo PEM). Refuses to overwrite either.")
    p.add_argument("keyfile", metavar="KEYFILE")
    p.add_argument("--bits", type=int, choices=(2048, 3072, 4096), default=3072,
                   help="RSA modulus size (default 3072)")
    p.add_argument("--passphrase-file", "--rsa-passphrase-file", dest="passphrase_file",
                   metavar="FILE", help="encrypt the private key with the first line of FILE "
                                        "(the Go SDK cannot read encrypted keys)")
    p.set_defaults(func=cmd_keygen)

    p = subparsers.add_parser(
        "encrypt", help="encrypt a file into an SDK-compatible object body + headers",
        description="Encrypt INPUT as the OSS SDKs' client-side encryption does; OUTPUT is the "
                    "object body and HEADERS the x-oss-meta-* headers to store with it.")
    p.add_argument("--rsa-key", required=True, metavar="KEY",
                   help="RSA public or private key file (PEM)")
    p.add_argument("--headers-out", required=True, metavar="HEADERS.json",
                   help="where to write the object's encryption headers (JSON map)")
    p.add_argument("--matdesc", metavar="JSON",
                   help="material description to record, a JSON object of strings "
                        "(default: none, which every SDK reads)")
    _add_passphrase_option(p)
    p.add_argument("input", metavar="INPUT", help="plaintext file, or - for stdin")
    p.add_argument("output", metavar="OUTPUT", help="ciphertext file, or - for stdout")
    p.set_defaults(func=cmd_encrypt)

    p = subparsers.add_parser(
        "decrypt", help="decrypt a downloaded object body using its headers",
        description="Decrypt INPUT, an object's body (or the part of it from --offset on), "
                    "using the object's metadata in HEADERS.json.")
    p.add_argument("--rsa-key", required=True, action="append", metavar="KEY",
                   help="RSA private key file (PEM); repeatable, each is tried")
    p.add_argument("--headers", required=True, metavar="HEADERS.json",
                   help="the object's metadata as a JSON map of header name to value")
    p.add_argument("--offset", type=_non_negative, default=0, metavar="N",
                   help="INPUT holds the object's bytes from offset N on (a ranged download; "
                        "N need not be a multiple of 16)")
    _add_passphrase_option(p)
    p.add_argument("input", metavar="INPUT", help="ciphertext file, or - for stdin")
    p.add_argument("output", metavar="OUTPUT", help="plaintext file, or - for stdout")
    p.set_defaults(func=cmd_decrypt)


def _add_passphrase_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-file", "--rsa-passphrase-file", dest="passphrase_file",
                   metavar="FILE",
                   help=f"first line is the passphrase of encrypted key files (default: ${ENV_PASSPHRASE})")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


# -- commands -----------------------------------------------------------------------------
def cmd_keygen(args: argparse.Namespace) -> int:
    path: str = args.keyfile
    pub_path = path + ".pub"
    for p in (path, pub_path):
        if os.path.lexists(p):
            raise KeyFileError(f"{p}: already exists; refusing to overwrite")
    passphrase = _read_passphrase_file(args.passphrase_file) if args.passphrase_file else None
    master = RsaMasterKey.generate(args.bits)
    created: list[str] = []
    try:
        _write_new_file(path, master.private_pem(passphrase), 0o600)
        created.append(path)
        _write_new_file(pub_path, master.public_pem(), 0o644)
        created.append(pub_path)
    except BaseException:
        for p in created:
            _unlink_quietly(p)
        raise
    print(f"wrote {path} (private key, mode 0600) and {pub_path}; key {master.name}, "
          f"{args.bits} bits")
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    master = RsaMasterKey.from_pem_file(args.rsa_key, _passphrase(args),
                                        matdesc=_matdesc_option(args.matdesc))
    _check_output_path(args.output)
    _check_output_path(args.headers_out)
    if args.output == "-" and args.headers_out == "-":
        raise OssEncError("OUTPUT and --headers-out cannot both be stdout")
    with _open_input(args.input) as src:
        material, headers = KeyRing([master], cache_entries=0).new_object()
        stream = material.stream(0)
        with _AtomicOutput(args.headers_out, _default_mode()) as hout, \
                _AtomicOutput(args.output, _default_mode()) as out:
            hout.write((json.dumps(headers, indent=2, sort_keys=True) + "\n").encode("ascii"))
            for chunk in _chunks(src, args.input):
                out.write(stream.update(chunk))
            out.commit()
            hout.commit()
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    passphrase = _passphrase(args)
    masters = [RsaMasterKey.from_pem_file(p, passphrase) for p in args.rsa_key]
    public_only = [m.source for m in masters if not m.has_private]
    if len(public_only) == len(masters):
        raise KeyFileError(f"{', '.join(public_only)}: public key only; decrypting needs the "
                           "private key")
    headers = _load_headers(args.headers)
    h = parse_headers(headers)
    if h is None:
        raise FormatError(f"{args.headers}: no client-side encryption headers "
                          "(x-oss-meta-client-side-encryption-* or x-oss-meta-oss-crypto-*)")
    _check_output_path(args.output)
    name = args.input if args.input != "-" else args.headers
    material = KeyRing(masters, cache_entries=0).open(h, object_name=name)
    stream: CtrStream = material.stream(args.offset)
    with _open_input(args.input) as src, _AtomicOutput(args.output, 0o600) as out:
        for chunk in _chunks(src, args.input):
            out.write(stream.update(chunk))
        out.commit()
    return 0


# -- helpers ------------------------------------------------------------------------------
def _passphrase(args: argparse.Namespace) -> bytes | None:
    if getattr(args, "passphrase_file", None):
        return _read_passphrase_file(args.passphrase_file)
    env = os.environ.get(ENV_PASSPHRASE)
    return env.encode("utf-8") if env else None


def _read_passphrase_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            line = f.readline()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read passphrase file: {exc.strerror or exc}") from None
    line = line.rstrip(b"\r\n")
    if not line:
        raise KeyFileError(f"{path}: passphrase file is empty")
    return line


def _matdesc_option(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    try:
        return parse_matdesc(text, "--matdesc")
    except FormatError as exc:
        raise OssEncError(str(exc)) from None


def _load_headers(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_HEADERS_FILE + 1)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read headers file: {exc.strerror or exc}") from None
    if len(raw) > _MAX_HEADERS_FILE:
        raise FormatError(f"{path}: headers file is too large")
    try:
        data = json.loads(raw)
    except ValueError:
        raise FormatError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: must hold a JSON object of header name to value")
    try:
        return {name: value for name, value in data.items()}
    except Exception:  # pragma: no cover - dict items cannot fail
        raise FormatError(f"{path}: unreadable") from None


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _check_output_path(path: str) -> None:
    if path != "-" and os.path.isdir(path):
        raise OssEncError(f"{path}: is a directory")


class _Input:
    def __init__(self, f: BinaryIO, close: bool) -> None:
        self.f, self._close = f, close

    def __enter__(self) -> BinaryIO:
        return self.f

    def __exit__(self, *exc: object) -> None:
        if self._close:
            self.f.close()


def _open_input(path: str) -> _Input:
    if path == "-":
        return _Input(sys.stdin.buffer, close=False)
    try:
        return _Input(open(path, "rb"), close=True)
    except OSError as exc:
        raise OssEncError(f"{path}: cannot open input: {exc.strerror or exc}") from None


def _chunks(src: BinaryIO, name: str) -> Iterator[bytes]:
    while True:
        try:
            chunk = src.read(CHUNK)
        except OSError as exc:
            raise OssEncError(f"{name}: read failed: {exc.strerror or exc}") from None
        if not chunk:
            return
        yield chunk


class _AtomicOutput:
    """A file that appears at ``path`` only on ``commit()``; otherwise nothing is left behind.

    ``-`` writes straight to stdout (no way to take bytes back; see the module docstring).
    """

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self._mode = mode
        self._tmp: str | None = None
        self._f: IO[bytes]
        if path == "-":
            self._f = sys.stdout.buffer
            return
        directory = os.path.dirname(os.path.abspath(path))
        try:
            fd, self._tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                             suffix=".part", dir=directory)
        except OSError as exc:
            raise OssEncError(f"{path}: cannot create output: {exc.strerror or exc}") from None
        self._f = os.fdopen(fd, "wb")

    def __enter__(self) -> "_AtomicOutput":
        return self

    def write(self, data: bytes) -> None:
        try:
            self._f.write(data)
        except OSError as exc:
            raise OssEncError(f"{self.path}: write failed: {exc.strerror or exc}") from None

    def commit(self) -> None:
        try:
            self._f.flush()
            if self._tmp is None:
                return
            os.fsync(self._f.fileno())
            self._f.close()
            os.chmod(self._tmp, self._mode)
            os.replace(self._tmp, self.path)
            self._tmp = None
        except OSError as exc:
            raise OssEncError(f"{self.path}: cannot write output: {exc.strerror or exc}") from None

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            try:
                self._f.close()
            finally:
                _unlink_quietly(self._tmp)
                self._tmp = None


def _write_new_file(path: str, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if mode == 0o600:
                os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        _unlink_quietly(path)
        raise KeyFileError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
