"""Ask a chat model to split a goal into a TaskPlan, retrying with the validation error."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fanfold._text import content_text
from fanfold.errors import PlanError, PlanValidationError, did_you_mean
from fanfold.models.resolve import resolve_model
from fanfold.plan import SubTask, TaskPlan
from fanfold.plan.model_spec import ModelSpec
from fanfold.plan.template import placeholders
from fanfold.planning import prompts
from fanfold.state import TokenUsage

__all__ = [
    "FanfoldPlan",
    "FanfoldSubtask",
    "PlannerError",
    "amake_plan",
    "amake_plan_with_usage",
    "make_plan",
    "make_plan_with_usage",
    "plan_to_yaml",
]

_GOAL_SNIPPET = 60
_MAP_PLACEHOLDERS = frozenset({"item", "index"})
PLANNER_CONFIG: RunnableConfig = {"run_name": "fanfold.plan", "tags": ["fanfold:planner"]}


class FanfoldSubtask(BaseModel):
    """One subtask: a prompt that runs once its dependencies have finished."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Short unique id: letters, digits, '_' and '-'.")
    prompt: str = Field(
        description="The complete prompt; {id} inserts that subtask's output, {name} a run input."
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Ids whose outputs this prompt needs; empty for an independent subtask.",
    )
    map: str | None = Field(
        None,
        description="Run once per item of this list (a run input or a subtask's list output); "
        "{item} is the item. Only for lists known at run time.",
    )


class FanfoldPlan(BaseModel):
    """A fanfold plan: the overall task and the subtasks that do it."""

    model_config = ConfigDict(title=prompts.SCHEMA_NAME, extra="forbid")

    task: str = Field(description="One sentence that states the overall job.")
    subtasks: list[FanfoldSubtask]


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


# -- validation ----------------------------------------------------------------------------


def plan_from_data(data: Any, *, inputs: Mapping[str, str], max_subtasks: int) -> TaskPlan:
    """Validate a reply's plan data as a TaskPlan, with the planner's extra checks.

    Beyond TaskPlan's own checks, every placeholder must name a subtask, a listed run
    input, `{task}`, or `{item}`/`{index}` in a map subtask (a typo would otherwise become
    a required run input), and `map` must name a run input or a subtask.

    Raises:
        PlanError: the first problem found.
    """
    if not isinstance(data, Mapping):
        raise PlanValidationError(
            f"the plan must be a JSON object with 'task' and 'subtasks', not {type(data).__name__}"
        )
    try:
        draft = FanfoldPlan.model_validate(data)
    except ValidationError as exc:
        raise _draft_error(exc) from exc
    if len(draft.subtasks) > max_subtasks:
        raise PlanValidationError(
            f"the plan has {len(draft.subtasks)} subtasks, more than the limit of "
            f"{max_subtasks}; merge related subtasks"
        )
    subtasks = [sub.model_dump(exclude_none=True) for sub in draft.subtasks]
    # Declare every offered input while validating, since a map may name one.
    offered = {name: {"description": text} for name, text in inputs.items()}
    plan = TaskPlan.model_validate({"task": draft.task, "subtasks": subtasks, "inputs": offered})
    used = _check_references(plan, inputs)
    if used == set(inputs):
        return plan
    # The plan declares only the inputs it uses, so the review file lists just those.
    declared = {name: spec for name, spec in offered.items() if name in used}
    return TaskPlan.model_validate({"task": draft.task, "subtasks": subtasks, "inputs": declared})


def _check_references(plan: TaskPlan, inputs: Mapping[str, str]) -> set[str]:
    """Check placeholder and map names; return the run inputs the plan uses."""
    ids = set(plan.ids)
    known = sorted(ids | set(inputs))
    used: set[str] = set()

    def check(owner: str, name: str, mapped: bool) -> None:
        if name in ids or name == "task" or (mapped and name in _MAP_PLACEHOLDERS):
            return
        if name in inputs:
            used.add(name)
            return
        if name in _MAP_PLACEHOLDERS:
            raise PlanValidationError(
                f"{owner} uses {{{name}}} but has no map; set map to the list it runs over, "
                f"or remove {{{name}}}"
            )
        allowed = ", ".join(f"{{{k}}}" for k in [*known, "task"])
        raise PlanValidationError(
            f"{owner} uses {{{name}}}, which is neither a subtask id nor a run input"
            f"{did_you_mean(name, known)}; placeholders may be {allowed}; write a literal "
            "brace as {{ or }}"
        )

    for name in placeholders(plan.task):
        check("the task", name, False)
    for sub in plan.subtasks:
        for name in sub.placeholders:
            check(f"subtask {sub.id!r}", name, sub.map is not None)
        if sub.map is None:
            continue
        if sub.map == sub.id:
            raise PlanValidationError(
                f"subtask {sub.id!r} maps over itself; set map to a run input or another "
                "subtask whose output is a list"
            )
        if sub.map in inputs:
            used.add(sub.map)
        elif sub.map not in ids:
            raise PlanValidationError(
                f"subtask {sub.id!r} maps over {sub.map!r}, which is neither a run input nor "
                f"a subtask{did_you_mean(sub.map, known)}; set map to one of them or remove it"
            )
    return used


def _draft_error(exc: ValidationError) -> PlanValidationError:
    """A readable PlanValidationError for a reply that does not fit the plan schema."""
    problems = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "plan"
        problems.append(f"{where}: {err.get('msg')}")
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return PlanValidationError(
        "the plan does not fit the schema: " + "; ".join(problems) + more + "; use only the "
        "fields task and subtasks (id, prompt, depends_on, map)"
    )


# -- YAML ----------------------------------------------------------------------------------


class _PlanDumper(yaml.SafeDumper):
    """SafeDumper with literal blocks for multi-line text and no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # PyYAML falls back to a quoted scalar itself when a literal block cannot hold the text.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PlanDumper.add_representer(str, _represent_str)


def plan_to_yaml(plan: TaskPlan) -> str:
    """The plan as YAML for review; `TaskPlan.from_file` loads it back to an equal plan.

    Fields equal to their defaults are left out. A pydantic `output_schema` class is
    written as its JSON schema (it loads back as that dict).

    Raises:
        ValueError: a subtask holds a chat model object, which YAML cannot represent.
    """
    data: dict[str, Any] = {"task": plan.task}
    if plan.inputs:
        # Always the mapping form: what a bare value means differs between fanfold versions.
        data["inputs"] = {
            name: spec.model_dump(exclude_defaults=True) for name, spec in plan.inputs.items()
        }
    data["subtasks"] = [_subtask_data(sub) for sub in plan.subtasks]
    aggregation = plan.aggregation.model_dump(exclude_defaults=True)
    if aggregation:
        data["aggregation"] = aggregation
    return yaml.dump(
        data,
        Dumper=_PlanDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


def _subtask_data(sub: SubTask) -> dict[str, Any]:
    out: dict[str, Any] = {"id": sub.id, "prompt": sub.prompt}
    for name, field in SubTask.model_fields.items():
        if name in out:
            continue
        value = getattr(sub, name)
        if value == field.get_default(call_default_factory=True):
            continue
        if name == "model" and isinstance(value, BaseChatModel):
            raise ValueError(
                f"subtask {sub.id!r} uses a chat model object, which YAML cannot hold; give "
                "it a model string such as 'openai:gpt-4o-mini' before writing the plan"
            )
        if name == "output_schema" and isinstance(value, type) and issubclass(value, BaseModel):
            value = value.model_json_schema()
        if isinstance(value, ModelSpec):
            value = value.model_dump()
        out[name] = value
    return out
