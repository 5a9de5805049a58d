"""Stream the planner's reply: find each subtask's object the moment it is complete.

The reply is JSON, as a tool call's arguments (function calling), as the content of a
json_schema reply, or as JSON text. `PlanScanner` reads the text received so far and
hands out the plan's `task` once its string is closed and each object of `subtasks`
once its closing brace has arrived; `astream_plan_with_usage` runs the planner's
conversation (the same one as `amake_plan_with_usage`: retries with the reason) over a
streamed call and calls back with every complete subtask of every attempt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, message_chunk_to_message
from langchain_core.runnables import Runnable, RunnableBinding
from pydantic import ValidationError

from fanfold._text import content_text
from fanfold.errors import PlanError
from fanfold.plan import TaskPlan
from fanfold.planning import prompts
from fanfold.planning.planner import PLANNER_CONFIG, FanfoldPlan, PlannerSession, reply_data
from fanfold.state import TokenUsage

__all__ = ["PlanScanner", "SubtaskCallback", "astream_plan_with_usage"]

_SUBTASKS = re.compile(r'(?<!\\)"subtasks"\s*:\s*\[')
_TASK = re.compile(r'(?<!\\)"task"\s*:\s*(?=")')
_DECODER = json.JSONDecoder()

SubtaskCallback = Callable[[int, str, dict[str, Any]], Awaitable[None] | None]
"""(attempt, the plan's task, one complete subtask object) -> None, called as it streams."""


class PlanScanner:
    """The plan's task and its complete subtask objects, from the reply text so far.

    An object counts as complete only once its closing brace has arrived (it decodes as
    JSON on its own), so a prompt cut mid-string is never taken for a whole one.
    """

    def __init__(self) -> None:
        self.task: str | None = None
        self.subtasks: list[Any] = []
        self.announced = 0
        """How many of `subtasks` were passed on (see `astream_plan_with_usage`)."""
        self._pos: int | None = None
        self._closed = False

    def feed(self, text: str) -> list[Any]:
        """Read `text` (everything received so far); return the objects completed by it."""
        if self.task is None:
            match = _TASK.search(text)
            if match is not None:
                try:
                    value, _ = _DECODER.raw_decode(text, match.end())
                except json.JSONDecodeError:
                    value = None
                if isinstance(value, str):
                    self.task = value
        if self._pos is None:
            match = _SUBTASKS.search(text)
            if match is None:
                return []
            self._pos = match.end()
        found: list[Any] = []
        while not self._closed:
            pos = self._pos
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text):
                break
            if text[pos] == "]":
                self._closed = True
                break
            try:
                value, end = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError:
                break  # not complete yet (or broken: the whole reply is judged at the end)
            self._pos = end
            self.subtasks.append(value)
            found.append(value)
        return found


def _streamable(runnable: Runnable[Any, Any]) -> Runnable[Any, Any] | None:
    """The model call inside `with_structured_output(..., include_raw=True)`, or None.

    LangChain builds that runnable as `RunnableMap(raw=bound_model) | parser`; streaming
    the whole sequence would hold the reply back until the parser has it all, so the
    planner streams the bound model and parses the reply itself.
    """
    first = getattr(runnable, "first", None)
    steps = getattr(first, "steps__", None)
    if isinstance(steps, Mapping) and isinstance(steps.get("raw"), Runnable):
        raw: Runnable[Any, Any] = steps["raw"]
        return raw
    return None


def _with_stream_usage(runnable: Runnable[Any, Any], model: BaseChatModel) -> Runnable[Any, Any]:
    """Ask for token usage in the stream when the model has that switch (OpenAI, Anthropic).

    A streamed structured reply carries no response headers (langchain-openai warns when
    asked for them): the streamed call asks for none.
    """
    if (
        getattr(model, "include_response_headers", False)
        and isinstance(runnable, RunnableBinding)
        and runnable.bound is model
    ):
        quiet = model.model_copy(update={"include_response_headers": False})
        runnable = RunnableBinding(bound=quiet, kwargs=runnable.kwargs, config=runnable.config)
    if "stream_usage" in type(model).model_fields:
        return runnable.bind(stream_usage=True)
    return runnable


def _streamed_text(message: AIMessageChunk) -> str:
    """The reply's JSON so far: the plan tool call's arguments, else the text."""
    chunks = message.tool_call_chunks
    if chunks:
        chosen = next((c for c in chunks if c.get("name") == prompts.SCHEMA_NAME), chunks[0])
        return str(chosen.get("args") or "")
    return content_text(message.content)


def _structured_output(raw: AIMessage) -> dict[str, Any]:
    """What `with_structured_output(include_raw=True)` would have returned for `raw`."""
    try:
        parsed = FanfoldPlan.model_validate(reply_data(raw))
    except (PlanError, ValidationError) as exc:
        return {"raw": raw, "parsed": None, "parsing_error": exc}
    return {"raw": raw, "parsed": parsed, "parsing_error": None}


async def astream_plan_with_usage(
    goal: str,
    *,
    model: BaseChatModel | str | None = None,
    attempts: int = 3,
    inputs: Mapping[str, str] | None = None,
    max_subtasks: int = 12,
    on_subtask: SubtaskCallback | None = None,
    on_call: Callable[[int], Awaitable[None] | None] | None = None,
) -> tuple[TaskPlan, TokenUsage]:
    """`amake_plan_with_usage` over streamed calls, reporting subtasks as they arrive.

    Args:
        on_subtask: called with (attempt, task, subtask object) for each subtask object
            complete in the stream, once the plan's task is known; the object is the
            model's raw data, not yet validated.
        on_call: called with the attempt number before each planner call.

    The prompt asks for subtasks in dependency order. A model whose structured output
    cannot be streamed is called as `amake_plan_with_usage` does (its subtasks are
    reported when the reply is complete).

    Raises:
        The errors of `amake_plan_with_usage`.
    """
    session = PlannerSession(
        goal, model, attempts=attempts, inputs=inputs, max_subtasks=max_subtasks
    )
    for attempt in range(1, attempts + 1):
        if on_call is not None:
            outcome = on_call(attempt)
            if outcome is not None:
                await outcome
        runnable, messages = session.request()
        structured = session.structured is not None
        streamed = _streamable(runnable) if structured else runnable
        if streamed is None:
            reply = await runnable.ainvoke(messages, config=PLANNER_CONFIG)
        else:
            scanner = PlanScanner()
            joined: AIMessageChunk | None = None
            async for chunk in _with_stream_usage(streamed, session.model).astream(
                messages, config=PLANNER_CONFIG
            ):
                if not isinstance(chunk, AIMessageChunk):
                    continue
                joined = chunk if joined is None else joined + chunk
                await _announce(scanner, _streamed_text(joined), attempt, on_subtask)
            message = message_chunk_to_message(joined) if joined is not None else AIMessage("")
            assert isinstance(message, AIMessage)
            reply = _structured_output(message) if structured else message
        plan = session.receive(reply)
        if plan is not None:
            return plan, session.usage
    raise session.failure()


async def _announce(
    scanner: PlanScanner, text: str, attempt: int, on_subtask: SubtaskCallback | None
) -> None:
    """Pass on the subtask objects `text` completes, once the task is known."""
    scanner.feed(text)
    if on_subtask is None or scanner.task is None:
        return
    # Objects completed before the task was known are passed on once it is.
    pending = scanner.subtasks[scanner.announced :]
    scanner.announced = len(scanner.subtasks)
    for obj in pending:
        if isinstance(obj, dict):
            outcome = on_subtask(attempt, scanner.task, obj)
            if outcome is not None:
                await outcome
