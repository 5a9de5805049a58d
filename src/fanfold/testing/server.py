"""An OpenAI-compatible chat-completions server on loopback, with hidden limits and faults.

It exists so tests and benchmarks can drive the real ``langchain_openai.ChatOpenAI`` (via
``base_url``) over real sockets. The HTTP layer is ``aiohttp.web``, served from an event
loop of its own in a background thread.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import math
import threading
import time
from collections import Counter
from types import TracebackType
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.typedefs import Handler

from fanfold.testing._config import SimServerConfig
from fanfold.testing._faults import Dice, Fault
from fanfold.testing._limits import TokenBucket
from fanfold.testing._replies import (
    Reply,
    completion_payload,
    error_payload,
    last_user_text,
    limit_reply,
    plan_reply,
    stream_payloads,
)
from fanfold.testing.batch_api import BatchAPI, BatchServerConfig

__all__ = ["RequestRecord", "SimServer", "SimServerConfig"]

_log = logging.getLogger(__name__)

MODEL_ID = "sim-model"
_MODELS = {
    "object": "list",
    "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "fanfold"}],
}
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_DONE = b"data: [DONE]\n\n"
_MAX_BODY = 64 * 1024 * 1024
_SHUTDOWN_GRACE = 0.05
"""Seconds ``stop()`` gives in-flight requests before cancelling them (aiohttp's
``shutdown_timeout``; a stalled request waits it out twice, then is cancelled)."""
_dumps = functools.partial(json.dumps, separators=(",", ":"))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An OpenAI-style JSON error response."""
    return web.json_response(
        error_payload(status, message), status=status, headers=headers, dumps=_dumps
    )


