"""What a compiled plan needs at run time: subtasks, their kinds and models, the aggregator."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from fanfold._text import message_text
from fanfold.errors import (
    InputInterface,
    MapInputError,
    MissingInputError,
    PlanValidationError,
    UnknownInputError,
    input_example,
)
from fanfold.models.resolve import model_label
from fanfold.plan.models import SubTask, TaskPlan, list_input
from fanfold.plan.prompts import aggregate_messages, as_text, items_text
from fanfold.plan.schemas import OutputMismatchError, tool_schema, validate_data
from fanfold.plan.template import render
from fanfold.scheduling.cache import ResultCache, call_key, revive
from fanfold.scheduling.calls import KindRunner
from fanfold.scheduling.durations import DurationStore
from fanfold.scheduling.limits import Limiter
from fanfold.scheduling.prices import PriceTable
from fanfold.scheduling.priorities import DEFAULT_CALL_SECONDS, priority_key, remaining_paths
from fanfold.scheduling.retry import RetryPolicy
from fanfold.state.results import SubtaskResult, TokenUsage

Aggregator = Callable[[dict[str, SubtaskResult]], Any]


@dataclass
class PlanRuntime:
    """Compile-time facts shared by every run of one compiled plan."""

    plan: TaskPlan
    kinds: dict[str, KindRunner]
    models: dict[str, BaseChatModel | None]
    aggregate_model: BaseChatModel | None = None
    aggregate_function: Aggregator | None = None
    limiters: dict[str, Limiter] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    expected: dict[str, float] = field(default_factory=dict)
    expected_source: str = "hops"
    durations: DurationStore | None = None
    durations_key: tuple[str, str] = ("", "")
    prices: PriceTable = field(default_factory=PriceTable)
    """Model label -> USD per 1M tokens; a model missing here has an unknown cost."""
    budget: float | None = None
    """USD a run may spend (None: no limit); see fanfold.scheduling.costs.Budget."""
    cache: ResultCache | None = None
    """The persistent cache of model calls, or None when calls are never cached."""
    input_interface: InputInterface = "python"
    """Where run inputs come from; input errors name that interface's option."""
    # Derived from the plan in __post_init__.
    order: list[str] = field(init=False)
    subtasks: dict[str, SubTask] = field(init=False)
    dependencies: dict[str, tuple[str, ...]] = field(init=False)
    maps: frozenset[str] = field(init=False)
    """The map subtasks."""
    input_maps: dict[str, list[str]] = field(init=False)
    """Run input -> the map subtasks that run once per item of it."""
    input_names: frozenset[str] = field(init=False)
    """Every run input the plan declares or uses."""
    required: dict[str, list[str]] = field(init=False)
    """Run inputs without a default -> the subtasks that need them."""
    remaining: dict[str, float] = field(init=False)
    priorities: dict[str, tuple[float, float]] = field(init=False)
    labels: dict[str, str | None] = field(init=False)
    """Subtask id -> its model's label (None for kinds without a model), named once."""

    def __post_init__(self) -> None:
        self.order = self.plan.topological_order()
        self.subtasks = {s.id: s for s in self.plan.subtasks}
        self.dependencies = self.plan.dependencies()
        self.maps = frozenset(s.id for s in self.plan.subtasks if s.map is not None)
        self.input_maps = {}
        for sub in self.plan.subtasks:
            if sub.map is not None and sub.map not in self.subtasks:
                self.input_maps.setdefault(sub.map, []).append(sub.id)
        self.input_names = frozenset(self.plan.input_names())
        self.required = self.plan.required_inputs()
        durations = {sid: self.expected.get(sid, DEFAULT_CALL_SECONDS) for sid in self.order}
        self.remaining = remaining_paths(self.order, self.dependencies, durations)
        self.priorities = {
            sid: priority_key(self.subtasks[sid].priority, self.remaining[sid])
            for sid in self.order
        }
        named: dict[int, str] = {}
        self.labels = {}
        for sid, chat_model in self.models.items():
            if chat_model is not None and id(chat_model) not in named:
                named[id(chat_model)] = model_label(chat_model)
            self.labels[sid] = named[id(chat_model)] if chat_model is not None else None

    def check_input_names(self, inputs: Mapping[str, Any]) -> None:
        """Reject inputs the plan neither declares nor uses (a typo guard for the CLI).

        The Python API passes extra inputs through to node kinds (`call.inputs`).

        Raises:
            UnknownInputError: with the plan's inputs and the closest name.
        """
        unknown = [name for name in inputs if name not in self.input_names]
        if unknown:
            raise UnknownInputError(unknown, self.input_names)

    def run_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The run's inputs with declared defaults filled in, checked against the plan.

        A map's input given as a string (as the command line gives every input) is read
        as a JSON list.

        Raises:
            MissingInputError: a prompt or map needs an input the run does not have.
            MapInputError: a map's input is not a list.
            PlanValidationError: `inputs` is not a mapping.
        """
        if inputs is not None and not isinstance(inputs, Mapping):
            first = next(iter(self.plan.inputs), "topic")
            raise PlanValidationError(
                f"a run's inputs must be a mapping of input name -> value, not "
                f"{type(inputs).__name__}; pass {input_example(first, self.input_interface)}"
            )
        values = {
            name: spec.default
            for name, spec in self.plan.inputs.items()
            if spec.default is not None
        }
        values.update(inputs or {})
        missing = {name: users for name, users in self.required.items() if name not in values}
        if missing:
            raise MissingInputError(missing, interface=self.input_interface)
        for name, users in self.input_maps.items():
            if name in values:
                values[name] = self._as_list(values[name], users[0], name)
        return values

    def _as_list(self, value: Any, subtask_id: str, name: str) -> list[Any]:
        listed = list_input(value)
        if listed is None:
            raise MapInputError(subtask_id, name, value, interface=self.input_interface)
        return listed

    def task_text(self, inputs: Mapping[str, Any]) -> str:
        """The plan's task description with run-input placeholders filled."""
        return render(self.plan.task, {**inputs, "task": self.plan.task}, to_text=as_text)

    @property
    def aggregates(self) -> bool:
        """Whether the aggregate step calls an aggregator (a model or a function)."""
        return self.aggregate_model is not None or self.aggregate_function is not None

    @property
    def output_model(self) -> type[BaseModel] | None:
        """The pydantic class of the aggregate's output, when the plan declares one."""
        schema = self.plan.aggregation.output_schema
        return schema if isinstance(schema, type) else None

    def output_state(self, output: Any) -> Any:
        """The aggregate's output as it is written to state (a declared model as data)."""
        if self.output_model is not None and isinstance(output, BaseModel):
            return output.model_dump()
        return output

    async def aggregate(
        self, results: dict[str, SubtaskResult], inputs: Mapping[str, Any], config: RunnableConfig
    ) -> tuple[Any, TokenUsage]:
        """Combine results into the run's output with the configured aggregator.

        Raises:
            AggregateOutputError: the output does not match `aggregation.output_schema`.
        """
        outcome = await self.aggregate_call(results, inputs, config)
        return outcome.output, outcome.usage

    @property
    def aggregate_label(self) -> str | None:
        """The aggregate model's label, when the aggregation calls a model."""
        return model_label(self.aggregate_model) if self.aggregate_model is not None else None

    async def aggregate_call(
        self, results: dict[str, SubtaskResult], inputs: Mapping[str, Any], config: RunnableConfig
    ) -> AggregateOutcome:
        """`aggregate`, telling also whether the reply came from the cache.

        With a cache, the aggregate model's call is looked up and stored like a
        subtask's (kind "aggregate"): the same results give the same messages.

        Raises:
            AggregateOutputError: the output does not match `aggregation.output_schema`.
        """
        schema = self.plan.aggregation.output_schema
        if self.aggregate_function is not None:
            value = self.aggregate_function(results)
            if inspect.isawaitable(value):
                value = await value
            output = validate_output(schema, value) if schema is not None else value
            return AggregateOutcome(output, TokenUsage())
        if self.aggregate_model is None:
            return AggregateOutcome(None, TokenUsage())
        order = [sid for sid in self.order if sid in results]
        settings = self.plan.aggregation
        messages = aggregate_messages(
            task=self.task_text(inputs),
            done=[(sid, self.output_text(sid, results[sid])) for sid in order if results[sid].ok],
            missing=[
                (sid, results[sid].status, results[sid].error)
                for sid in order
                if not results[sid].ok
            ],
            instructions=settings.instructions,
            system=settings.system,
        )
        key: str | None = None
        if self.cache is not None:
            key = call_key(
                model=self.aggregate_model,
                messages=messages,
                kind="aggregate",
                output_schema=schema,
            )
            hit = self.cache.get(key)
            if hit is not None:
                output = revive(hit.output, schema)
                if schema is not None:
                    output = validate_output(schema, output)
                return AggregateOutcome(output, TokenUsage(), cached_usage=hit.usage)
        started = time.time()
        if schema is None:
            reply = await self.aggregate_model.ainvoke(messages, config)
            output, usage = message_text(reply), TokenUsage.from_metadata(reply.usage_metadata)
        else:
            asked, wrapped = tool_schema(schema)
            structured = self.aggregate_model.with_structured_output(asked, include_raw=True)
            answer: Any = await structured.ainvoke(messages, config)
            raw = answer.get("raw") if isinstance(answer, dict) else None
            usage = TokenUsage.from_metadata(getattr(raw, "usage_metadata", None))
            parsed = answer.get("parsed") if isinstance(answer, dict) else None
            if parsed is None:
                cause = answer.get("parsing_error") if isinstance(answer, dict) else None
                raise AggregateOutputError(
                    f"the aggregate's reply does not match aggregation.output_schema: "
                    f"{cause or 'no structured output returned'}"
                )
            if wrapped:
                parsed = parsed.get("value") if isinstance(parsed, dict) else None
            output = validate_output(schema, parsed)
        if key is not None and self.cache is not None:
            self.cache.put(
                key,
                output,
                usage=usage,
                model=self.aggregate_label,
                kind="aggregate",
                subtask="aggregate",
                seconds=time.time() - started,
            )
        return AggregateOutcome(output, usage)

    def output_text(self, sid: str, result: SubtaskResult) -> str:
        """A result's output as prompt text (a map's list item by item)."""
        if sid in self.maps and isinstance(result.output, list):
            return items_text(sid, result.output)
        return as_text(result.output)


@dataclass(frozen=True)
class AggregateOutcome:
    """What the aggregation produced, with its usage.

    Attributes:
        cached_usage: when the reply came from the cache (usage is then 0), the usage of
            the call that first made it; None for a reply made now.
    """

    output: Any
    usage: TokenUsage
    cached_usage: TokenUsage | None = None

    @property
    def cached(self) -> bool:
        """Whether the reply came from the persistent cache."""
        return self.cached_usage is not None


class AggregateOutputError(OutputMismatchError):
    """The aggregate's output does not match `aggregation.output_schema`."""


def validate_output(schema: type[BaseModel] | dict[str, Any], value: Any) -> Any:
    """The aggregate's `value` as validated data of `schema`.

    Raises:
        AggregateOutputError: the value does not match.
    """
    try:
        return validate_data(schema, value, what="the aggregate's output")
    except OutputMismatchError as exc:
        raise AggregateOutputError(str(exc)) from exc
