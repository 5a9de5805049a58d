"""CompiledPlanGraph: a CompiledStateGraph that gives each invocation its own dispatcher."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from langchain_core.runnables.graph import Graph
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.constants import END, START
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Overwrite, StateSnapshot

from fanfold._langgraph import events_wanted, resolved_callbacks, starts_early
from fanfold.errors import PlanValidationError
from fanfold.graphs.schema import PlanState
from fanfold.nodes.journal import store_beside
from fanfold.nodes.run_scope import RunContext, RunScope
from fanfold.plan.graph_checks import AGGREGATE_NODE
from fanfold.plan.models import TaskPlan
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult

_REUSE_KWARG = "fanfold_reuse_items"
"""Private keyword from `retry_failed` to `stream`: a retried map's succeeded items."""

_DISPATCHER_KWARG = "fanfold_dispatcher"
"""Private keyword from a goal graph to `stream`: the dispatcher its streamed plan started."""

_BUDGET_KWARG = "fanfold_budget"
"""Private keyword from a goal graph to `stream`: the Budget its planner already spent from."""

Reuse = Mapping[str, Mapping[int, SubtaskResult]]


def _new_run_input(input: Any) -> dict[str, Any] | None:
    """The input of a new run as a dict, or None when `input` resumes (None or a Command)."""
    if isinstance(input, PlanState):
        fields = {"inputs": input.inputs, "run": input.run}
        return {**fields, "results": input.results} if input.results else fields
    if isinstance(input, dict):
        return dict(input)
    return None


def _only_inputs(input: Mapping[str, Any]) -> None:
    """Refuse a served run's input that carries more than its `inputs` (results, say)."""
    extra = sorted(set(input) - {"inputs"})
    if extra:
        raise PlanValidationError(
            f"a run's input holds only 'inputs' (input name -> value), not "
            f"{', '.join(repr(k) for k in extra)}; fanfold writes results, output and "
            'totals itself. Send {"inputs": {...}}'
        )


def _as_results(value: Any) -> dict[str, SubtaskResult]:
    if isinstance(value, Overwrite):
        value = value.value
    return {
        sid: r if isinstance(r, SubtaskResult) else SubtaskResult.model_validate(r)
        for sid, r in (value or {}).items()
    }


