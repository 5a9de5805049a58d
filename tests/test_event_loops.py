"""One compiled graph, used from several event loops, against the real loopback server."""

from __future__ import annotations

import asyncio

from fanfold import TaskPlan, compile_plan, resolve_model
from fanfold.testing import SimServer, SimServerConfig


def _graph(base_url: str):
    model = resolve_model("openai:sim-model", base_url=base_url, api_key="sk-test-loops-123")
    plan = TaskPlan.model_validate(
        {"task": "t", "subtasks": [{"id": "a", "prompt": "[a] x"}, {"id": "b", "prompt": "[b] y"}]}
    )
    return compile_plan(plan, model=model, aggregator=None)


def _statuses(state) -> dict[str, str]:
    return {sid: f"{r.status} {r.error or ''}".strip() for sid, r in state["results"].items()}


def test_second_asyncio_run_reuses_the_model_without_event_loop_errors():
    with SimServer(SimServerConfig(latency=0.005)) as srv:
        graph = _graph(srv.base_url)
        first = asyncio.run(graph.ainvoke({}))
        second = asyncio.run(graph.ainvoke({}))
        assert _statuses(first) == _statuses(second) == {"a": "succeeded", "b": "succeeded"}
        assert srv.request_count == 4


def test_async_run_after_a_sync_run_uses_its_own_connections():
    with SimServer(SimServerConfig(latency=0.005)) as srv:
        graph = _graph(srv.base_url)
        sync_state = graph.invoke({})
        async_state = asyncio.run(graph.ainvoke({}))
        again = graph.invoke({})
        expected = {"a": "succeeded", "b": "succeeded"}
        assert _statuses(sync_state) == _statuses(async_state) == _statuses(again) == expected
        assert srv.request_count == 6
