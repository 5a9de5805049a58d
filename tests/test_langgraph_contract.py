"""One test per assumption fanfold makes about LangGraph's inner behaviour.

Each is listed in `src/fanfold/_langgraph.py`. These tests use plain LangGraph graphs,
so when an upgrade changes a behaviour, the failure names the assumption, not a
symptom somewhere in fanfold.
"""

from __future__ import annotations

import asyncio
import operator
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from langgraph.channels import BaseChannel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_config, get_store, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime, get_runtime
from langgraph.store.memory import InMemoryStore
from langgraph.types import Overwrite

from fanfold import NodeKindRegistry, SubtaskCall, SubtaskResult, TaskPlan, compile_plan
from fanfold._langgraph import (
    ATTEMPT_KEY,
    NS_SEP,
    PARENT_STREAM_KEY,
    RUNTIME_KEY,
    adopt,
    attempt_config,
    events_wanted,
    open_step,
    stored_once,
    subtask_call_config,
)
from fanfold.checkpoints import open_checkpointer
from fanfold.graphs.channels import ResultsChannel
from fanfold.graphs.schema import PlanState


@dataclass
class Ctx:
    tag: str


class S(TypedDict, total=False):
    seen: Annotated[list[Any], operator.add]


# 1. RUNTIME_KEY ---------------------------------------------------------------------------


def test_a_nodes_config_carries_the_runs_runtime_under_the_runtime_key():
    def node(state: S) -> S:
        runtime = get_config()["configurable"][RUNTIME_KEY]
        return {"seen": [isinstance(runtime, Runtime) and runtime.context.tag]}

    builder = StateGraph(S, context_schema=Ctx)
    builder.add_node("n", node)
    builder.add_edge(START, "n")
    state = builder.compile().invoke({"seen": []}, context=Ctx("mine"))
    assert state["seen"] == ["mine"]


def test_without_a_context_schema_the_runs_context_object_reaches_nodes_as_is():
    marker = Ctx("as-is")

    def node(state: S) -> S:
        return {"seen": [get_runtime().context is marker]}

    builder = StateGraph(S)
    builder.add_node("n", node)
    builder.add_edge(START, "n")
    graph = builder.compile()
    assert graph.invoke({"seen": []}, context=marker)["seen"] == [True]
    assert graph.get_context_jsonschema() is None


# 2. PARENT_STREAM_KEY ---------------------------------------------------------------------


def test_a_subgraph_of_a_streaming_parent_finds_the_parents_stream_key():
    def inner_node(state: S) -> S:
        return {"seen": [PARENT_STREAM_KEY in get_config()["configurable"]]}

    inner = StateGraph(S)
    inner.add_node("i", inner_node)
    inner.add_edge(START, "i")
    outer = StateGraph(S)
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "sub")
    graph = outer.compile()
    # Only a parent that streams its subgraphs hands them its stream (and so would show
    # their custom events); without subgraphs=True it shows none of them.
    streamed = list(graph.stream({"seen": []}, stream_mode="values", subgraphs=True))
    assert streamed[-1][1]["seen"] == [True]
    assert graph.invoke({"seen": []})["seen"] == [False]
    top = StateGraph(S)
    top.add_node("i", inner_node)
    top.add_edge(START, "i")
    assert top.compile().invoke({"seen": []})["seen"] == [False]
    assert events_wanted({"configurable": {PARENT_STREAM_KEY: object()}}, "values")
    assert not events_wanted({}, ["values", "updates"])


# 3. subtask_call_config -------------------------------------------------------------------


def test_a_call_with_the_forged_config_streams_as_the_named_nodes_messages(echo):
    """A call made from node `a`'s task, but configured as `b`'s, streams as `b`'s."""

    async def a(state: S, config: RunnableConfig) -> S:
        forged = subtask_call_config(config, "b", run_id=config["callbacks"].parent_run_id)
        await asyncio.create_task(echo.ainvoke([HumanMessage("[b] hello there")], forged))
        return {"seen": ["a"]}

    async def b(state: S) -> S:
        return {"seen": ["b"]}

    builder = StateGraph(S)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")

    async def collect() -> list[tuple[Any, dict[str, Any]]]:
        graph = builder.compile()
        return [chunk async for chunk in graph.astream({"seen": []}, stream_mode="messages")]

    chunks = asyncio.run(collect())
    assert chunks, "no tokens were streamed"
    assert {meta["langgraph_node"] for _msg, meta in chunks} == {"b"}
    assert "".join(msg.content for msg, _ in chunks) == "echo: [b] hello there"