class CompiledPlanGraph(CompiledStateGraph):
    """The compiled form of a TaskPlan; an ordinary LangGraph Runnable.

    Every entry point (`invoke`, `ainvoke`, `batch`, `stream`, `astream`, use as a
    subgraph) goes through `stream` or `astream`, which open a run scope so that the
    run's dispatcher starts calls greedily and is cancelled when the run ends.

    A new run (an input with `inputs`) replaces the thread's results with the ones it
    is given (none, usually), so no result of an earlier run on the thread survives it;
    a resumed run (input None) keeps what the thread has.
    """

    def __init__(self, *args: Any, fanfold_runtime: PlanRuntime | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fanfold_runtime = fanfold_runtime

    # -- retrying ---------------------------------------------------------------------

    def retry_failed(self, config: RunnableConfig, **kwargs: Any) -> Any:
        """Run a finished thread again, re-running only failed and skipped subtasks.

        Succeeded results are kept (not requested again), and so are the succeeded
        items of a failed map; the aggregate runs afresh.
        """
        input, options = self.retry_request(self.get_state(config).values)
        return self.invoke(input, config, **{**options, **kwargs})

    async def aretry_failed(self, config: RunnableConfig, **kwargs: Any) -> Any:
        """Async `retry_failed`."""
        input, options = self.retry_request((await self.aget_state(config)).values)
        return await self.ainvoke(input, config, **{**options, **kwargs})

    @staticmethod
    def retry_request(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The input and the extra keyword arguments of a run that retries `values`.

        The input replaces the thread's results with the succeeded ones as the retry
        starts, so a crash during the retry can leave no stale failure or skip behind.

        Returns:
            (input, keyword arguments for invoke/stream).
        """
        results: Mapping[str, SubtaskResult] = values.get("results") or {}
        kept = {sid: r for sid, r in results.items() if r.ok}
        reuse = {
            sid: {i: item for i, item in enumerate(r.items) if item.ok}
            for sid, r in results.items()
            if not r.ok and r.items
        }
        input = {
            "inputs": values.get("inputs", {}),
            "run": values.get("run", {}),
            "results": Overwrite({sid: r.to_state() for sid, r in kept.items()}),
        }
        return input, {_REUSE_KWARG: reuse}

    # -- drawing ----------------------------------------------------------------------

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

    # -- running ----------------------------------------------------------------------

    def _resumes(self, input: Any, config: RunnableConfig | None) -> bool:
        """Whether this call continues a checkpointed thread (so must read what it has)."""
        if _new_run_input(input) is not None or not isinstance(
            self.checkpointer, BaseCheckpointSaver
        ):
            return False
        return bool(((config or {}).get("configurable") or {}).get("thread_id"))

    def _open(
        self,
        input: Any,
        config: RunnableConfig | None,
        kwargs: dict[str, Any],
        snapshot: StateSnapshot | None,
    ) -> tuple[Any, RunScope]:
        """Open the run's scope; returns the input to pass on (a new run's, completed)."""
        runtime = self.fanfold_runtime
        reuse: Reuse | None = kwargs.pop(_REUSE_KWARG, None)
        adopted = kwargs.pop(_DISPATCHER_KWARG, None)
        budget = kwargs.pop(_BUDGET_KWARG, None)
        new_run = _new_run_input(input)
        done: dict[str, SubtaskResult] | None = None
        if new_run is not None:
            if runtime is not None:
                if runtime.input_interface == "server":
                    _only_inputs(new_run)
                runtime.run_inputs(new_run.get("inputs"))  # fail before any node runs
            done = _as_results(new_run.get("results"))
            new_run["results"] = Overwrite({sid: r.to_state() for sid, r in done.items()})
            new_run.setdefault("output", None)
            new_run.setdefault("totals", None)
            new_run.setdefault("aggregate_error", None)
            input = new_run
        elif snapshot is not None:
            done = dict(snapshot.values.get("results") or {})
        run_id = (config or {}).get("run_id") or uuid.uuid4()
        scope = RunScope(
            run_id,
            done=done,
            events=events_wanted(config, kwargs.get("stream_mode")),
            reuse_items=reuse,
            dispatcher=adopted,
            budget=budget,
            store=self.store or store_beside(self.checkpointer),
        )
        kwargs["context"] = RunContext(scope=scope, user=kwargs.get("context"))
        if (
            new_run is not None
            and runtime is not None
            and adopted is None
            and self._starts_early(config, kwargs)
        ):
            scope.early_inputs = runtime.run_inputs(new_run.get("inputs"))
        return input, scope

    def _starts_early(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> bool:
        """Whether a new run's dispatcher may start before LangGraph's first superstep.

        Not when the run streams what only LangGraph's own handlers stream ("messages"),
        when it may stop before a node (interrupts), or when it is checkpointed (its
        journal's store is the one LangGraph hands its nodes).
        """
        if kwargs.get("interrupt_before") or kwargs.get("interrupt_after"):
            return False
        if self.interrupt_before_nodes or self.interrupt_after_nodes:
            return False
        if ((config or {}).get("configurable") or {}).get("thread_id") is not None:
            return False
        return starts_early(config, kwargs.get("stream_mode"))

    def _run_config(
        self, config: RunnableConfig | None, scope: RunScope, kwargs: dict[str, Any], *, sync: bool
    ) -> RunnableConfig:
        """The config LangGraph runs with; a run that starts early starts its dispatcher."""
        run_config: RunnableConfig = {**(config or {}), "run_id": scope.run_id}
        inputs = scope.early_inputs
        if inputs is None:
            return run_config
        assert self.fanfold_runtime is not None
        run_config = resolved_callbacks(run_config)
        scope.start(
            self.fanfold_runtime,
            inputs,
            merge_configs(self.config, run_config) if self.config else run_config,
            context=kwargs["context"],
            store=self.store,
            sync=sync,
        )
        scope.begin(run_config, sync=sync)
        return run_config

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        snapshot = self.get_state(config) if self._resumes(input, config) else None  # type: ignore[arg-type]
        input, scope = self._open(input, config, kwargs, snapshot)
        inner: Generator[Any, None, None] = super().stream(  # type: ignore[assignment]
            input, self._run_config(config, scope, kwargs, sync=True), **kwargs
        )
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
        snapshot = await self.aget_state(config) if self._resumes(input, config) else None  # type: ignore[arg-type]
        input, scope = self._open(input, config, kwargs, snapshot)
        try:
            run_config = self._run_config(config, scope, kwargs, sync=False)
            if scope.early_inputs is not None:
                # Let the first calls go out before LangGraph's set-up holds the loop.
                await asyncio.sleep(0)
            async for chunk in super().astream(input, run_config, **kwargs):
                yield chunk
        finally:
            await scope.aclose()
