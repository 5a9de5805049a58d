"""What a compiled plan needs at run time: subtasks, their kinds and models, the aggregator."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

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
from fanfold.plan.prompts import as_text, items_text
from fanfold.plan.template import render
from fanfold.scheduling.batches import BatchOptions
from fanfold.scheduling.cache import ResultCache
from fanfold.scheduling.calls import KindRunner
from fanfold.scheduling.durations import DurationStore
from fanfold.scheduling.limits import Limiter
from fanfold.scheduling.prices import PriceTable
from fanfold.scheduling.priorities import (
    DEFAULT_CALL_SECONDS,
    commit_tails,
    priority_key,
    remaining_paths,
)
from fanfold.scheduling.retry import RetryPolicy
from fanfold.state.results import SubtaskResult

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
    batch: BatchOptions = field(default_factory=BatchOptions)
    """How map items go through the provider's Batch API."""
    batch_maps: dict[str, bool] = field(default_factory=dict)
    """Map subtasks that may go as a batch -> whether the plan says `batch: true`."""
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
        # A subtask ranks by its remaining path counting the supersteps LangGraph runs
        # after it (commit_tails): a path ends no earlier than the steps it holds back.
        ranked = remaining_paths(
            self.order, self.dependencies, durations, commit_tails(self.order, self.dependencies)
        )
        self.priorities = {
            sid: priority_key(self.subtasks[sid].priority, ranked[sid]) for sid in self.order
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

    @property
    def aggregate_label(self) -> str | None:
        """The aggregate model's label, when the aggregation calls a model."""
        return model_label(self.aggregate_model) if self.aggregate_model is not None else None

    def output_text(self, sid: str, result: SubtaskResult) -> str:
        """A result's output as prompt text (a map's list item by item)."""
        if sid in self.maps and isinstance(result.output, list):
            return items_text(sid, result.output)
        return as_text(result.output)
