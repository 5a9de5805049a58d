"""The terminal node: fold every subtask result into `output` and run totals."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig, ensure_config

from fanfold._secrets import describe_error
from fanfold.nodes.run_scope import background_loop, current_scope
from fanfold.scheduling.runtime import PlanRuntime
from fanfold.state.results import TokenUsage, summarize
from fanfold.state.schema import PlanState


class AggregateNode(Runnable[PlanState, dict[str, Any]]):
    """Writes `output`, `totals` and `aggregate_error`; a failing aggregator is recorded,
    never raised, so the subtask results are never lost."""

    name = "aggregate"

    def __init__(self, runtime: PlanRuntime) -> None:
        self.runtime = runtime

    async def ainvoke(
        self, input: PlanState, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        runtime = self.runtime
        config = ensure_config(config)
        results = input.results
        dispatcher = current_scope().dispatcher_or_none
        output: Any = None
        usage = TokenUsage()
        error: str | None = None
        called = time.time()
        try:
            inputs = (
                dispatcher.inputs if dispatcher is not None else runtime.run_inputs(input.inputs)
            )
            output, usage = await runtime.aggregate(dict(results), inputs, config)
        except Exception as exc:
            error = describe_error(exc)
        aggregate_time = time.time() - called if runtime.aggregates else 0.0
        if runtime.durations is not None:
            runtime.durations.record_results(*runtime.durations_key, results.values())
        starts = [r.started_at for r in results.values() if r.started_at is not None]
        began = dispatcher.started_at if dispatcher is not None else min(starts, default=None)
        totals = summarize(
            results,
            planned=len(runtime.order),
            aggregate_usage=usage,
            wall_time=(time.time() - began) if began is not None else 0.0,
            aggregate_time=aggregate_time,
        )
        return {
            "output": runtime.output_state(output),
            "totals": totals.model_dump(),
            "aggregate_error": error,
        }

    def invoke(
        self, input: PlanState, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # The aggregator's async clients live on the dispatch loop, like the subtasks'.
        context = contextvars.copy_context()
        future = asyncio.run_coroutine_threadsafe(
            _in_context(context, self.ainvoke(input, config)), background_loop()
        )
        return future.result()


async def _in_context(context: contextvars.Context, coro: Any) -> Any:
    """Run `coro` as a task inside `context` (callbacks and config contextvars)."""
    loop = asyncio.get_running_loop()
    return await loop.create_task(coro, context=context)
