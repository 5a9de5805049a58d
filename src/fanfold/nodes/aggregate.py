"""The terminal node: fold every subtask result into `output` and run totals."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Mapping
from typing import Any, Protocol

from langchain_core.runnables import Runnable, RunnableConfig, ensure_config

from fanfold._secrets import describe_error
from fanfold.nodes.run_scope import background_loop, current_scope
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import SubtaskResult, TokenUsage, summarize


class AggregateInput(Protocol):
    """What the aggregate reads of the graph state (`fanfold.graphs.schema.PlanState`)."""

    @property
    def results(self) -> dict[str, SubtaskResult]: ...

    @property
    def inputs(self) -> Mapping[str, Any]: ...


class AggregateNode(Runnable[Any, dict[str, Any]]):
    """Writes `output`, `totals` and `aggregate_error`; a failing aggregator is recorded,
    never raised, so the subtask results are never lost."""

    name = "aggregate"

    def __init__(self, runtime: PlanRuntime) -> None:
        self.runtime = runtime

    async def ainvoke(
        self, input: AggregateInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        runtime = self.runtime
        config = ensure_config(config)
        results = input.results
        dispatcher = current_scope().dispatcher_or_none
        output: Any = None
        usage = TokenUsage()
        cached: TokenUsage | None = None
        error: str | None = None
        called = time.time()
        try:
            inputs = (
                dispatcher.inputs if dispatcher is not None else runtime.run_inputs(input.inputs)
            )
            outcome = await runtime.aggregate_call(dict(results), inputs, config)
            output, usage, cached = outcome.output, outcome.usage, outcome.cached_usage
        except Exception as exc:
            error = describe_error(exc)
        aggregate_time = time.time() - called if runtime.aggregates and cached is None else 0.0
        label = runtime.aggregate_label
        aggregate_cost = (
            0.0 if label is None or cached is not None else runtime.prices.cost(label, usage)
        )
        if runtime.durations is not None:
            # A cached call took no time: its zero would spoil the learned durations.
            timed = [r for r in results.values() if not _any_cached(r)]
            runtime.durations.record_results(*runtime.durations_key, timed)
        starts = [r.started_at for r in results.values() if r.started_at is not None]
        began = dispatcher.started_at if dispatcher is not None else min(starts, default=None)
        totals = summarize(
            results,
            planned=len(runtime.order),
            aggregate_usage=usage,
            wall_time=(time.time() - began) if began is not None else 0.0,
            aggregate_time=aggregate_time,
            aggregate_model=label,
            aggregate_cost=aggregate_cost,
            aggregate_cached=cached,
        )
        return {
            "output": runtime.output_state(output),
            "totals": totals.model_dump(),
            "aggregate_error": error,
        }

    def invoke(
        self, input: AggregateInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # The aggregator's async clients live on the dispatch loop, like the subtasks'.
        context = contextvars.copy_context()
        future = asyncio.run_coroutine_threadsafe(
            _in_context(context, self.ainvoke(input, config)), background_loop()
        )
        return future.result()


def _any_cached(result: SubtaskResult) -> bool:
    """Whether a result, or any item of a map, was served from the cache."""
    return result.cached or any(item.cached for item in result.items or [])


async def _in_context(context: contextvars.Context, coro: Any) -> Any:
    """Run `coro` as a task inside `context` (callbacks and config contextvars)."""
    loop = asyncio.get_running_loop()
    return await loop.create_task(coro, context=context)
