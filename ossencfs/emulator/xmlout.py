"""OSS error type and XML/time formatting shared by the emulator modules.

oss2 parses responses strictly (no namespaces, ``.000Z`` times, exact (status, Code) pairs),
so every document is written by hand from these few helpers.
"""
from __future__ import annotations

import time
from email.utils import formatdate
from urllib.parse import quote
from xml.sax.saxutils import escape

XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


class OssError(Exception):
    """An OSS error response: HTTP status, Code, Message and extra child elements."""

    def __init__(self, status: int, code: str, message: str = "", **extra: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message or code
        self.extra = extra
        self.headers: dict[str, str] = {}


def x(text: object) -> str:
    """Escape text for an XML element body."""
    return escape(str(text))


def el(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def iso8601(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def http_date(ts: float | None = None) -> str:
    return formatdate(time.time() if ts is None else ts, usegmt=True)


def url_enc(s: str) -> str:
    """encoding-type=url form: space -> %20, + -> %2B, '/' kept (decoded identically by every SDK)."""
    return quote(s, safe="/")


def error_xml(err: OssError, request_id: str, host_id: str) -> bytes:
    parts = [XML_HEAD, "<Error>", el("Code", err.code), el("Message", err.message),
             el("RequestId", request_id), el("HostId", host_id)]
    for k, v in err.extra.items():
        parts.append(el(k, v))
    parts.append("</Error>")
    return "".join(parts).encode("utf-8")
