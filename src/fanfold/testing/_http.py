"""Just enough HTTP/1.1 over asyncio streams: parse requests, write responses and chunks."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

_MAX_BODY = 64 * 1024 * 1024


class HttpError(Exception):
    """The peer sent something that is not a request this server can parse."""


@dataclass(slots=True)
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept open after the response."""
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one request from ``reader``.

    Returns:
        The request, or None if the peer closed the connection between requests.

    Raises:
        HttpError: on a malformed request line, headers or body framing.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError("connection closed mid-headers") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError("headers too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise HttpError(f"bad request line {lines[0]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    body = await _read_body(reader, headers)
    path = target.split("?", 1)[0]
    return Request(method.upper(), path, version, headers, body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await _read_chunked(reader)
        length = int(headers.get("content-length", "0"))
        if not 0 <= length <= _MAX_BODY:
            raise HttpError(f"bad content-length {length}")
        return await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise HttpError("connection closed mid-body") from exc
    except ValueError as exc:
        raise HttpError("bad body framing") from exc


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Skip trailers up to the blank line that ends the message.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")


def response_head(
    status: int,
    headers: dict[str, str],
    *,
    content_length: int | None = None,
    keep_alive: bool = True,
) -> bytes:
    """Status line and headers; chunked framing when ``content_length`` is None."""
    out = [_status_line(status)]
    for name, value in headers.items():
        out.append(f"{name}: {value}\r\n".encode("latin-1"))
    if content_length is None:
        out.append(b"transfer-encoding: chunked\r\n")
    else:
        out.append(b"content-length: %d\r\n" % content_length)
    out.append(b"connection: keep-alive\r\n\r\n" if keep_alive else b"connection: close\r\n\r\n")
    return b"".join(out)


def json_response(
    status: int,
    payload: Any,
    *,
    headers: dict[str, str] | None = None,
    keep_alive: bool = True,
) -> bytes:
    """A complete response with a JSON body."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return raw_response(status, body, headers=headers, keep_alive=keep_alive)


def raw_response(
    status: int,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    keep_alive: bool = True,
    content_type: str = "application/json",
) -> bytes:
    """A complete response with ``body`` as-is."""
    all_headers = {"content-type": content_type, **(headers or {})}
    head = response_head(status, all_headers, content_length=len(body), keep_alive=keep_alive)
    return head + body


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked-encoded body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
