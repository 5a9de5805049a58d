"""The terminal node: fold every subtask result into `output` and run totals."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._runnable import RunnableCallable

from fanfold._secrets import describe_error
from fanfold.graphs.run_scope import background_loop, scope_from
from fanfold.graphs.runtime import PlanRuntime
from fanfold.state.results import TokenUsage, summarize
from fanfold.state.schema import PlanState


def aggregate_node(runtime: PlanRuntime) -> RunnableCallable:
    """Build the aggregate node; a failing aggregator is recorded, never raised."""

    async def arun(state: PlanState, config: RunnableConfig) -> dict[str, Any]:
        results = state.results
        dispatcher = scope_from(config).dispatcher_or_none
        output: Any = None
        usage = TokenUsage()
        error: str | None = None
        try:
            inputs = (
                dispatcher.inputs if dispatcher is not None else runtime.run_inputs(state.inputs)
            )
            output, usage = await runtime.aggregate(dict(results), inputs, config)
        except Exception as exc:
            error = describe_error(exc)
        if runtime.durations is not None:
            runtime.durations.record_results(*runtime.durations_key, results.values())
        starts = [r.started_at for r in results.values() if r.started_at is not None]
        began = dispatcher.started_at if dispatcher is not None else min(starts, default=None)
        totals = summarize(
            results,
            planned=len(runtime.order),
            aggregate_usage=usage,
            wall_time=(time.time() - began) if began is not None else 0.0,
        )
        return {"output": output, "totals": totals, "aggregate_error": error}

    def run(state: PlanState, config: RunnableConfig) -> dict[str, Any]:
        context = contextvars.copy_context()
        future = asyncio.run_coroutine_threadsafe(
            _in_context(context, arun(state, config)), background_loop()
        )
        return future.result()

    return RunnableCallable(run, arun, name="aggregate", trace=False)


async def _in_context(context: contextvars.Context, coro: Any) -> Any:
    """Run `coro` as a task inside `context` (callbacks and config contextvars)."""
    loop = asyncio.get_running_loop()
    return await loop.create_task(coro, context=context)
