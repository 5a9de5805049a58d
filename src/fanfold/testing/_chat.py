"""The simulated server's OpenAI endpoints: ``/v1/chat/completions`` and ``/v1/models``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from fanfold.testing import _http
from fanfold.testing._config import SimServerConfig
from fanfold.testing._replies import (
    MODEL_ID,
    completion_payload,
    last_user_text,
    limit_reply,
    plan_reply,
    stream_payloads,
)
from fanfold.testing._state import SimState

_log = logging.getLogger("fanfold.testing.server")

_MODELS = {
    "object": "list",
    "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "fanfold"}],
}


def add_routes(app: web.Application, state: SimState) -> None:
    """Serve the chat-completions and models endpoints of ``state`` on ``app``."""
    chat = _Chat(state)
    # "{slash:/*}": trailing slashes are accepted.
    app.router.add_post("/v1/chat/completions{slash:/*}", chat.handle)
    app.router.add_get("/v1/models{slash:/*}", _models, allow_head=False)


async def _models(request: web.Request) -> web.StreamResponse:
    return web.json_response(_MODELS, dumps=_http.dumps)


class _Chat:
    """Answers chat-completions requests under the hidden limits and injected faults."""

    def __init__(self, state: SimState) -> None:
        self._state = state

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.read()
        except ConnectionError:  # the client went away mid-body
            return _http.hang_up(request)
        arrived = time.monotonic()
        self._state.enter()
        try:
            return await self._checked(request, raw, arrived)
        finally:
            self._state.leave()

    async def _checked(
        self, request: web.Request, raw: bytes, arrived: float
    ) -> web.StreamResponse:
        state = self._state
        config = state.config
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        prompt = last_user_text(body)
        if config.api_key is not None and (
            request.headers.get("authorization") != f"Bearer {config.api_key}"
        ):
            state.record(arrived, prompt, 401)
            return _http.error(401, "Incorrect API key provided.")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            state.record(arrived, prompt, 400)
            return _http.error(400, "request body must be a JSON object with a 'messages' list")
        retry_ms = state.admit(config, arrived)
        if retry_ms is not None:
            state.record(arrived, prompt, 429)
            if config.rate_limit_headers is not None:
                message = f"Rate limit reached for {MODEL_ID}."
                return _http.error(429, message, dict(config.rate_limit_headers))
            return _http.rate_limited(
                retry_ms, config.retry_after_header, hints=config.retry_after_hints
            )
        try:
            return await self._admitted(request, config, body, prompt, arrived)
        finally:
            state.release()

    async def _admitted(
        self,
        request: web.Request,
        config: SimServerConfig,
        body: dict[str, Any],
        prompt: str,
        arrived: float,
    ) -> web.StreamResponse:
        state = self._state
        for needle, status in config.fail_prompts.items():
            if needle in prompt:
                state.record(arrived, prompt, status)
                if status == 429:
                    return _http.rate_limited(
                        config.retry_after_ms or 1000, config.retry_after_header
                    )
                return _http.error(status, f"prompt matched {needle!r}")
        fault, latency = state.draw(config, prompt)
        if fault == "stall":
            state.record(arrived, prompt, "stall")
            await asyncio.sleep(config.stall_seconds)
            return _http.hang_up(request)
        if fault == 500 or fault == 503:
            state.record(arrived, prompt, fault)
            await asyncio.sleep(latency)
            message = "The server had an error while processing your request."
            if fault == 503:
                message = "The server is overloaded or not ready yet."
            return _http.error(fault, message)
        try:
            reply = plan_reply(
                body,
                seed=config.seed,
                reply_tokens=config.reply_tokens,
                scripted=config.scripted,
                scripted_form=config.scripted_form,
                plans=config.plans,
            )
            reply = limit_reply(reply, body, config.finish_prompts)
        except Exception as exc:  # a simulator bug should reach the test as a readable 500
            _log.exception("SimServer failed to build a reply")
            state.record(arrived, prompt, 500)
            return _http.error(500, f"simulator error: {exc!r}")
        state.record(arrived, prompt, fault or 200, body)
        state.add_tokens(reply.prompt_tokens + reply.completion_tokens)
        if latency > 0:
            await asyncio.sleep(latency)
        model = str(body.get("model") or MODEL_ID)
        id_ = state.next_id()
        created = int(time.time())
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            payloads = stream_payloads(
                reply, model=model, id_=id_, created=created, include_usage=include_usage
            )
            return await _http.stream(
                request, payloads, token_delay=config.token_delay, fault=fault
            )
        data = _http.dumps(completion_payload(reply, model=model, id_=id_, created=created))
        encoded = data.encode()
        if fault == "malformed":
            return web.Response(body=encoded[: len(encoded) // 2], content_type="application/json")
        if fault == "drop":
            return await _http.drop(request, encoded)
        headers = config.reply_headers or None
        return web.Response(body=encoded, content_type="application/json", headers=headers)
