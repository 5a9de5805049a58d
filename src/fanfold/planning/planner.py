"""Ask a chat model to split a goal into a TaskPlan, retrying with the validation error."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import Runnable, RunnableConfig

from fanfold._text import content_text
from fanfold.errors import PlanError, PlanValidationError
from fanfold.models.resolve import resolve_model
from fanfold.plan import TaskPlan
from fanfold.planning import prompts
from fanfold.planning.drafts import FanfoldPlan, FanfoldSubtask, plan_from_data
from fanfold.planning.plan_yaml import plan_to_yaml
from fanfold.state import TokenUsage

__all__ = [
    "FanfoldPlan",
    "FanfoldSubtask",
    "PlannerError",
    "amake_plan",
    "amake_plan_with_usage",
    "make_plan",
    "make_plan_with_usage",
    "plan_from_data",
    "plan_to_yaml",
]

_GOAL_SNIPPET = 60
PLANNER_CONFIG: RunnableConfig = {"run_name": "fanfold.plan", "tags": ["fanfold:planner"]}


class PlannerError(PlanError):
    """The model gave no valid plan within the attempt budget."""

    def __init__(self, goal: str, *, attempts: int, last_error: PlanError) -> None:
        snippet = " ".join(goal.split())
        if len(snippet) > _GOAL_SNIPPET:
            snippet = snippet[:_GOAL_SNIPPET].rstrip() + "..."
        tries = "attempt" if attempts == 1 else "attempts"
        super().__init__(
            f"no valid plan for goal {snippet!r} after {attempts} {tries}; the last reply was "
            f"rejected: {last_error}. Try more attempts, a more capable model or a more "
            "specific goal, or write the plan file by hand"
        )
        self.goal = goal
        self.attempts = attempts
        self.last_error = last_error


# -- public API ----------------------------------------------------------------------------


def make_plan(
    goal: str,
    *,
    model: BaseChatModel | str | None = None,
    attempts: int = 3,
    inputs: Mapping[str, str] | None = None,
    max_subtasks: int = 12,
) -> TaskPlan:
    """Ask a chat model to split `goal` into a validated TaskPlan.

    Args:
        goal: the job to plan, in plain words.
        model: a chat model, a "provider:model" string, "simulated", or None for the
            default model. Models without tool calling are asked for JSON text.
        attempts: model calls allowed; each rejected plan is sent back with the reason.
        inputs: run inputs the plan may use, name -> description.
        max_subtasks: the most subtasks the plan may have.

    Returns:
        The plan; it declares the run inputs its prompts use.

    Raises:
        PlannerError: no reply was a valid plan; `last_error` is the last PlanError.
        PlanValidationError: the goal is empty.
        ModelResolutionError: `model` cannot be resolved.
        ValueError: `attempts` or `max_subtasks` is below 1.

    A failing model call (network, provider error) is not retried here: its exception
    propagates as raised.
    """
    plan, _ = make_plan_with_usage(
        goal, model=model, attempts=attempts, inputs=inputs, max_subtasks=max_subtasks
    )
    return plan


async def amake_plan(
    goal: str,
    *,
    model: BaseChatModel | str | None = None,
    attempts: int = 3,
    inputs: Mapping[str, str] | None = None,
    max_subtasks: int = 12,
) -> TaskPlan:
    """Async `make_plan`: the same arguments, result and errors."""
    plan, _ = await amake_plan_with_usage(
        goal, model=model, attempts=attempts, inputs=inputs, max_subtasks=max_subtasks
    )
    return plan


def make_plan_with_usage(
    goal: str,
    *,
    model: BaseChatModel | str | None = None,
    attempts: int = 3,
    inputs: Mapping[str, str] | None = None,
    max_subtasks: int = 12,
) -> tuple[TaskPlan, TokenUsage]:
    """`make_plan`, also returning the tokens of every planner call (rejected ones too)."""
    session = PlannerSession(
        goal, model, attempts=attempts, inputs=inputs, max_subtasks=max_subtasks
    )
    for _ in range(attempts):
        runnable, messages = session.request()
        plan = session.receive(runnable.invoke(messages, config=PLANNER_CONFIG))
        if plan is not None:
            return plan, session.usage
    raise session.failure()


async def amake_plan_with_usage(
    goal: str,
    *,
    model: BaseChatModel | str | None = None,
    attempts: int = 3,
    inputs: Mapping[str, str] | None = None,
    max_subtasks: int = 12,
) -> tuple[TaskPlan, TokenUsage]:
    """Async `make_plan_with_usage`."""
    session = PlannerSession(
        goal, model, attempts=attempts, inputs=inputs, max_subtasks=max_subtasks
    )
    for _ in range(attempts):
        runnable, messages = session.request()
        plan = session.receive(await runnable.ainvoke(messages, config=PLANNER_CONFIG))
        if plan is not None:
            return plan, session.usage
    raise session.failure()


# -- the conversation ----------------------------------------------------------------------


class PlannerSession:
    """One planning conversation; sync and async loops share it and differ only in I/O."""

    def __init__(
        self,
        goal: str,
        model: BaseChatModel | str | None,
        *,
        attempts: int,
        inputs: Mapping[str, str] | None,
        max_subtasks: int,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        if max_subtasks < 1:
            raise ValueError(f"max_subtasks must be at least 1, not {max_subtasks}")
        if not goal or not goal.strip():
            raise PlanValidationError(
                "the goal is empty; describe the job to plan, e.g. 'Compare three note-taking "
                "apps for a small team'"
            )
        self.goal = goal.strip()
        self.inputs = dict(inputs or {})
        self.max_subtasks = max_subtasks
        self.usage = TokenUsage()
        self.calls = 0
        self.last_error: PlanError | None = None
        self.model = resolve_model(model)
        self.structured: Runnable[Any, Any] | None
        try:
            self.structured = self.model.with_structured_output(FanfoldPlan, include_raw=True)
        except NotImplementedError:
            self.structured = None
        self.messages: list[BaseMessage] = [
            SystemMessage(prompts.SYSTEM_PROMPT),
            HumanMessage(
                prompts.request_prompt(
                    self.goal,
                    inputs=self.inputs,
                    max_subtasks=max_subtasks,
                    json_reply=self.structured is None,
                )
            ),
        ]

    def request(self) -> tuple[Runnable[Any, Any], list[BaseMessage]]:
        """What to call next, and with which messages (a copy: the runnable may keep it)."""
        self.calls += 1
        runnable = self.structured if self.structured is not None else self.model
        return runnable, list(self.messages)

    def receive(self, output: Any) -> TaskPlan | None:
        """Take one reply: the plan if it is valid, else None after queueing the feedback."""
        if isinstance(output, Mapping):
            raw, parsed = output.get("raw"), output.get("parsed")
            parse_failed = output.get("parsing_error") is not None
        else:
            raw, parsed, parse_failed = output, None, False
        if not isinstance(raw, AIMessage):
            raw = AIMessage(content=content_text(getattr(raw, "content", raw)))
        self.usage += TokenUsage.from_metadata(raw.usage_metadata)
        try:
            data = parsed.model_dump() if isinstance(parsed, FanfoldPlan) else reply_data(raw)
            return plan_from_data(data, inputs=self.inputs, max_subtasks=self.max_subtasks)
        except PlanError as exc:
            self.last_error = exc
        # A reply with neither a tool call nor a structured result means the model does
        # not follow the schema: ask for JSON text from now on.
        tried_schema = bool(raw.tool_calls or raw.invalid_tool_calls) or parse_failed
        if self.structured is not None and parsed is None and not tried_schema:
            self.structured = None
        self.messages.append(raw)
        for call in raw.tool_calls:
            # Providers refuse a conversation where a tool call has no answer.
            if call.get("id"):
                note = prompts.rejection_note(str(self.last_error))
                self.messages.append(ToolMessage(note, tool_call_id=call["id"]))
        # Without a tool call the reply was text (or a response format): spell out the JSON.
        json_reply = self.structured is None or not raw.tool_calls
        self.messages.append(
            HumanMessage(prompts.retry_prompt(str(self.last_error), json_reply=json_reply))
        )
        return None

    def failure(self) -> PlannerError:
        assert self.last_error is not None
        return PlannerError(self.goal, attempts=self.calls, last_error=self.last_error)


def reply_data(raw: AIMessage) -> Any:
    """The plan data in a reply: its plan tool call's arguments, or JSON in its text."""
    calls = raw.tool_calls
    if calls:
        chosen = next((c for c in calls if c["name"] == prompts.SCHEMA_NAME), calls[0])
        return chosen["args"]
    if raw.invalid_tool_calls:
        bad = raw.invalid_tool_calls[0]
        raise PlanValidationError(
            f"the {prompts.SCHEMA_NAME} tool call's arguments are not valid JSON "
            f"({bad.get('error') or 'unparsable'}); send them as one JSON object"
        )
    return extract_json(content_text(raw.content))


