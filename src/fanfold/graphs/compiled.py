"""CompiledPlanGraph: a CompiledStateGraph that gives each invocation its own dispatcher."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.graph import Graph
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.constants import END, START
from langgraph.graph.state import CompiledStateGraph

from fanfold.graphs.run_scope import RETRY_FAILED_KEY, SCOPE_KEY, RunScope
from fanfold.graphs.runtime import PlanRuntime
from fanfold.plan.graph_checks import AGGREGATE_NODE
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
        return {
            **config,
            "configurable": {**config.get("configurable", {}), RETRY_FAILED_KEY: True},
        }

    def get_graph(self, config: RunnableConfig | None = None, *, xray: int | bool = False) -> Graph:
        """The drawable graph, built from the plan's declared edges.

        LangGraph's own drawing simulates at most 250 supersteps, so it would drop the
        edges of deeper plans; a plan's edges are static, so they are drawn directly.
        """
        runtime = self.fanfold_runtime
        if runtime is None:
            return super().get_graph(config, xray=xray)
        graph = Graph()
        for name, node in self.nodes.items():
            graph.add_node(node.bound, name)
        if START not in graph.nodes:
            graph.add_node(None, START)
        has_dependents = {dep for deps in runtime.dependencies.values() for dep in deps}
        edges = {(START, sid) for sid in runtime.order if not runtime.dependencies[sid]}
        edges |= {(dep, sid) for sid, deps in runtime.dependencies.items() for dep in deps}
        edges |= {(sid, AGGREGATE_NODE) for sid in runtime.order if sid not in has_dependents}
        for source, target in sorted(edges):
            graph.add_edge(graph.nodes[source], graph.nodes[target])
        graph.add_node(None, END)
        graph.add_edge(graph.nodes[AGGREGATE_NODE], graph.nodes[END])
        return graph

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
        patched: dict[str, Any] = dict(config or {})
        run_id = patched.get("run_id") or uuid.uuid4()
        keep = bool((patched.get("configurable") or {}).get(RETRY_FAILED_KEY))
        scope = RunScope(run_id, fresh=inputs is not None and not keep, retry_failed=keep)
        scope.committed = _pending_results(pending)
        patched["run_id"] = run_id
        patched["configurable"] = {**(patched.get("configurable") or {}), SCOPE_KEY: scope}
        return scope, cast(RunnableConfig, patched)

    def _saver_for_resume(
        self, input: Any, config: RunnableConfig | None
    ) -> tuple[BaseCheckpointSaver[Any], RunnableConfig] | None:
        """The checkpointer and config when this call resumes a thread, else None."""
        saver = self.checkpointer
        if _fresh_inputs(input) is not None or not isinstance(saver, BaseCheckpointSaver):
            return None
        if config is None or not (config.get("configurable") or {}).get("thread_id"):
            return None
        return saver, config

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        resume = self._saver_for_resume(input, config)
        pending = resume[0].get_tuple(resume[1]) if resume else None
        scope, config = self._open(input, config, pending)
        inner: Generator[Any, None, None] = super().stream(input, config, **kwargs)  # type: ignore[assignment]
        try:
            # Not `yield from`: on close, the calls must be cancelled *before* LangGraph's
            # generator closes, because closing it waits for nodes blocked on those calls.
            for chunk in inner:  # noqa: UP028
                yield chunk
        finally:
            scope.close()
            inner.close()

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        resume = self._saver_for_resume(input, config)
        pending = await resume[0].aget_tuple(resume[1]) if resume else None
        scope, config = self._open(input, config, pending)
        try:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
        finally:
            await scope.aclose()
