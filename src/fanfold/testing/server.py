"""An OpenAI-compatible chat-completions server on loopback, with hidden limits and faults.

It exists so tests and benchmarks can drive the real ``langchain_openai.ChatOpenAI`` (via
``base_url``) over real sockets. The HTTP layer is ``aiohttp.web``, served from an event
loop of its own in a background thread. The endpoints live in their own modules, each with
an ``add_routes(app, state)`` listed in ``_ENDPOINTS``; they share one ``SimState``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from fanfold.testing import _chat, _http, _stats
from fanfold.testing._config import SimServerConfig
from fanfold.testing._replies import MODEL_ID
from fanfold.testing._state import RequestRecord, SimState
from fanfold.testing.batch_api import BatchAPI, BatchServerConfig

__all__ = ["MODEL_ID", "RequestRecord", "SimServer", "SimServerConfig"]

_log = logging.getLogger(__name__)

_ENDPOINTS: tuple[Callable[[web.Application, SimState], None], ...] = (
    _chat.add_routes,
    _stats.add_routes,
)
"""Each adds its routes to the server's app; they share the server's state."""
_MAX_BODY = 64 * 1024 * 1024
_SHUTDOWN_GRACE = 0.05
"""Seconds ``stop()`` gives in-flight requests before cancelling them (aiohttp's
``shutdown_timeout``; a stalled request waits it out twice, then is cancelled)."""


class SimServer:
    """A loopback OpenAI-compatible server for tests and benchmarks.

    Args:
        config: Behaviour knobs; defaults to a fast, fault-free server.
        host: Interface to bind.
        port: Port to bind; 0 picks a free one (see ``port`` after ``start()``).
        batch: How its Batch API's batches behave (``batch_api`` serves and counts them).

    Example::

        with SimServer(SimServerConfig(latency=0.05)) as srv:
            llm = ChatOpenAI(model="sim-model", base_url=srv.base_url, api_key="sk-test")
    """

    def __init__(
        self,
        config: SimServerConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        batch: BatchServerConfig | None = None,
    ) -> None:
        self._state = SimState(config or SimServerConfig())
        self.batch_api = BatchAPI(lambda: self._state.config, batch)
        """The `/v1/files` and `/v1/batches` endpoints, with their knobs and counters."""
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SimServer:
        """Start serving in a daemon thread; returns self once the socket is listening.

        Raises:
            RuntimeError: if already running.
            OSError: if the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("SimServer is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._run, args=(ready, failure), name="fanfold-sim-server", daemon=True
        )
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread = thread
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and close every open connection (stalled ones included)."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or event is None:
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # loop already closed
            pass
        thread.join(timeout)
        self._thread = None

    def serve_forever(self) -> None:
        """Serve until KeyboardInterrupt (starting first if needed), then stop."""
        if self._thread is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (valid after ``start()``)."""
        if self._port is None:
            raise RuntimeError("SimServer has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """OpenAI ``base_url`` for this server, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self._host}:{self.port}/v1"

    # -- configuration ---------------------------------------------------------------------

    @property
    def config(self) -> SimServerConfig:
        """The configuration in effect."""
        return self._state.config

    def update(self, **knobs: Any) -> SimServerConfig:
        """Change configuration knobs at runtime (validated like ``SimServerConfig``).

        Changing the seed restarts the random streams; changing the rate limit refills the
        token bucket.

        Returns:
            The new configuration.
        """
        return self._state.update(**knobs)

    # -- counters --------------------------------------------------------------------------

    def requests_for(self, text: str) -> int:
        """Number of chat requests whose last user message contains ``text``."""
        with self._state.lock:
            return sum(1 for record in self._state.log if text in record.prompt)

    @property
    def tokens_answered(self) -> int:
        """Total tokens (prompt and completion) of the replies sent, as their usage says."""
        with self._state.lock:
            return self._state.tokens

    @property
    def request_count(self) -> int:
        """Number of chat requests received."""
        with self._state.lock:
            return len(self._state.log)

    def status_counts(self) -> dict[str | int, int]:
        """Chat requests per outcome (HTTP status, "stall", "drop" or "malformed")."""
        with self._state.lock:
            return dict(Counter(record.outcome for record in self._state.log))

    @property
    def max_in_flight(self) -> int:
        """Highest number of chat requests handled at once (rejected ones included)."""
        with self._state.lock:
            return self._state.max_in_flight

    @property
    def log(self) -> list[RequestRecord]:
        """A copy of the request log, in arrival order of the decisions."""
        with self._state.lock:
            return list(self._state.log)

    def stats(self) -> dict[str, Any]:
        """What ``GET /stats`` serves: requests, answers per status ("200", "429", "stall",
        ...), tokens answered, and chat requests in flight now and at most."""
        return self._state.stats()

    def summary(self) -> str:
        """The stats as one line, e.g. ``3 requests (200: 2, 429: 1), 60 tokens, at most 2
        in flight``."""
        return _stats.stats_summary(self._state.stats())

    def reset(self) -> None:
        """Clear the log, counters and first-attempt memory; refill the token bucket; draw
        latencies and faults from the seed's start again (runs after a reset see the same ones)."""
        self._state.reset()

    # -- event loop ------------------------------------------------------------------------

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as exc:  # surfaced to start() if it happens before listening
            if not ready.is_set():
                failure.append(exc)
                ready.set()
            else:
                _log.exception("SimServer event loop crashed")

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[_http.json_errors], client_max_size=_MAX_BODY)
        for add_routes in _ENDPOINTS:
            add_routes(app, self._state)
        self.batch_api.add_routes(app.router)
        return app

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=_SHUTDOWN_GRACE)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port, backlog=1024)
            await site.start()
            self._port = runner.addresses[0][1]
            ready.set()
            await self._stop_event.wait()
        finally:
            # Stops listening, closes idle keep-alive connections, gives in-flight requests
            # _SHUTDOWN_GRACE, then cancels them and closes their connections too.
            await runner.cleanup()
