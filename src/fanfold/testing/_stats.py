"""The simulated server's ``/stats`` endpoint and the summary ``serve-sim`` prints on exit."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fanfold import formatting
from fanfold.testing import _http
from fanfold.testing._state import SimState


def add_routes(app: web.Application, state: SimState) -> None:
    """Serve ``GET /stats``: requests, answers per status, tokens, in flight (now and max)."""

    async def stats(request: web.Request) -> web.StreamResponse:
        return web.json_response(state.stats(), dumps=_http.dumps)

    app.router.add_get("/stats{slash:/*}", stats, allow_head=False)


def stats_summary(stats: dict[str, Any]) -> str:
    """One line: ``120 requests (200: 100, 429: 20), 2,400 tokens, at most 8 in flight``."""
    statuses = ", ".join(f"{status}: {count}" for status, count in stats["statuses"].items())
    requests = f"{stats['requests']} request{'' if stats['requests'] == 1 else 's'}"
    return (
        f"{requests}{f' ({statuses})' if statuses else ''}, "
        f"{formatting.tokens(stats['tokens'])} tokens, "
        f"at most {stats['max_in_flight']} in flight"
    )
