"""What a compiled plan needs at run time: subtasks, their kinds and models, the aggregator."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig

from fanfold._text import message_text
from fanfold.durations import DurationStore
from fanfold.errors import MissingInputError
from fanfold.graphs.limits import RateLimiter
from fanfold.graphs.priorities import priority_key, remaining_paths
from fanfold.graphs.retry import RetryPolicy
from fanfold.nodes.prompts import aggregate_messages, as_text
from fanfold.nodes.registry import NodeKind
from fanfold.plan.models import SubTask, TaskPlan
from fanfold.plan.template import render
from fanfold.state.results import SubtaskResult, TokenUsage

Aggregator = Callable[[dict[str, SubtaskResult]], Any]


@dataclass
class PlanRuntime:
    """Compile-time facts shared by every run of one compiled plan."""

    plan: TaskPlan
    kinds: dict[str, NodeKind]
    models: dict[str, BaseChatModel | None]
    aggregate_model: BaseChatModel | None = None
    aggregate_function: Aggregator | None = None
    limiters: dict[str, RateLimiter] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    expected: dict[str, float] = field(default_factory=dict)
    expected_source: str = "hops"
    durations: DurationStore | None = None
    durations_key: tuple[str, str] = ("", "")
    # Derived from the plan in __post_init__.
    order: list[str] = field(init=False)
    subtasks: dict[str, SubTask] = field(init=False)
    dependencies: dict[str, tuple[str, ...]] = field(init=False)
    remaining: dict[str, float] = field(init=False)
    priorities: dict[str, tuple[float, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.order = self.plan.topological_order()
        self.subtasks = {s.id: s for s in self.plan.subtasks}
        self.dependencies = {s.id: tuple(dict.fromkeys(s.depends_on)) for s in self.plan.subtasks}
        durations = {sid: self.expected.get(sid, 1.0) for sid in self.order}
        self.remaining = remaining_paths(self.order, self.dependencies, durations)
        self.priorities = {
            sid: priority_key(self.subtasks[sid].priority, self.remaining[sid])
            for sid in self.order
        }

    def run_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The run's inputs with declared defaults filled in.

        Raises:
            MissingInputError: a prompt needs an input the run does not have.
        """
        values = {
            name: spec.default
            for name, spec in self.plan.inputs.items()
            if spec.default is not None
        }
        values.update(inputs or {})
        missing = {
            name: users for name, users in self.plan.required_inputs().items() if name not in values
        }
        if missing:
            raise MissingInputError(missing)
        return values

    def task_text(self, inputs: Mapping[str, Any]) -> str:
        """The plan's task description with run-input placeholders filled."""
        return render(self.plan.task, {**inputs, "task": self.plan.task}, to_text=as_text)

    async def aggregate(
        self, results: dict[str, SubtaskResult], inputs: Mapping[str, Any], config: RunnableConfig
    ) -> tuple[Any, TokenUsage]:
        """Combine results into the run's output with the configured aggregator."""
        if self.aggregate_function is not None:
            value = self.aggregate_function(results)
            if inspect.isawaitable(value):
                value = await value
            return value, TokenUsage()
        if self.aggregate_model is None:
            return None, TokenUsage()
        order = [sid for sid in self.order if sid in results]
        settings = self.plan.aggregation
        messages = aggregate_messages(
            task=self.task_text(inputs),
            order=order,
            results=results,
            instructions=settings.instructions,
            system=settings.system,
        )
        reply = await self.aggregate_model.ainvoke(messages, config)
        return message_text(reply), TokenUsage.from_metadata(reply.usage_metadata)
