"""Deterministic OpenAI chat-completion payloads: text, structured JSON, tool calls, errors."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from fanfold._text import content_text
from fanfold.models.schema_values import sample_from_schema
from fanfold.models.simulated import is_plan_schema, simulated_plan

REPLY_PREFIX = "[simulated server] "
MODEL_ID = "sim-model"
"""The model id `/v1/models` lists."""
_SUMMARY_WORDS = 6
_JSON_PIECE_CHARS = 16
_FILLER = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()

_ERROR_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    503: ("server_error", "service_unavailable"),
}


@dataclass(slots=True)
class Reply:
    """What the simulated model answers, before it is framed as JSON or SSE."""

    content: str | None
    pieces: list[str]
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def last_user_text(body: Any) -> str:
    """Text of the last ``user`` message in a chat-completions request body ('' if none)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def _prompt_seed(seed: int, prompt: str) -> int:
    return zlib.crc32(f"{seed}:{prompt}".encode())


def _count_prompt_tokens(body: dict[str, Any]) -> int:
    words = 0
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            words += len(content_text(message.get("content")).split()) + 1
    return max(words, 1)


def text_pieces(prompt: str, *, seed: int, tokens: int) -> list[str]:
    """The reply to ``prompt`` as streamed tokens: prefix, prompt summary, seeded filler."""
    words = prompt.split()[: min(_SUMMARY_WORDS, tokens - 1)]
    # A seeded walk over the filler list: deterministic and cheaper than seeding a Random.
    start, stride = divmod(_prompt_seed(seed, prompt), 13)
    step = 1 + 2 * stride  # odd and below 26, hence coprime with the 26 filler words
    words += [_FILLER[(start + i * step) % len(_FILLER)] for i in range(tokens - 1 - len(words))]
    return [REPLY_PREFIX] + [w if i == 0 else " " + w for i, w in enumerate(words)]


def _json_pieces(text: str) -> list[str]:
    return [text[i : i + _JSON_PIECE_CHARS] for i in range(0, len(text), _JSON_PIECE_CHARS)]


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function tool to call, or None to answer with content.

    "auto" (or no tool_choice) calls the first tool unless the conversation ends with a
    tool result, so simple agent loops terminate.
    """
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "function" in t]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for tool in tools:
            if tool["function"].get("name") == name:
                function: dict[str, Any] = tool["function"]
                return function
        return None
    messages = body.get("messages") or [None]
    if choice == "auto" and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return None
    first: dict[str, Any] = tools[0]["function"]
    return first


_NO_SCRIPT = object()


def _scripted(prompt: str, scripted: dict[str, Any]) -> Any:
    for needle, value in scripted.items():
        if needle in prompt:
            return value
    return _NO_SCRIPT


def _asked_schema(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Name and JSON schema of the tool the reply calls, or of the json_schema asked for."""
    tool = _chosen_tool(body)
    if tool is not None:
        return str(tool.get("name", "tool")), tool.get("parameters") or {}
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        return str(spec.get("name", "value")), spec.get("schema") or {}
    return None


def _planned(body: dict[str, Any], seed: int) -> Any:
    """A valid plan if ``body`` asks for fanfold's planner schema, as the simulated model
    answers it; else no script."""
    asked = _asked_schema(body)
    if asked is None or not is_plan_schema(*asked):
        return _NO_SCRIPT
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    prompt = "\n".join(content_text(m.get("content")) for m in messages)
    return simulated_plan(seed, prompt, last_user_text(body))


