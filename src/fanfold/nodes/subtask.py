"""The LangGraph node of one subtask: wait for its dispatched call and commit the result."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig

from fanfold.nodes.run_scope import current_scope
from fanfold.scheduling.runtime import PlanRuntime


class SubtaskNode(Runnable[dict[str, Any], dict[str, Any]]):
    """Node for subtask `sid`: returns `{"results": {sid: <result as plain data>}}`.

    A plain Runnable with sync and async paths and no tracing of its own: LangGraph
    traces the node, and the model call is traced as the subtask's own run.
    """

    def __init__(self, runtime: PlanRuntime, sid: str) -> None:
        self.runtime = runtime
        self.sid = sid
        self.name = sid

    def invoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # The config only matters to the first node (it seeds the calls' configs), and
        # LangGraph always passes a full one: no ensure_config copy per node.
        dispatcher = current_scope().dispatcher(self.runtime, input, config or {}, sync=True)
        future = asyncio.run_coroutine_threadsafe(dispatcher.result(self.sid), dispatcher.loop)
        return {"results": {self.sid: future.result().to_state()}}

    async def ainvoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        dispatcher = current_scope().dispatcher(self.runtime, input, config or {}, sync=False)
        result = await dispatcher.result(self.sid)
        return {"results": {self.sid: result.to_state()}}
