"""An async HTTP client whose connections belong to the event loop that uses them.

LangChain's OpenAI integration caches one async HTTP client per process. Its pooled
connections are bound to the loop that opened them, so a second `asyncio.run(...)`, or
an async run after a synchronous one (which fanfold dispatches on a background loop),
fails with "Event loop is closed". This client keeps one connection pool per loop.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

try:  # the OpenAI SDK moved to httpx2; older releases use httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx  # type: ignore[no-redef]

CONNECTION_LIMITS = httpx.Limits(
    max_connections=1000, max_keepalive_connections=100, keepalive_expiry=5.0
)


class LoopLocalTransport(httpx.AsyncBaseTransport):
    """Routes each request to a transport (connection pool) owned by the running loop."""

    def __init__(self, **transport_options: Any) -> None:
        self._options = transport_options
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def _transport(self) -> Any:
        loop = asyncio.get_running_loop()
        transport = self._by_loop.get(loop)
        if transport is None:
            transport = self._by_loop[loop] = httpx.AsyncHTTPTransport(**self._options)
        return transport

    async def handle_async_request(self, request: Any) -> Any:
        return await self._transport().handle_async_request(request)

    async def aclose(self) -> None:
        transport = self._by_loop.pop(asyncio.get_running_loop(), None)
        if transport is not None:
            await transport.aclose()


def loop_local_async_client(*, timeout: float) -> Any:
    """An async client for the OpenAI SDK that is safe to use from several event loops."""
    return httpx.AsyncClient(
        transport=LoopLocalTransport(limits=CONNECTION_LIMITS),
        timeout=timeout,
        follow_redirects=True,
    )