def plan_reply(
    body: dict[str, Any],
    *,
    seed: int,
    reply_tokens: int,
    scripted: dict[str, Any] | None = None,
    scripted_form: str = "auto",
    plans: bool = False,
) -> Reply:
    """Decide the reply to a chat-completions request body, deterministically.

    With ``plans``, a request for fanfold's planner schema gets a valid plan for its goal.
    """
    prompt = last_user_text(body)
    value_seed = _prompt_seed(seed, prompt)
    prompt_tokens = _count_prompt_tokens(body)
    value = _scripted(prompt, scripted or {})
    if value is _NO_SCRIPT and plans:
        value = _planned(body, seed)
    if value is not _NO_SCRIPT and scripted_form == "text":
        text = f"Here is the plan:\n```json\n{json.dumps(value, indent=1)}\n```\nDone."
        pieces = _json_pieces(text)
        return Reply(text, pieces, None, "stop", prompt_tokens, len(pieces))
    tool = _chosen_tool(body)
    if tool is not None:
        name = str(tool.get("name", "tool"))
        schema = tool.get("parameters") or {"type": "object", "properties": {}}
        if value is _NO_SCRIPT:
            value = sample_from_schema(schema, seed=value_seed, name=name)
        arguments = json.dumps(value)
        call = {
            "id": f"call_{zlib.crc32(f'{value_seed}:{name}'.encode()):08x}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        completion = max(1, len(arguments) // 4)
        return Reply(None, _json_pieces(arguments), [call], "tool_calls", prompt_tokens, completion)
    response_format = body.get("response_format") or {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") or {"type": "object", "properties": {}}
        name = str(spec.get("name", "value"))
        if value is _NO_SCRIPT:
            value = sample_from_schema(schema, seed=value_seed, name=name)
        text = json.dumps(value)
        pieces = _json_pieces(text)
        return Reply(text, pieces, None, "stop", prompt_tokens, len(pieces))
    if value is not _NO_SCRIPT:
        text = json.dumps(value)
        pieces = _json_pieces(text)
        return Reply(text, pieces, None, "stop", prompt_tokens, len(pieces))
    pieces = text_pieces(prompt, seed=seed, tokens=reply_tokens)
    text = "".join(pieces)
    if kind == "json_object":
        text = json.dumps({"reply": text})
        pieces = _json_pieces(text)
    return Reply(text, pieces, None, "stop", prompt_tokens, len(pieces))


def limit_reply(reply: Reply, body: dict[str, Any], finish_prompts: dict[str, str]) -> Reply:
    """`reply` cut to the request's `max_tokens` (finish_reason "length"), or ended with
    the finish_reason `finish_prompts` gives the prompt ("content_filter": empty)."""
    prompt = last_user_text(body)
    for needle, reason in finish_prompts.items():
        if needle in prompt:
            if reason == "content_filter":
                return Reply("", [], None, reason, reply.prompt_tokens, 0)
            return Reply(
                reply.content,
                reply.pieces,
                reply.tool_calls,
                reason,
                reply.prompt_tokens,
                reply.completion_tokens,
            )
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    if not isinstance(cap, int) or isinstance(cap, bool) or reply.completion_tokens <= cap:
        return reply
    if reply.tool_calls is not None:
        calls = [
            {
                **call,
                "function": {
                    **call["function"],
                    "arguments": call["function"]["arguments"][: cap * 4],
                },
            }
            for call in reply.tool_calls
        ]
        return Reply(None, [], calls, "length", reply.prompt_tokens, cap)
    pieces = reply.pieces[:cap]
    return Reply("".join(pieces), pieces, None, "length", reply.prompt_tokens, cap)


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def completion_payload(reply: Reply, *, model: str, id_: str, created: int) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls is not None:
        message["tool_calls"] = reply.tool_calls
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        ],
        "usage": _usage(reply),
    }


def stream_payloads(
    reply: Reply, *, model: str, id_: str, created: int, include_usage: bool
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed reply (before ``[DONE]``).

    The first is the role chunk; then one per content piece (or, for one tool call, its
    head and then one per piece of its arguments; for several, one per call); then the
    finish chunk; then, if ``include_usage``, a usage chunk with no choices.
    """
    base = {"id": id_, "object": "chat.completion.chunk", "created": created, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    out = [chunk({"role": "assistant", "content": "" if reply.tool_calls is None else None})]
    if reply.tool_calls is not None and len(reply.tool_calls) == 1 and reply.pieces:
        (call,) = reply.tool_calls
        head = {**call, "function": {**call["function"], "arguments": ""}}
        out.append(chunk({"tool_calls": [{"index": 0, **head}]}))
        out.extend(
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in reply.pieces
        )
    elif reply.tool_calls is not None:
        for index, call in enumerate(reply.tool_calls):
            out.append(chunk({"tool_calls": [{"index": index, **call}]}))
    else:
        out.extend(chunk({"content": piece}) for piece in reply.pieces)
    out.append(chunk({}, reply.finish_reason))
    if include_usage:
        out.append({**base, "choices": [], "usage": _usage(reply)})
    return out


def error_payload(status: int, message: str) -> dict[str, Any]:
    """An OpenAI-style error body for ``status``."""
    kind, code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", str(status))
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
