"""CompiledPlanGraph: a CompiledStateGraph that gives each invocation its own dispatcher."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from fanfold.graphs.run_scope import SCOPE_KEY, RunScope
from fanfold.graphs.runtime import PlanRuntime
from fanfold.plan.models import TaskPlan
from fanfold.state.schema import PlanState


def _fresh_inputs(input: Any) -> dict[str, Any] | None:
    """The inputs of a new run, or None when `input` resumes (None or a Command)."""
    if isinstance(input, PlanState):
        return input.inputs
    if isinstance(input, dict):
        inputs = input.get("inputs")
        return dict(inputs) if isinstance(inputs, dict) else {}
    return None


class CompiledPlanGraph(CompiledStateGraph):
    """The compiled form of a TaskPlan; an ordinary LangGraph Runnable.

    Every entry point (`invoke`, `ainvoke`, `batch`, `stream`, `astream`, use as a
    subgraph) goes through `stream` or `astream`, which open a run scope so that the
    run's dispatcher starts calls greedily and is cancelled when the run ends.
    """

    def __init__(self, *args: Any, fanfold_runtime: PlanRuntime | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fanfold_runtime = fanfold_runtime

    @property
    def plan(self) -> TaskPlan:
        """The plan this graph was compiled from."""
        assert self.fanfold_runtime is not None
        return self.fanfold_runtime.plan

    def _open(self, input: Any, config: RunnableConfig | None) -> tuple[RunScope, RunnableConfig]:
        inputs = _fresh_inputs(input)
        if inputs is not None and self.fanfold_runtime is not None:
            self.fanfold_runtime.run_inputs(inputs)  # fail before any node runs
        config = dict(config or {})  # type: ignore[assignment]
        run_id = config.get("run_id") or uuid.uuid4()
        scope = RunScope(run_id, fresh=inputs is not None)
        config["run_id"] = run_id
        config["configurable"] = {**(config.get("configurable") or {}), SCOPE_KEY: scope}
        return scope, config

    def stream(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        scope, config = self._open(input, config)
        try:
            yield from super().stream(input, config, **kwargs)
        finally:
            scope.close()

    async def astream(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        scope, config = self._open(input, config)
        try:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
        finally:
            await scope.aclose()
