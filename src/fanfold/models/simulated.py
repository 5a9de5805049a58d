"""A deterministic, offline LangChain chat model for demos, docs, tests and benchmarks.

`SimulatedChatModel` answers every prompt with text that is a pure function of
`(seed, prompt)`, takes a reproducible amount of time to do so, reports token usage,
streams token by token, and answers with a tool call when tools are bound, so that
`with_structured_output` works without any network access.

Asked for fanfold's planner schema (the `FanfoldPlan` tool), it answers with a valid
plan built from the goal instead of sampled values: a few independent subtasks, one per
aspect of the goal, and a final subtask that combines them. Its task and every prompt
start with `[simulated plan]`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCall, tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from fanfold._text import content_text
from fanfold.models.schema_values import sample_from_schema

__all__ = [
    "PLAN_PREFIX",
    "REPLY_PREFIX",
    "SimulatedChatModel",
    "SimulatedModelError",
    "is_plan_schema",
    "simulated_plan",
]

#: Every plain-text reply starts with this marker.
REPLY_PREFIX = "[simulated reply]"
#: A simulated plan's task and each of its prompts start with this marker.
PLAN_PREFIX = "[simulated plan]"
# What fanfold.planning.prompts sends: the schema's tool name, the goal between tag lines
# and the size limit. Kept literal so the model does not depend on the planner package;
# tests/test_planner.py fails if the two drift apart.
_PLAN_TOOL = "FanfoldPlan"
_PLAN_GOAL = re.compile(r"<goal>\n(.*?)\n</goal>", re.DOTALL)
_PLAN_LIMIT = re.compile(r"at most (\d+) subtasks")
_PLAN_INPUTS = re.compile(
    r"Run inputs, given when the plan runs\.[^\n]*\n((?:- \{[^\n]*(?:\n|$))+)"
)
_PLAN_INPUT_NAME = re.compile(r"^- \{([^{}\s]+)\}", re.MULTILINE)
_PLAN_ASPECTS = (
    ("background", "Summarise the background and context that matter for"),
    ("approach", "Propose a practical approach, step by step, for"),
    ("evidence", "Collect the key facts, figures and examples that bear on"),
    ("risks", "List the main risks and open questions, each with a way to handle it, for"),
    ("alternatives", "Compare two or three alternative ways to achieve"),
    ("audience", "Describe who benefits from the result and what they need from it, for"),
)
_SNIPPET_CHARS = 60
_FIRST_TOKEN_SHARE = 0.3
_TOOL_CHOICES_ANY = frozenset({"auto", "any", "required"})
_HAS_CHUNK_POSITION = "chunk_position" in AIMessageChunk.model_fields
_FILLER = (
    "the a of and to in plan step result data model answer task value output summary "
    "detail note item list point review check draft final analysis context input "
    "source report update status part section example reason cause effect option choice "
    "estimate figure table chart trend risk benefit cost time team goal metric signal "
    "pattern outline brief overview finding insight"
).split()


class SimulatedModelError(RuntimeError):
    """Raised by `SimulatedChatModel` when the prompt contains a `fail_on` marker."""


@dataclass(frozen=True)
class _Reply:
    """Everything one call answers, decided before any waiting happens."""

    pieces: tuple[str, ...]  # streamed text tokens, or the JSON arguments split up
    tool_call: ToolCall | None
    usage: UsageMetadata
    latency: float
    failure: str | None


class SimulatedChatModel(BaseChatModel):
    """Deterministic offline chat model: same seed and prompt, same reply and latency."""

    seed: int = 0
    """Seed mixed into every draw (reply words, latency, tool arguments)."""
    latency: float | None = Field(default=None, ge=0)
    """Fixed total seconds per call; None draws a lognormal latency per prompt."""
    latency_median: float = Field(default=0.05, ge=0)
    """Median of the lognormal latency (seconds) used when `latency` is None."""
    latency_sigma: float = Field(default=0.5, ge=0)
    """Sigma (log-space spread) of the lognormal latency."""
    latency_fn: Callable[[list[BaseMessage]], float] | None = Field(default=None, exclude=True)
    """Per-call latency in seconds from the input messages; overrides the other knobs."""
    output_tokens: int = Field(default=24, ge=1)
    """Rough reply length in words (each reply varies deterministically within +-50%)."""
    fail_on: tuple[str, ...] = ()
    """If the last human message contains one of these, the call raises after its latency."""
    model_name: str = "simulated"
    """Reported in `response_metadata` and tracing."""

    @property
    def _llm_type(self) -> str:
        return "simulated"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "seed": self.seed,
            "latency": self.latency,
            "latency_median": self.latency_median,
            "latency_sigma": self.latency_sigma,
            "output_tokens": self.output_tokens,
            "fail_on": list(self.fail_on),
        }

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools; calls then answer with a tool call to the chosen (or first) tool."""
        return self.bind(
            tools=[convert_to_openai_tool(tool) for tool in tools],
            tool_choice=tool_choice,
            **kwargs,
        )

    def latency_for(self, input: LanguageModelInput) -> float:
        """Seconds a call with this input takes (fixed, drawn, or from `latency_fn`)."""
        messages = self._convert_input(input).to_messages()
        return self._latency(messages, _prompt_text(messages))

    # -- planning ----------------------------------------------------------------------

    def _plan(self, messages: list[BaseMessage], kwargs: Mapping[str, Any]) -> _Reply:
        """Decide the whole reply for `messages`; pure apart from `latency_fn`."""
        prompt = _prompt_text(messages)
        human = _last_human_text(messages)
        latency = self._latency(messages, prompt)
        input_tokens = max(1, sum(len(content_text(m.content).split()) for m in messages))
        failure = next((marker for marker in self.fail_on if marker and marker in human), None)
        empty = UsageMetadata(input_tokens=input_tokens, output_tokens=0, total_tokens=0)
        if failure is not None:
            return _Reply((), None, empty, latency, failure)

        tool = _select_tool(kwargs.get("tools"), kwargs.get("tool_choice"))
        call: ToolCall | None = None
        if tool is not None:
            name, parameters = tool
            digest = _digest(self.seed, "tool", name, prompt)
            args: Any
            if is_plan_schema(name, parameters):
                args = simulated_plan(self.seed, prompt, human)
            else:
                seed = int.from_bytes(digest[:4], "big")
                args = sample_from_schema(parameters, seed=seed, name=name)
            if not isinstance(args, dict):
                args = {}
            call = tool_call(name=name, args=args, id=f"call_sim_{digest[4:10].hex()}")
            pieces = _json_pieces(json.dumps(args, ensure_ascii=False))
        else:
            pieces = self._text_pieces(human, prompt)
        usage = UsageMetadata(
            input_tokens=input_tokens,
            output_tokens=len(pieces),
            total_tokens=input_tokens + len(pieces),
        )
        return _Reply(pieces, call, usage, latency, None)

    def _latency(self, messages: list[BaseMessage], prompt: str) -> float:
        if self.latency_fn is not None:
            value = float(self.latency_fn(messages))
        elif self.latency is not None:
            value = float(self.latency)
        else:
            rng = _rng(self.seed, "latency", prompt)
            value = self.latency_median * math.exp(self.latency_sigma * rng.normalvariate(0, 1))
        return value if math.isfinite(value) and value > 0 else 0.0

    def _text_pieces(self, human: str, prompt: str) -> tuple[str, ...]:
        rng = _rng(self.seed, "reply", prompt)
        low = max(1, math.ceil(self.output_tokens * 0.5))
        target = rng.randint(low, max(low, math.floor(self.output_tokens * 1.5)))
        snippet = " ".join(human.split())
        if len(snippet) > _SNIPPET_CHARS:
            snippet = snippet[:_SNIPPET_CHARS].rstrip()
        words = [*REPLY_PREFIX.split(), *snippet.split(), "..."]
        words += [rng.choice(_FILLER) for _ in range(max(0, target - len(words)))]
        return tuple(f"{word} " for word in words[:-1]) + (words[-1],)

    def _message(self, reply: _Reply) -> AIMessage:
        return AIMessage(
            content="" if reply.tool_call else "".join(reply.pieces),
            tool_calls=[reply.tool_call] if reply.tool_call else [],
            usage_metadata=reply.usage,
            response_metadata=self._response_metadata(),
            id=_message_id(),
        )

    def _chunk(self, reply: _Reply, index: int, message_id: str) -> ChatGenerationChunk:
        piece = reply.pieces[index]
        extra: dict[str, Any] = {}
        if reply.tool_call is not None:
            first = index == 0
            extra["tool_call_chunks"] = [
                tool_call_chunk(
                    name=reply.tool_call["name"] if first else None,
                    args=piece,
                    id=reply.tool_call["id"] if first else None,
                    index=0,
                )
            ]
        if index == len(reply.pieces) - 1:
            extra["usage_metadata"] = reply.usage
            extra["response_metadata"] = self._response_metadata()
            if _HAS_CHUNK_POSITION:
                extra["chunk_position"] = "last"
        content = "" if reply.tool_call is not None else piece
        return ChatGenerationChunk(message=AIMessageChunk(content=content, id=message_id, **extra))

    def _response_metadata(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "finish_reason": "stop"}

    def _error(self, reply: _Reply) -> SimulatedModelError:
        return SimulatedModelError(
            f"simulated failure: the last human message contains the fail_on marker "
            f"{reply.failure!r} (model {self.model_name!r})"
        )

    # -- LangChain hooks ---------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        start = time.monotonic()
        reply = self._plan(messages, kwargs)
        _sleep_until(start + reply.latency)
        if reply.failure is not None:
            raise self._error(reply)
        return ChatResult(generations=[ChatGeneration(message=self._message(reply))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        start = time.monotonic()
        reply = self._plan(messages, kwargs)
        await _asleep_until(start + reply.latency)
        if reply.failure is not None:
            raise self._error(reply)
        return ChatResult(generations=[ChatGeneration(message=self._message(reply))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        start = time.monotonic()
        reply = self._plan(messages, kwargs)
        if reply.failure is not None:
            _sleep_until(start + reply.latency)
            raise self._error(reply)
        message_id = _message_id()
        for index in range(len(reply.pieces)):
            _sleep_until(start + _token_offset(index, len(reply.pieces), reply.latency))
            chunk = self._chunk(reply, index, message_id)
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        start = time.monotonic()
        reply = self._plan(messages, kwargs)
        if reply.failure is not None:
            await _asleep_until(start + reply.latency)
            raise self._error(reply)
        message_id = _message_id()
        for index in range(len(reply.pieces)):
            await _asleep_until(start + _token_offset(index, len(reply.pieces), reply.latency))
            chunk = self._chunk(reply, index, message_id)
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


# -- helpers ---------------------------------------------------------------------------


def _digest(seed: int, *parts: str) -> bytes:
    data = "\x1f".join((str(seed), *parts)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).digest()


def _rng(seed: int, *parts: str) -> random.Random:
    return random.Random(int.from_bytes(_digest(seed, *parts)[:8], "big"))


def _message_id() -> str:
    # Unique per call: LangGraph's add_messages would merge equal ids.
    return f"sim-{uuid.uuid4().hex}"


def _clean(text: str) -> str:
    """Replace lone surrogates so the reply is always encodable."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _last_human_text(messages: list[BaseMessage]) -> str:
    for message in reversed(messages):
        if message.type == "human":
            return _clean(content_text(message.content))
    return _clean(content_text(messages[-1].content)) if messages else ""


def _prompt_text(messages: list[BaseMessage]) -> str:
    """The full prompt as one string: every message's role, text and tool calls."""
    lines = []
    for message in messages:
        line = f"{message.type}: {content_text(message.content)}"
        calls = getattr(message, "tool_calls", None)
        if calls:
            line += " " + json.dumps(calls, sort_keys=True, default=str)
        lines.append(line)
    return "\n".join(lines)


def _select_tool(tools: Any, tool_choice: Any) -> tuple[str, dict[str, Any]] | None:
    """Return (name, parameters schema) of the tool to call, or None for a text reply."""
    if not tools or tool_choice is False or tool_choice == "none":
        return None
    specs = [_tool_spec(tool) for tool in tools]
    wanted: Any = None
    if isinstance(tool_choice, str) and tool_choice not in _TOOL_CHOICES_ANY:
        wanted = tool_choice
    elif isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        wanted = function.get("name") if isinstance(function, Mapping) else None
        wanted = wanted or tool_choice.get("name")
    if wanted is None:
        return specs[0]
    for spec in specs:
        if spec[0] == wanted:
            return spec
    names = ", ".join(repr(spec[0]) for spec in specs)
    raise ValueError(f"tool_choice {wanted!r} names no bound tool (bound: {names})")


def _tool_spec(tool: Any) -> tuple[str, dict[str, Any]]:
    if not (isinstance(tool, Mapping) and ("function" in tool or "name" in tool)):
        tool = convert_to_openai_tool(tool)
    body = tool.get("function", tool)
    parameters = body.get("parameters") or body.get("input_schema") or {}
    return str(body.get("name", "tool")), dict(parameters)


def is_plan_schema(name: str, schema: Mapping[str, Any]) -> bool:
    """Whether a tool or response schema is fanfold's planner schema."""
    properties = schema.get("properties")
    return name == _PLAN_TOOL and isinstance(properties, Mapping) and "subtasks" in properties


def simulated_plan(seed: int, prompt: str, human: str) -> dict[str, Any]:
    """A valid fanfold plan for the goal in a planner request, marked as simulated.

    Three or four independent aspect subtasks (drawn from the seed and the goal) and a
    final one that depends on them all, within the request's subtask limit. Every run
    input the request offers is used by the first subtasks' prompts, so the plan
    declares them all.
    """
    found = _PLAN_GOAL.search(prompt)
    goal = " ".join((found.group(1) if found else human).split()) or "the goal"
    limit = _PLAN_LIMIT.search(prompt)
    most = max(1, int(limit.group(1))) if limit else len(_PLAN_ASPECTS) + 1
    # The goal is user text inside a prompt template: keep its braces literal.
    text = goal.replace("{", "{{").replace("}", "}}")
    task = f"{PLAN_PREFIX} {text}"
    offered = _PLAN_INPUTS.search(prompt)
    names = _PLAN_INPUT_NAME.findall(offered.group(1)) if offered else []
    given = "".join(f"\n{name}: {{{name}}}" for name in names)
    if most == 1:
        answer = {"id": "answer", "prompt": f"{PLAN_PREFIX} {text}{given}"}
        return {"task": task, "subtasks": [answer]}
    rng = _rng(seed, "plan", goal)
    count = min(rng.choice((3, 4)), most - 1)
    free = [aspect for aspect in _PLAN_ASPECTS if aspect[0] not in names]  # ids != inputs
    picked = sorted(rng.sample(range(len(free)), min(count, len(free))))
    aspects = [free[i] for i in picked]
    subtasks: list[dict[str, Any]] = [
        {"id": sid, "prompt": f"{PLAN_PREFIX} {ask} this goal: {text}{given}", "depends_on": []}
        for sid, ask in aspects
    ]
    sections = "\n\n".join(f"{sid.capitalize()}:\n{{{sid}}}" for sid, _ in aspects)
    subtasks.append(
        {
            "id": "synthesis",
            "prompt": f"{PLAN_PREFIX} Combine the findings below into one answer to this goal: "
            f"{text}\n\n{sections}",
            "depends_on": [sid for sid, _ in aspects],
        }
    )
    return {"task": task, "subtasks": subtasks}


def _json_pieces(text: str) -> tuple[str, ...]:
    """Split JSON text into word-like pieces that concatenate back to `text`."""
    pieces: list[str] = []
    for word in text.split(" "):
        if pieces:
            pieces[-1] += " "
        pieces.append(word)
    return tuple(pieces) if pieces else ("{}",)


def _token_offset(index: int, count: int, latency: float) -> float:
    """Seconds after the start at which token `index` of `count` is released."""
    if count <= 1:
        return latency
    first = latency * _FIRST_TOKEN_SHARE
    return first + (latency - first) * index / (count - 1)


def _sleep_until(deadline: float) -> None:
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(remaining)


async def _asleep_until(deadline: float) -> None:
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(remaining)