def test_the_forged_config_keeps_only_run_scoped_private_keys():
    base = {
        "metadata": {"langgraph_node": "a", "langgraph_step": 3, "langgraph_checkpoint_ns": "a:1"},
        "configurable": {"thread_id": "t", RUNTIME_KEY: "rt", "__pregel_send": "a's writer"},
        "tags": ["graph:step:3", "mine"],
    }
    forged = subtask_call_config(base, "b", run_id=__import__("uuid").uuid4(), index=2)
    assert forged["configurable"]["thread_id"] == "t"
    assert forged["configurable"][RUNTIME_KEY] == "rt"
    assert "__pregel_send" not in forged["configurable"]
    assert (
        forged["metadata"]["langgraph_node"] == "b" and "langgraph_step" not in forged["metadata"]
    )
    assert forged["metadata"]["langgraph_checkpoint_ns"].startswith("b:")
    assert forged["metadata"]["fanfold_item"] == 2
    assert forged["tags"] == ["mine", "fanfold:subtask:b"]


# 4. adopt ---------------------------------------------------------------------------------


class Adopted(CompiledStateGraph):
    def __init__(self, *args: Any, extra: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra = extra


def test_a_compiled_graph_rebuilds_under_a_subclass_as_copy_does():
    def n(state: S) -> S:
        return {"seen": ["n"]}

    builder = StateGraph(S)
    builder.add_node("n", n)
    builder.add_edge(START, "n")
    compiled = builder.compile(checkpointer=InMemorySaver(), name="g")
    adopted = adopt(compiled, Adopted, extra="kept")
    assert type(adopted) is Adopted and adopted.extra == "kept"
    assert set(adopted.nodes) == set(compiled.nodes) and adopted.name == "g"
    config = {"configurable": {"thread_id": "t"}}
    assert adopted.invoke({"seen": []}, config)["seen"] == ["n"]
    copied = adopted.copy({"checkpointer": InMemorySaver()})
    assert type(copied) is Adopted and copied.extra == "kept"


# 5. get_state includes the interrupted step's pending writes --------------------------------


def test_get_state_values_include_writes_of_tasks_that_finished_in_a_failed_step():
    async def ok(state: S) -> S:
        return {"seen": ["ok"]}

    async def boom(state: S) -> S:
        await asyncio.sleep(0.05)  # `ok` has finished and written by now
        raise RuntimeError("crash mid-step")

    builder = StateGraph(S)
    builder.add_node("ok", ok)
    builder.add_node("boom", boom)
    builder.add_edge(START, "ok")
    builder.add_edge(START, "boom")
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(RuntimeError):
        asyncio.run(graph.ainvoke({"seen": []}, config))
    snapshot = graph.get_state(config)
    assert snapshot.values["seen"] == ["ok"]
    assert snapshot.next == ("boom",)


# 11. open_step: `next` leaves out the open step's tasks whose writes are saved ----------------


def test_a_step_whose_tasks_all_wrote_has_no_next_but_lists_them_in_tasks_and_goes_on():
    ran: list[str] = []

    def a(state: S) -> S:
        ran.append("a")
        return {"seen": ["a"]}

    def b(state: S) -> S:
        ran.append("b")
        return {"seen": ["b"]}

    builder = StateGraph(S)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    saver = InMemorySaver()
    graph = builder.compile(checkpointer=saver, interrupt_before=["b"])
    config: RunnableConfig = {"configurable": {"thread_id": "t"}}
    graph.invoke({"seen": []}, config)
    before = graph.get_state(config)
    assert before.next == ("b",) and [t.name for t in before.tasks] == ["b"]
    # What a process killed after b's writes, before the step's checkpoint, leaves behind.
    saver.put_writes(before.config, [("seen", ["b"])], before.tasks[0].id)
    cut = graph.get_state(config)
    assert cut.next == ()
    assert open_step(cut) == ("b",)
    assert cut.values["seen"] == ["a", "b"]
    # Resuming does not run b again: its saved writes finish the step.
    assert graph.invoke(None, config)["seen"] == ["a", "b"] and ran == ["a"]
    assert open_step(graph.get_state(config)) == ()


# 7. custom channels -----------------------------------------------------------------------


class R(TypedDict, total=False):
    results: Annotated[dict[str, SubtaskResult], ResultsChannel()]


def test_a_channel_instance_in_annotated_metadata_is_the_fields_channel():
    seen: list[Any] = []

    def a(state: R) -> R:
        return {"results": {"a": {"id": "a", "status": "succeeded"}}}

    def b(state: R) -> R:
        seen.append(dict(state["results"]))
        return {"results": Overwrite({"b": {"id": "b", "status": "failed"}})}

    builder = StateGraph(R)
    assert isinstance(builder.channels["results"], ResultsChannel)
    assert isinstance(builder.channels["results"], BaseChannel)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    saver = InMemorySaver()
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    state = graph.invoke({"results": {}}, config)
    assert isinstance(seen[0]["a"], SubtaskResult)  # a node reads the typed view
    assert list(state["results"]) == ["b"]  # Overwrite reached update()
    stored = saver.get_tuple(config).checkpoint["channel_values"]["results"]
    assert stored == {"b": {"id": "b", "status": "failed"}}  # checkpoint(): plain data
    # from_checkpoint(): a graph compiled afresh reads the typed view back.
    again = builder.compile(checkpointer=saver).get_state(config).values["results"]
    assert again == {"b": SubtaskResult(id="b", status="failed")}


# 8. stored_once ---------------------------------------------------------------------------


class Big(TypedDict, total=False):
    big: Annotated[dict[str, Any], stored_once()]
    seen: Annotated[list[Any], operator.add]


class OldBig(TypedDict, total=False):
    big: dict[str, Any]
    seen: Annotated[list[Any], operator.add]


def chain_of(schema: Any, n: int) -> StateGraph:
    """Nodes n0 -> n1 -> ... each reading `big` and adding its length to `seen`."""
    builder = StateGraph(schema)
    for i in range(n):
        builder.add_node(f"n{i}", lambda state: {"seen": [len(state["big"]["doc"])]})
        builder.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
    return builder


@asynccontextmanager
async def saver_for(kind: str, tmp_path: Any) -> AsyncIterator[Any]:
    if kind == "memory":
        yield InMemorySaver()
        return
    dsn = os.environ.get("FANFOLD_TEST_POSTGRES_DSN")
    if kind == "postgres" and not dsn:
        pytest.skip("FANFOLD_TEST_POSTGRES_DSN is not set (.ci/run starts PostgreSQL)")
    async with open_checkpointer(dsn if kind == "postgres" else str(tmp_path / "c.db")) as saver:
        yield saver


@pytest.mark.parametrize("kind", ["sqlite", "memory", "postgres"])
async def test_a_value_written_once_is_stored_in_one_checkpoint_and_read_back_from_later_ones(
    kind, tmp_path
):
    doc = "x" * 200_000
    config: RunnableConfig = {"configurable": {"thread_id": f"once-{uuid.uuid4().hex}"}}
    async with saver_for(kind, tmp_path) as saver:
        graph = chain_of(Big, 5).compile(checkpointer=saver, interrupt_before=["n3"])
        await graph.ainvoke({"big": {"doc": doc}, "seen": []}, config)
        # Resumed in a graph compiled afresh, as `fanfold resume` does.
        again = chain_of(Big, 5).compile(checkpointer=saver)
        state = await again.ainvoke(None, config)
        assert state["seen"] == [len(doc)] * 5
        history = [snapshot async for snapshot in again.aget_state_history(config)]
        assert len(history) >= 6
        # Every step's state has it (the input checkpoint holds the input itself).
        assert all(s.values["big"] == {"doc": doc} for s in history if s.metadata["step"] >= 0)
        stored = [t.checkpoint["channel_values"].get("big") async for t in saver.alist(config)]
        assert len(stored) == len(history)
        assert sum(1 for v in stored if v is not None) <= 1  # at most the step that wrote it
        if kind == "postgres":
            await saver.adelete_thread(config["configurable"]["thread_id"])


async def test_a_checkpoint_written_before_the_value_was_stored_once_still_reads_back(tmp_path):
    config: RunnableConfig = {"configurable": {"thread_id": "old"}}
    async with open_checkpointer(str(tmp_path / "old.db")) as saver:
        old = chain_of(OldBig, 4).compile(checkpointer=saver, interrupt_before=["n2"])
        await old.ainvoke({"big": {"doc": "abc"}, "seen": []}, config)
        new = chain_of(Big, 4).compile(checkpointer=saver)
        assert (await new.aget_state(config)).values["big"] == {"doc": "abc"}
        assert (await new.ainvoke(None, config))["seen"] == [3] * 4


# 9. attempt_config ------------------------------------------------------------------------


def test_metadata_of_a_calls_config_reaches_the_messages_streams_metadata(echo):
    async def a(state: S, config: RunnableConfig) -> S:
        for attempt in (1, 2):
            await echo.ainvoke([HumanMessage(f"try {attempt}")], attempt_config(config, attempt))
        return {"seen": ["a"]}

    builder = StateGraph(S)
    builder.add_node("a", a)
    builder.add_edge(START, "a")

    async def collect() -> list[tuple[Any, dict[str, Any]]]:
        graph = builder.compile()
        return [chunk async for chunk in graph.astream({"seen": []}, stream_mode="messages")]

    chunks = asyncio.run(collect())
    by_attempt: dict[int, str] = {}
    for message, meta in chunks:
        assert meta["langgraph_node"] == "a"
        by_attempt[meta[ATTEMPT_KEY]] = by_attempt.get(meta[ATTEMPT_KEY], "") + message.content
    assert by_attempt == {1: "echo: try 1", 2: "echo: try 2"}


# 10. early_call_base: calls start before the first superstep, from the run's config -----


class RunLog(BaseTracer):
    """Keeps every run it traces (a tracer: parents, trace ids and dotted orders)."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[Run] = []
        self.order: list[tuple[str, str, dict[str, Any]]] = []

    def _persist_run(self, run: Run) -> None:
        pass

    def _start_trace(self, run: Run) -> None:
        super()._start_trace(run)
        self.runs.append(run)
        self.order.append((run.run_type, run.name, dict(run.extra.get("metadata") or {})))


def fanfold_graph(model: Any, shape: dict[str, list[str]], **options: Any) -> Any:
    subtasks = [
        {"id": sid, "prompt": f"[{sid}] do {sid}", "depends_on": deps}
        for sid, deps in shape.items()
    ]
    plan = TaskPlan.model_validate({"task": "contract", "subtasks": subtasks})
    return compile_plan(plan, model=model, aggregator=None, **options)


@pytest.mark.parametrize("run", ["sync", "async"])
def test_calls_start_before_the_first_node_and_trace_under_the_graphs_run(run, echo):
    graph = fanfold_graph(echo, {"a": [], "b": [], "c": ["a"]})
    log = RunLog()
    config: RunnableConfig = {"callbacks": [log], "tags": ["mine"], "metadata": {"who": "me"}}
    if run == "sync":
        graph.invoke({"inputs": {}}, config)
    else:
        asyncio.run(graph.ainvoke({"inputs": {}}, config))
    top = next(r for r in log.runs if r.parent_run_id is None)
    calls = [r for r in log.runs if r.run_type == "llm"]
    assert len(calls) == 3
    for call in calls:
        assert call.parent_run_id == top.id
        assert call.trace_id == top.trace_id
        assert call.dotted_order.startswith(top.dotted_order + ".")
        assert "mine" in call.tags
        assert call.extra["metadata"]["who"] == "me"
    if run == "sync":
        return  # the calls run on the background loop's thread: no order to assert
    kinds = [(kind, name) for kind, name, _ in log.order]
    first_call = next(i for i, (kind, _) in enumerate(kinds) if kind == "llm")
    first_node = next(
        i for i, (kind, name) in enumerate(kinds) if kind == "chain" and name in {"a", "b", "c"}
    )
    assert first_call < first_node, "a call waited for LangGraph's first node"


def test_a_calls_metadata_names_its_subtask_as_a_nodes_own_calls_would(echo):
    graph = fanfold_graph(echo, {"a": [], "b": ["a"]})
    log = RunLog()
    asyncio.run(graph.ainvoke({"inputs": {}}, {"callbacks": [log]}))
    early = {meta["langgraph_node"]: meta for kind, _, meta in log.order if kind == "llm"}

    async def streamed() -> list[tuple[Any, dict[str, Any]]]:
        return [c async for c in graph.astream({"inputs": {}}, stream_mode="messages")]

    messages = {meta["langgraph_node"]: meta for _msg, meta in asyncio.run(streamed())}
    keys = ["langgraph_node", "langgraph_path", "langgraph_triggers", ATTEMPT_KEY]
    for sid in ("a", "b"):
        assert [early[sid][k] for k in keys] == [messages[sid][k] for k in keys]
        assert early[sid][ATTEMPT_KEY] == 1
        for meta in (early[sid], messages[sid]):
            assert meta["langgraph_checkpoint_ns"].startswith(f"{sid}:")
            assert meta["checkpoint_ns"] == meta["langgraph_checkpoint_ns"]


def test_a_fanfold_subgraph_streams_its_events_and_calls_in_its_own_namespace(echo):
    inner = fanfold_graph(echo, {"a": [], "b": ["a"]})
    outer = StateGraph(PlanState)
    outer.add_node("inner", inner)
    outer.add_edge(START, "inner")
    graph = outer.compile()
    log = RunLog()
    chunks = list(
        graph.stream(
            {"inputs": {}},
            {"callbacks": [log]},
            stream_mode=["custom", "updates"],
            subgraphs=True,
        )
    )
    node_ns = {ns for ns, mode, chunk in chunks if mode == "updates" and "a" in chunk}
    event_ns = {ns for ns, mode, _ in chunks if mode == "custom"}
    assert len(node_ns) == 1 and node_ns == event_ns
    (ns,) = node_ns
    assert len(ns) == 1 and ns[0].startswith("inner:")
    calls = {meta["langgraph_node"]: meta for kind, _, meta in log.order if kind == "llm"}
    for sid in ("a", "b"):
        assert calls[sid]["langgraph_checkpoint_ns"].startswith(f"{ns[0]}{NS_SEP}{sid}:")


@pytest.mark.parametrize("run", ["sync", "async"])
def test_get_config_runtime_and_store_inside_a_kind_of_a_run_started_early(run):
    registry = NodeKindRegistry()
    seen: dict[str, Any] = {}

    @registry.register("probe")
    async def probe(call: SubtaskCall) -> str:
        config = get_config()
        seen[call.subtask.id] = {
            "node": config["metadata"]["langgraph_node"],
            "user": get_runtime().context.user,
            "store": get_store(),
        }
        get_stream_writer()({"from": call.subtask.id})
        return "ok"

    plan = TaskPlan.model_validate(
        {
            "task": "contract",
            "subtasks": [
                {"id": "a", "prompt": "a", "kind": "probe"},
                {"id": "b", "prompt": "b", "kind": "probe", "depends_on": ["a"]},
            ],
        }
    )
    store = InMemoryStore()
    graph = compile_plan(plan, kinds=registry, aggregator=None, store=store)
    if run == "sync":
        chunks = list(graph.stream({"inputs": {}}, stream_mode="custom", context="ctx"))
    else:

        async def collect() -> list[Any]:
            stream = graph.astream({"inputs": {}}, stream_mode="custom", context="ctx")
            return [c async for c in stream]

        chunks = asyncio.run(collect())
    assert {sid: s["node"] for sid, s in seen.items()} == {"a": "a", "b": "b"}
    assert all(s["user"] == "ctx" and s["store"] is store for s in seen.values())
    assert sorted(c["from"] for c in chunks if "from" in c) == ["a", "b"]
    statuses = [(c["subtask"], c["status"]) for c in chunks if "status" in c]
    assert statuses.index(("a", "succeeded")) < statuses.index(("b", "succeeded"))
