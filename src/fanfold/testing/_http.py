"""aiohttp helpers of the simulated server: JSON errors, 429s, cut connections, SSE."""

from __future__ import annotations

import asyncio
import functools
import json
import math
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from fanfold.testing._replies import MODEL_ID, error_payload

dumps = functools.partial(json.dumps, separators=(",", ":"))
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_DONE = b"data: [DONE]\n\n"


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An OpenAI-style JSON error response."""
    return web.json_response(
        error_payload(status, message), status=status, headers=headers, dumps=dumps
    )


def hang_up(
    request: web.BaseRequest, response: web.StreamResponse | None = None
) -> web.StreamResponse:
    """Close the connection, leaving ``response`` unsent (or, if prepared, unfinished).

    aiohttp then fails to write the rest, takes that for a client disconnect and drops the
    connection without logging anything.
    """
    transport = request.transport
    if transport is not None:
        transport.close()  # flushes what was written, then closes: the client sees a cut
    if response is None:
        response = web.Response()
    response.force_close()
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer routing and framing errors (404, 405, 413, ...) with OpenAI-style JSON."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return error(404, f"unknown path {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error(405, f"use {allowed}", {"Allow": allowed})
    except web.HTTPError as exc:
        return error(exc.status, exc.reason)


def rate_limited(retry_ms: int, header: str | None = None, *, hints: bool = True) -> web.Response:
    """A 429 with ``retry-after-ms`` and ``Retry-After`` (or ``header`` verbatim, or none)."""
    headers = {"retry-after-ms": str(retry_ms), "Retry-After": str(math.ceil(retry_ms / 1000))}
    if header is not None:
        headers = {"Retry-After": header}
    if not hints:  # as a gateway's concurrency limit answers: no hint at all
        headers = {}
    message = f"Rate limit reached for {MODEL_ID}. Please try again in {retry_ms}ms."
    return error(429, message, headers)


async def drop(request: web.Request, data: bytes) -> web.StreamResponse:
    """Promise ``data`` in the headers, send half of it, then close the connection."""
    response = web.StreamResponse()
    response.content_type = "application/json"
    response.content_length = len(data)
    try:
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
    except ConnectionError:  # the client went away already
        pass
    return hang_up(request, response)


async def stream(
    request: web.Request,
    payloads: list[dict[str, Any]],
    *,
    token_delay: float,
    fault: str | int | None,
) -> web.StreamResponse:
    """Answer with server-sent events (chunked by aiohttp, as the client speaks HTTP/1.1).

    ``payloads`` are a reply's chunks as ``stream_payloads`` gives them; content chunks go
    out ``token_delay`` apart; a "drop" fault cuts the stream halfway, a "malformed" one
    inserts an event that is not JSON.
    """
    events = [b"data: " + dumps(p).encode() + b"\n\n" for p in payloads]
    if fault == "malformed":
        events.insert(1, b'data: {"id": "chatcmpl-sim", "choices": [\n\n')
    response = web.StreamResponse(headers=_SSE_HEADERS)
    # Content chunks: those between the role chunk and the finish chunk.
    n_content = len(payloads) - 2 - (1 if "usage" in payloads[-1] else 0)
    try:
        await response.prepare(request)
        if fault == "drop":
            await response.write(b"".join(events[: max(1, len(events) // 2)]))
            return hang_up(request, response)
        if token_delay <= 0 or n_content <= 1 or fault == "malformed":
            await response.write_eof(b"".join(events) + _DONE)
            return response
        # Role chunk plus first content chunk go out at once; later content is paced.
        await response.write(events[0] + events[1])
        for event in events[2 : 1 + n_content]:
            await asyncio.sleep(token_delay)
            await response.write(event)
        await response.write_eof(b"".join(events[1 + n_content :]) + _DONE)
        return response
    except ConnectionError:  # the client went away mid-stream
        return hang_up(request, response)
