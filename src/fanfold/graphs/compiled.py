"""CompiledPlanGraph: a CompiledStateGraph that gives each invocation its own dispatcher."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

from fanfold.graphs.run_scope import RETRY_FAILED_KEY, SCOPE_KEY, RunScope
from fanfold.graphs.runtime import PlanRuntime
from fanfold.plan.models import TaskPlan
from fanfold.state.results import SubtaskResult
from fanfold.state.schema import PlanState


def _fresh_inputs(input: Any) -> dict[str, Any] | None:
    """The inputs of a new run, or None when `input` resumes (None or a Command)."""
    if isinstance(input, PlanState):
        return input.inputs
    if isinstance(input, dict):
        inputs = input.get("inputs")
        return dict(inputs) if isinstance(inputs, dict) else {}
    return None


def _pending_results(checkpoint: CheckpointTuple | None) -> dict[str, SubtaskResult]:
    """Results that finished nodes wrote in the interrupted step but not yet merged.

    LangGraph will not run those nodes again on resume, so their calls must not run again
    either: the dispatcher treats these results as done.
    """
    found: dict[str, SubtaskResult] = {}
    for _task, channel, value in (checkpoint.pending_writes or []) if checkpoint else []:
        if channel == "results" and isinstance(value, dict):
            found.update({k: v for k, v in value.items() if isinstance(v, SubtaskResult)})
    return found


class CompiledPlanGraph(CompiledStateGraph):
    """The compiled form of a TaskPlan; an ordinary LangGraph Runnable.

    Every entry point (`invoke`, `ainvoke`, `batch`, `stream`, `astream`, use as a
    subgraph) goes through `stream` or `astream`, which open a run scope so that the
    run's dispatcher starts calls greedily and is cancelled when the run ends.
    """

    def __init__(self, *args: Any, fanfold_runtime: PlanRuntime | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fanfold_runtime = fanfold_runtime

    def retry_failed(self, config: RunnableConfig, **kwargs: Any) -> Any:
        """Run a finished thread again, re-running only failed and skipped subtasks.

        Succeeded results are kept (not requested again); the aggregate runs afresh.
        """
        return self.invoke(self._retry_input(config), self._retry_config(config), **kwargs)

    async def aretry_failed(self, config: RunnableConfig, **kwargs: Any) -> Any:
        """Async `retry_failed`."""
        state = await self.aget_state(config)
        return await self.ainvoke(
            {"inputs": state.values.get("inputs", {}), "run": state.values.get("run", {})},
            self._retry_config(config),
            **kwargs,
        )

    def _retry_input(self, config: RunnableConfig) -> dict[str, Any]:
        values = self.get_state(config).values
        return {"inputs": values.get("inputs", {}), "run": values.get("run", {})}

    @staticmethod
    def _retry_config(config: RunnableConfig) -> RunnableConfig:
        return {**config, "configurable": {**config.get("configurable", {}), RETRY_FAILED_KEY: True}}

    @property
    def plan(self) -> TaskPlan:
        """The plan this graph was compiled from."""
        assert self.fanfold_runtime is not None
        return self.fanfold_runtime.plan

    def _open(
        self, input: Any, config: RunnableConfig | None, pending: CheckpointTuple | None = None
    ) -> tuple[RunScope, RunnableConfig]:
        inputs = _fresh_inputs(input)
        if inputs is not None and self.fanfold_runtime is not None:
            self.fanfold_runtime.run_inputs(inputs)  # fail before any node runs
        config = dict(config or {})  # type: ignore[assignment]
        run_id = config.get("run_id") or uuid.uuid4()
        keep = bool((config.get("configurable") or {}).get(RETRY_FAILED_KEY))
        scope = RunScope(run_id, fresh=inputs is not None and not keep, retry_failed=keep)
        scope.committed = _pending_results(pending)
        config["run_id"] = run_id
        config["configurable"] = {**(config.get("configurable") or {}), SCOPE_KEY: scope}
        return scope, config

    def _resuming(self, input: Any, config: RunnableConfig | None) -> bool:
        return (
            _fresh_inputs(input) is None
            and isinstance(self.checkpointer, BaseCheckpointSaver)
            and bool((config or {}).get("configurable", {}).get("thread_id"))
        )

    def stream(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        pending = None
        if self._resuming(input, config):
            pending = self.checkpointer.get_tuple(config)  # type: ignore[union-attr,arg-type]
        scope, config = self._open(input, config, pending)
        try:
            yield from super().stream(input, config, **kwargs)
        finally:
            scope.close()

    async def astream(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        pending = None
        if self._resuming(input, config):
            pending = await self.checkpointer.aget_tuple(config)  # type: ignore[union-attr,arg-type]
        scope, config = self._open(input, config, pending)
        try:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
        finally:
            await scope.aclose()