def _hang_up(
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
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer routing and framing errors (404, 405, 413, ...) with OpenAI-style JSON."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _error(404, f"unknown path {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return _error(405, f"use {allowed}", {"Allow": allowed})
    except web.HTTPError as exc:
        return _error(exc.status, exc.reason)


class RequestRecord(NamedTuple):
    """One logged request to ``/v1/chat/completions``."""

    time: float
    """``time.monotonic()`` when the request arrived."""
    prompt: str
    """Text of the last user message ('' if none or the body was unreadable)."""
    outcome: int | str
    """HTTP status answered, or "stall" / "drop" / "malformed"."""
    params: dict[str, Any] = {}
    """The request's settings: its JSON body without `messages` and `tools`."""

    @property
    def max_tokens(self) -> int | None:
        """The request's `max_completion_tokens` or `max_tokens`, if it set one."""
        value = self.params.get("max_completion_tokens", self.params.get("max_tokens"))
        return value if isinstance(value, int) and not isinstance(value, bool) else None


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
        self._config = config or SimServerConfig()
        self.batch_api = BatchAPI(lambda: self._config, batch)
        """The `/v1/files` and `/v1/batches` endpoints, with their knobs and counters."""
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        # Guards everything below; requests touch it from the loop thread, tests from others.
        self._lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._seen_prompts: set[str] = set()
        self._tokens = 0
        self._in_flight = 0
        self._admitted = 0
        self._max_in_flight = 0
        self._dice = Dice(self._config.seed)
        self._bucket = self._new_bucket(self._config)
        self._ids = itertools.count(1)
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
        return self._config

    def update(self, **knobs: Any) -> SimServerConfig:
        """Change configuration knobs at runtime (validated like ``SimServerConfig``).

        Changing the seed restarts the random streams; changing the rate limit refills the
        token bucket.

        Returns:
            The new configuration.
        """
        with self._lock:
            old = self._config
            new = SimServerConfig.model_validate({**old.model_dump(), **knobs})
            if new.seed != old.seed:
                self._dice = Dice(new.seed)
            if (new.rate_limit_rps, new.effective_burst) != (
                old.rate_limit_rps,
                old.effective_burst,
            ):
                self._bucket = self._new_bucket(new)
            self._config = new
            return new

    @staticmethod
    def _new_bucket(config: SimServerConfig) -> TokenBucket | None:
        if config.rate_limit_rps is None:
            return None
        return TokenBucket(config.rate_limit_rps, config.effective_burst, time.monotonic())

    # -- counters --------------------------------------------------------------------------

    def requests_for(self, text: str) -> int:
        """Number of chat requests whose last user message contains ``text``."""
        with self._lock:
            return sum(1 for record in self._log if text in record.prompt)

    @property
    def tokens_answered(self) -> int:
        """Total tokens (prompt and completion) of the replies sent, as their usage says."""
        with self._lock:
            return self._tokens

    @property
    def request_count(self) -> int:
        """Number of chat requests received."""
        with self._lock:
            return len(self._log)

    def status_counts(self) -> dict[str | int, int]:
        """Chat requests per outcome (HTTP status, "stall", "drop" or "malformed")."""
        with self._lock:
            return dict(Counter(record.outcome for record in self._log))

    @property
    def max_in_flight(self) -> int:
        """Highest number of chat requests handled at once (rejected ones included)."""
        with self._lock:
            return self._max_in_flight

    @property
    def log(self) -> list[RequestRecord]:
        """A copy of the request log, in arrival order of the decisions."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Clear the log, counters and first-attempt memory; refill the token bucket."""
        with self._lock:
            self._log.clear()
            self._seen_prompts.clear()
            self._tokens = 0
            self._max_in_flight = self._in_flight
            self._bucket = self._new_bucket(self._config)

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
        app = web.Application(middlewares=[_json_errors], client_max_size=_MAX_BODY)
        # "{slash:/*}": trailing slashes are accepted.
        app.router.add_post("/v1/chat/completions{slash:/*}", self._chat)
        app.router.add_get("/v1/models{slash:/*}", self._models, allow_head=False)
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

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(_MODELS, dumps=_dumps)

    # -- chat completions ------------------------------------------------------------------

    def _record(self, arrived: float, prompt: str, outcome: int | str, body: Any = None) -> None:
        params = (
            {k: v for k, v in body.items() if k not in ("messages", "tools")}
            if isinstance(body, dict)
            else {}
        )
        with self._lock:
            self._log.append(RequestRecord(arrived, prompt, outcome, params))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.read()
        except ConnectionError:  # the client went away mid-body
            return _hang_up(request)
        arrived = time.monotonic()
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._chat_checked(request, raw, arrived)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _chat_checked(
        self, request: web.Request, raw: bytes, arrived: float
    ) -> web.StreamResponse:
        config = self._config
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        prompt = last_user_text(body)
        if config.api_key is not None and (
            request.headers.get("authorization") != f"Bearer {config.api_key}"
        ):
            self._record(arrived, prompt, 401)
            return _error(401, "Incorrect API key provided.")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._record(arrived, prompt, 400)
            return _error(400, "request body must be a JSON object with a 'messages' list")
        retry_ms = self._admit(config, arrived)
        if retry_ms is not None:
            self._record(arrived, prompt, 429)
            return self._rate_limited(
                retry_ms, config.retry_after_header, hints=config.retry_after_hints
            )
        try:
            return await self._chat_admitted(request, config, body, prompt, arrived)
        finally:
            with self._lock:
                self._admitted -= 1

    def _admit(self, config: SimServerConfig, now: float) -> int | None:
        """Apply the hidden limits; returns None if admitted, else the retry-after in ms."""
        with self._lock:
            limit = config.rate_limit_concurrency
            if limit is not None and self._admitted >= limit:
                expected = config.latency_median or config.latency
                return config.retry_after_ms or max(1, math.ceil(expected * 1000))
            if self._bucket is not None:
                wait = self._bucket.take(now)
                if wait > 0:
                    return config.retry_after_ms or max(1, math.ceil(wait * 1000))
            self._admitted += 1
            return None

    @staticmethod
    def _rate_limited(
        retry_ms: int, header: str | None = None, *, hints: bool = True
    ) -> web.Response:
        headers = {"retry-after-ms": str(retry_ms), "Retry-After": str(math.ceil(retry_ms / 1000))}
        if header is not None:
            headers = {"Retry-After": header}
        if not hints:  # as a gateway's concurrency limit answers: no hint at all
            headers = {}
        message = f"Rate limit reached for {MODEL_ID}. Please try again in {retry_ms}ms."
        return _error(429, message, headers)

    def _draw(self, config: SimServerConfig, prompt: str) -> tuple[Fault | None, float]:
        with self._lock:
            first_attempt = prompt not in self._seen_prompts
            self._seen_prompts.add(prompt)
            fault = None
            if first_attempt or not config.fault_first_attempts_only:
                fault = self._dice.fault(config)
            return fault, self._dice.latency(config)

    async def _chat_admitted(
        self,
        request: web.Request,
        config: SimServerConfig,
        body: dict[str, Any],
        prompt: str,
        arrived: float,
    ) -> web.StreamResponse:
        for needle, status in config.fail_prompts.items():
            if needle in prompt:
                self._record(arrived, prompt, status)
                if status == 429:
                    return self._rate_limited(
                        config.retry_after_ms or 1000, config.retry_after_header
                    )
                return _error(status, f"prompt matched {needle!r}")
        fault, latency = self._draw(config, prompt)
        if fault == "stall":
            self._record(arrived, prompt, "stall")
            await asyncio.sleep(config.stall_seconds)
            return _hang_up(request)
        if fault == 500 or fault == 503:
            self._record(arrived, prompt, fault)
            await asyncio.sleep(latency)
            message = "The server had an error while processing your request."
            if fault == 503:
                message = "The server is overloaded or not ready yet."
            return _error(fault, message)
        try:
            reply = plan_reply(
                body,
                seed=config.seed,
                reply_tokens=config.reply_tokens,
                scripted=config.scripted,
                scripted_form=config.scripted_form,
            )
            reply = limit_reply(reply, body, config.finish_prompts)
        except Exception as exc:  # a simulator bug should reach the test as a readable 500
            _log.exception("SimServer failed to build a reply")
            self._record(arrived, prompt, 500)
            return _error(500, f"simulator error: {exc!r}")
        self._record(arrived, prompt, fault or 200, body)
        with self._lock:
            self._tokens += reply.prompt_tokens + reply.completion_tokens
        if latency > 0:
            await asyncio.sleep(latency)
        model = str(body.get("model") or MODEL_ID)
        id_ = f"chatcmpl-sim{next(self._ids)}"
        created = int(time.time())
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            payloads = stream_payloads(
                reply, model=model, id_=id_, created=created, include_usage=include_usage
            )
            return await self._stream(request, payloads, reply, config, fault)
        data = _dumps(completion_payload(reply, model=model, id_=id_, created=created)).encode()
        if fault == "malformed":
            return web.Response(body=data[: len(data) // 2], content_type="application/json")
        if fault == "drop":
            return await self._drop(request, data)
        return web.Response(body=data, content_type="application/json")

    @staticmethod
    async def _drop(request: web.Request, data: bytes) -> web.StreamResponse:
        """Promise ``data`` in the headers, send half of it, then close the connection."""
        response = web.StreamResponse()
        response.content_type = "application/json"
        response.content_length = len(data)
        try:
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
        except ConnectionError:  # the client went away already
            pass
        return _hang_up(request, response)

    async def _stream(
        self,
        request: web.Request,
        payloads: list[dict[str, Any]],
        reply: Reply,
        config: SimServerConfig,
        fault: Fault | None,
    ) -> web.StreamResponse:
        """Answer with server-sent events (chunked by aiohttp, as the client speaks HTTP/1.1)."""
        events = [b"data: " + _dumps(p).encode() + b"\n\n" for p in payloads]
        if fault == "malformed":
            events.insert(1, b'data: {"id": "chatcmpl-sim", "choices": [\n\n')
        response = web.StreamResponse(headers=_SSE_HEADERS)
        # Content chunks: those between the role chunk and the finish chunk.
        n_content = len(payloads) - 2 - (1 if "usage" in payloads[-1] else 0)
        try:
            await response.prepare(request)
            if fault == "drop":
                await response.write(b"".join(events[: max(1, len(events) // 2)]))
                return _hang_up(request, response)
            if config.token_delay <= 0 or n_content <= 1 or fault == "malformed":
                await response.write_eof(b"".join(events) + _DONE)
                return response
            # Role chunk plus first content chunk go out at once; later content is paced.
            await response.write(events[0] + events[1])
            for event in events[2 : 1 + n_content]:
                await asyncio.sleep(config.token_delay)
                await response.write(event)
            await response.write_eof(b"".join(events[1 + n_content :]) + _DONE)
            return response
        except ConnectionError:  # the client went away mid-stream
            return _hang_up(request, response)