def extract_json(text: str) -> Any:
    """The JSON object in a reply, bare or in a ```json fence, with prose around it.

    Prefers an object that has a `subtasks` key, so an example object in the prose does
    not win over the plan.

    Raises:
        PlanValidationError: the text holds no JSON object.
    """
    # Scanning from each "{" finds the object inside a fence as well as a bare one.
    candidates: list[Any] = []
    first_error: json.JSONDecodeError | None = None
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            # Only an object that starts like JSON ({"...) counts as a broken plan.
            if first_error is None and not candidates and text[start + 1 :].lstrip()[:1] == '"':
                first_error = exc
            start = text.find("{", start + 1)
            continue
        candidates.append(value)
        start = text.find("{", end)
    objects = [c for c in candidates if isinstance(c, dict)]
    for obj in objects:
        if "subtasks" in obj:
            return obj
        # Some models wrap the plan: {"plan": {...}} or {"name": ..., "arguments": {...}}.
        inner = [v for v in obj.values() if isinstance(v, dict) and "subtasks" in v]
        if len(inner) == 1:
            return inner[0]
    if first_error is not None:
        # The plan itself is broken JSON: say where, rather than judge a fragment of it.
        raise PlanValidationError(
            f"the reply's JSON is not valid: {first_error.msg} (line {first_error.lineno}, "
            f"column {first_error.colno}); send the plan as one valid JSON object"
        )
    if objects:
        return objects[0]
    shown = " ".join(text.split())[:80]
    raise PlanValidationError(
        f"the reply holds no JSON object (it starts {shown!r}); answer with the plan as one "
        'JSON object with "task" and "subtasks"'
    )
