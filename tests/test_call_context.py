"""Each subtask's call runs in its own context, whose ambient config is its own node's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda
from langgraph.config import get_config, get_stream_writer

from fanfold import NodeKindRegistry, SubtaskCall, compile_plan

TWINS = pytest.mark.parametrize("run", ["sync", "async"])
SHAPE = {"a": [], "b": [], "c": ["a"]}


def seen_node_kinds() -> tuple[NodeKindRegistry, dict[str, Any]]:
    """A registry whose kind records what the ambient config says, per subtask."""
    seen: dict[str, Any] = {}
    registry = NodeKindRegistry()

    @registry.register("probe")
    async def probe(call: SubtaskCall) -> str:
        await asyncio.sleep(0.01 if call.subtask.id == "a" else 0)
        ambient = get_config()
        # A runnable invoked with no config inherits the ambient one.
        inner = RunnableLambda(lambda _: get_config()["metadata"]["langgraph_node"])
        seen[call.subtask.id] = {
            "node": ambient["metadata"]["langgraph_node"],
            "inner": await inner.ainvoke(None),
            "is_own_config": ambient["metadata"] == call.config["metadata"]
            and ambient["callbacks"] is call.config["callbacks"],
        }
        return call.subtask.id

    return registry, seen


def probe_plan(make_plan):
    plan = make_plan(SHAPE)
    for sub in plan.subtasks:
        sub.kind = "probe"
    return plan


@TWINS
async def test_a_kind_sees_its_own_node_in_the_ambient_config(run, make_plan):
    registry, seen = seen_node_kinds()
    graph = compile_plan(probe_plan(make_plan), kinds=registry, aggregator=None)
    if run == "sync":
        await asyncio.to_thread(graph.invoke, {"inputs": {}})
    else:
        await graph.ainvoke({"inputs": {}})
    assert {sid: s["node"] for sid, s in seen.items()} == {"a": "a", "b": "b", "c": "c"}
    assert {sid: s["inner"] for sid, s in seen.items()} == {"a": "a", "b": "b", "c": "c"}
    assert all(s["is_own_config"] for s in seen.values())


class ChainStarts(BaseCallbackHandler):
    """Records the node named in the metadata of every chain run started."""

    def __init__(self) -> None:
        self.nodes: list[tuple[str | None, str | None]] = []

    def on_chain_start(self, serialized, inputs, *, run_id, metadata=None, name=None, **kw):
        self.nodes.append((name, (metadata or {}).get("langgraph_node")))


@TWINS
async def test_a_runnable_invoked_without_config_is_reported_under_its_subtask(run, make_plan):
    registry = NodeKindRegistry()

    @registry.register("nested")
    async def nested(call: SubtaskCall) -> str:
        step = RunnableLambda(lambda x: x, name=f"inner-{call.subtask.id}")
        return str(await step.ainvoke(call.subtask.id))

    plan = make_plan(SHAPE)
    for sub in plan.subtasks:
        sub.kind = "nested"
    recorder = ChainStarts()
    graph = compile_plan(plan, kinds=registry, aggregator=None)
    config = {"callbacks": [recorder]}
    if run == "sync":
        await asyncio.to_thread(graph.invoke, {"inputs": {}}, config)
    else:
        await graph.ainvoke({"inputs": {}}, config)
    inner = {name: node for name, node in recorder.nodes if name and name.startswith("inner-")}
    assert inner == {"inner-a": "a", "inner-b": "b", "inner-c": "c"}


@TWINS
async def test_a_kind_can_write_custom_stream_events_of_its_own(run, make_plan):
    registry = NodeKindRegistry()

    @registry.register("chatty")
    async def chatty(call: SubtaskCall) -> str:
        get_stream_writer()({"from": call.subtask.id})
        return "ok"

    plan = make_plan(SHAPE)
    for sub in plan.subtasks:
        sub.kind = "chatty"
    graph = compile_plan(plan, kinds=registry, aggregator=None)
    if run == "sync":
        chunks = await asyncio.to_thread(
            lambda: list(graph.stream({"inputs": {}}, stream_mode="custom"))
        )
    else:
        chunks = [c async for c in graph.astream({"inputs": {}}, stream_mode="custom")]
    assert sorted(c["from"] for c in chunks if "from" in c) == ["a", "b", "c"]
