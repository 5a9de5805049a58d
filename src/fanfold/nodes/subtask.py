"""The LangGraph node of one subtask: wait for its dispatched call and commit the result."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._runnable import RunnableCallable

from fanfold.graphs.run_scope import scope_from
from fanfold.graphs.runtime import PlanRuntime
from fanfold.state.schema import SubtaskNodeInput


def subtask_node(runtime: PlanRuntime, sid: str) -> RunnableCallable:
    """Build the node for subtask `sid`, with sync and async implementations."""

    async def arun(state: SubtaskNodeInput, config: RunnableConfig) -> dict[str, Any]:
        dispatcher = scope_from(config).dispatcher(runtime, state, config, sync=False)
        return {"results": {sid: await dispatcher.result(sid)}}

    def run(state: SubtaskNodeInput, config: RunnableConfig) -> dict[str, Any]:
        dispatcher = scope_from(config).dispatcher(runtime, state, config, sync=True)
        future = asyncio.run_coroutine_threadsafe(dispatcher.result(sid), dispatcher.loop)
        return {"results": {sid: future.result()}}

    return RunnableCallable(run, arun, name=sid, trace=False)
