"""The compiled plan is an ordinary LangGraph Runnable: LCEL, batch, config, subgraphs, kinds."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

from fanfold import (
    KindOutput,
    NodeKindRegistry,
    SubtaskCall,
    SubtaskResult,
    TaskPlan,
    TokenUsage,
    compile_plan,
    node_kinds,
)

TOPIC_SHAPE = {"a": [], "b": ["a"]}
TOPIC_PROMPTS = {"a": "[a] about {topic}", "b": "[b] more on {topic}"}


def outputs(state) -> dict[str, Any]:
    return {sid: r.output for sid, r in state["results"].items()}


class ChatRunRecorder(BaseCallbackHandler):
    """Records every chat-model start (node, tags, metadata) and every run id seen."""

    def __init__(self) -> None:
        self.chat_runs: list[dict[str, Any]] = []
        self.run_ids: set[uuid.UUID] = set()

    def on_chain_start(self, serialized, inputs, *, run_id, **kwargs):
        self.run_ids.add(run_id)

    def on_chat_model_start(
        self, serialized, messages, *, run_id, parent_run_id=None, tags=None, metadata=None, **kw
    ):
        self.run_ids.add(run_id)
        self.chat_runs.append(
            {
                "node": (metadata or {}).get("langgraph_node"),
                "tags": list(tags or []),
                "metadata": dict(metadata or {}),
                "parent": parent_run_id,
            }
        )


# -- LCEL ----------------------------------------------------------------------------------


def topic_chain(graph):
    return (
        RunnableLambda(lambda topic: {"inputs": {"topic": topic}})
        | graph
        | RunnableLambda(lambda state: state["results"]["b"].output)
    )


def test_graph_runs_inside_an_lcel_chain(make_plan, echo):
    graph = compile_plan(make_plan(TOPIC_SHAPE, prompts=TOPIC_PROMPTS), model=echo)
    assert topic_chain(graph).invoke("tides") == "echo: [b] more on tides"
    assert echo.call_for("a").human == "[a] about tides"


async def test_graph_runs_inside_an_lcel_chain_async(make_plan, echo):
    graph = compile_plan(make_plan(TOPIC_SHAPE, prompts=TOPIC_PROMPTS), model=echo)
    assert await topic_chain(graph).ainvoke("comets") == "echo: [b] more on comets"


# -- batch ---------------------------------------------------------------------------------


TOPICS = ["tides", "comets", "glaciers", "deserts"]


def check_batch(states, model) -> None:
    assert len(states) == len(TOPICS)
    for topic, state in zip(TOPICS, states, strict=True):
        assert outputs(state) == {
            "a": f"echo: [a] about {topic}",
            "b": f"echo: [b] more on {topic}",
        }
        # b saw its own run's a, never another input's.
        b_prompts = [c.human for c in model.calls_for("b") if f"more on {topic}" in c.human]
        assert len(b_prompts) == 1
        assert f"echo: [a] about {topic}" in b_prompts[0]
        assert all(f"about {other}" not in b_prompts[0] for other in TOPICS if other != topic)
    assert len(model.calls) == 2 * len(TOPICS)


def test_batch_gives_each_input_its_own_results(make_plan, echo_factory):
    model = echo_factory(latency=0.005)
    graph = compile_plan(
        make_plan(TOPIC_SHAPE, prompts=TOPIC_PROMPTS), model=model, aggregator=None
    )
    check_batch(graph.batch([{"inputs": {"topic": t}} for t in TOPICS]), model)


async def test_abatch_gives_each_input_its_own_results(make_plan, echo_factory):
    model = echo_factory(latency=0.005)
    graph = compile_plan(
        make_plan(TOPIC_SHAPE, prompts=TOPIC_PROMPTS), model=model, aggregator=None
    )
    check_batch(await graph.abatch([{"inputs": {"topic": t}} for t in TOPICS]), model)


# -- config and callbacks ------------------------------------------------------------------


def check_one_chat_run_per_node(recorder: ChatRunRecorder, ids) -> None:
    assert Counter(run["node"] for run in recorder.chat_runs) == Counter([*ids, "aggregate"])
    for run in recorder.chat_runs:
        assert run["parent"] in recorder.run_ids, "a model call is orphaned in the trace"


def test_callback_handler_sees_one_chat_model_run_per_subtask(make_plan, echo):
    shape = {"a": [], "b": [], "c": ["a", "b"]}
    recorder = ChatRunRecorder()
    compile_plan(make_plan(shape), model=echo).invoke({"inputs": {}}, {"callbacks": [recorder]})
    check_one_chat_run_per_node(recorder, shape)


async def test_callback_handler_sees_one_chat_model_run_per_subtask_async(make_plan, echo):
    shape = {"a": [], "b": [], "c": ["a", "b"]}
    recorder = ChatRunRecorder()
    await compile_plan(make_plan(shape), model=echo).ainvoke(
        {"inputs": {}}, {"callbacks": [recorder]}
    )
    check_one_chat_run_per_node(recorder, shape)


def check_config_passed_through(recorder: ChatRunRecorder, model) -> None:
    assert len(recorder.chat_runs) == 3
    for run in recorder.chat_runs:
        assert "team:research" in run["tags"]
        assert run["metadata"]["request"] == "r-42"
    for call in model.calls:  # the model's own run manager sees them too
        assert "team:research" in call.tags
        assert call.metadata["request"] == "r-42"


def test_with_config_tags_and_metadata_reach_every_model_call(make_plan, echo):
    recorder = ChatRunRecorder()
    graph = compile_plan(make_plan({"a": [], "b": ["a"]}), model=echo).with_config(
        tags=["team:research"], metadata={"request": "r-42"}, callbacks=[recorder]
    )
    graph.invoke({"inputs": {}})
    check_config_passed_through(recorder, echo)


async def test_with_config_tags_and_metadata_reach_every_model_call_async(make_plan, echo):
    recorder = ChatRunRecorder()
    graph = compile_plan(make_plan({"a": [], "b": ["a"]}), model=echo)
    await graph.ainvoke(
        {"inputs": {}},
        {"tags": ["team:research"], "metadata": {"request": "r-42"}, "callbacks": [recorder]},
    )
    check_config_passed_through(recorder, echo)


# -- subgraph ------------------------------------------------------------------------------


class Outer(TypedDict, total=False):
    note: str
    inputs: dict[str, Any]
    output: Any


def outer_graph(inner):
    builder = StateGraph(Outer)
    builder.add_node("prepare", lambda state: {"inputs": {"topic": state["note"]}})
    builder.add_node("plan", inner)
    builder.add_node("finish", lambda state: {"note": f"done: {state['output']}"})
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "plan")
    builder.add_edge("plan", "finish")
    builder.add_edge("finish", END)
    return builder.compile()


def first_line_upper(results: dict[str, SubtaskResult]) -> str:
    return " | ".join(results[sid].output.upper() for sid in sorted(results))


def test_compiled_plan_works_as_a_subgraph_node(make_plan, echo):
    inner = compile_plan(
        make_plan(TOPIC_SHAPE, prompts=TOPIC_PROMPTS), model=echo, aggregator=first_line_upper
    )
    state = outer_graph(inner).invoke({"note": "tides"})
    assert state["output"] == "ECHO: [A] ABOUT TIDES | ECHO: [B] MORE ON TIDES"
    assert state["note"] == f"done: {state['output']}"


async def test_compiled_plan_works_as_a_subgraph_node_async(make_plan, echo):
    inner = compile_plan(
        make_plan(TOPIC_SHAPE, prompts=TOPIC_PROMPTS), model=echo, aggregator=first_line_upper
    )
    state = await outer_graph(inner).ainvoke({"note": "comets"})
    assert state["output"] == "ECHO: [A] ABOUT COMETS | ECHO: [B] MORE ON COMETS"


def test_subgraph_tokens_are_tagged_with_the_subtask_id_and_namespace(make_plan, echo):
    inner = compile_plan(make_plan(TOPIC_SHAPE, prompts=TOPIC_PROMPTS), model=echo, aggregator=None)
    text: dict[str, str] = {}
    for namespace, (message, metadata) in outer_graph(inner).stream(
        {"note": "tides"}, stream_mode="messages", subgraphs=True
    ):
        assert namespace[0].startswith("plan:")  # the outer node holding the plan
        node = metadata["langgraph_node"]
        text[node] = text.get(node, "") + message.content
    assert text == {"a": "echo: [a] about tides", "b": "echo: [b] more on tides"}


# -- determinism ---------------------------------------------------------------------------


async def test_invoke_and_ainvoke_give_equal_results_with_the_simulated_model(
    research_plan_path, simulated
):
    graph = compile_plan(research_plan_path, model=simulated)
    sync_state = graph.invoke({"inputs": {"topic": "heat pumps"}})
    async_state = await graph.ainvoke({"inputs": {"topic": "heat pumps"}})
    assert outputs(sync_state) == outputs(async_state)
    assert sync_state["output"] == async_state["output"]
    assert sync_state["totals"].usage == async_state["totals"].usage
    assert "heat pumps" in sync_state["results"]["competitors"].output
    other = graph.invoke({"inputs": {"topic": "e-bikes"}})
    assert outputs(other) != outputs(sync_state)


# -- node kinds ----------------------------------------------------------------------------


@pytest.fixture
def kinds() -> NodeKindRegistry:
    registry = NodeKindRegistry()
    registry.register("llm", node_kinds.get("llm").function, needs_model=True)

    @registry.register("shout")
    def shout(call: SubtaskCall) -> str:  # a sync kind runs in a worker thread
        return call.prompt.upper()

    @registry.register("word_count", needs_model=True)
    async def word_count(call: SubtaskCall) -> KindOutput:
        reply = await call.model.ainvoke(call.messages, call.config)
        n = len(reply.content.split())
        return KindOutput(
            {"words": n, "deps": sorted(call.dependencies)}, TokenUsage(total_tokens=n)
        )

    return registry


def test_custom_node_kinds_from_a_registry_run_their_functions(make_plan, echo, kinds):
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "a", "prompt": "[a] hello {topic}"},
                {"id": "loud", "prompt": "[loud] {a}", "kind": "shout", "depends_on": ["a"]},
                {
                    "id": "count",
                    "prompt": "[count] x",
                    "kind": "word_count",
                    "depends_on": ["loud"],
                },
            ],
        }
    )
    state = compile_plan(plan, model=echo, kinds=kinds, aggregator=None).invoke(
        {"inputs": {"topic": "tides"}}
    )
    assert state["results"]["loud"].output == "[LOUD] ECHO: [A] HELLO TIDES"
    assert state["results"]["loud"].model is None
    count = state["results"]["count"]
    assert count.output == {"words": 3, "deps": ["loud"]}  # the reply "echo: [count] x"
    assert count.usage.total_tokens == 3
    assert [c.node for c in echo.calls] == ["a", "count"]  # shout never calls the model
    assert "### loud\n[LOUD] ECHO" in echo.call_for("count").human


def test_a_custom_kind_does_not_leak_into_the_default_registry(kinds):
    assert "shout" in kinds
    assert "shout" not in node_kinds


def test_registering_a_kind_twice_needs_replace(kinds):
    with pytest.raises(ValueError, match="already registered"):
        kinds.register("shout", lambda call: "again")
    kinds.register("shout", lambda call: "again", replace=True)
    assert kinds.get("shout").function(None) == "again"


def test_builtin_template_kind_renders_without_a_model_call(make_plan, echo):
    plan = TaskPlan.model_validate(
        {
            "task": "Report on {topic}",
            "subtasks": [
                {"id": "a", "prompt": "[a] facts on {topic}"},
                {"id": "fmt", "kind": "template", "prompt": "# {topic}\n\n{a}", "depends_on": "a"},
            ],
        }
    )
    assert {"llm", "template"} <= set(node_kinds.names())
    state = compile_plan(plan, model=echo, aggregator=None).invoke({"inputs": {"topic": "tides"}})
    assert state["results"]["fmt"].output == "# tides\n\necho: [a] facts on tides"
    assert [c.node for c in echo.calls] == ["a"]


def test_template_only_plan_needs_no_model_or_credentials():
    plan = {"task": "t", "subtasks": [{"id": "a", "kind": "template", "prompt": "hi {who}"}]}
    state = compile_plan(plan, aggregator=None).invoke({"inputs": {"who": "there"}})
    assert state["results"]["a"].output == "hi there"


# -- structured output ---------------------------------------------------------------------


class Finding(BaseModel):
    claim: str
    confidence: float


FINDING_SCHEMA = {
    "title": "Finding",
    "type": "object",
    "properties": {"claim": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["claim", "score"],
}


def structured_plan(schema, reader) -> TaskPlan:
    return TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "finding", "prompt": "State one finding.", "output_schema": schema},
                {"id": "use", "prompt": "[use] check", "depends_on": ["finding"], "model": reader},
            ],
        }
    )


def test_output_schema_pydantic_class_gives_a_validated_object(simulated, echo):
    graph = compile_plan(structured_plan(Finding, echo), model=simulated, aggregator=None)
    state = graph.invoke({"inputs": {}})
    finding = state["results"]["finding"].output
    assert isinstance(finding, Finding)
    assert state["results"]["finding"].usage.total_tokens > 0
    # The dependent sees the object as JSON.
    context = echo.call_for("use").human.split("### finding\n", 1)[1]
    assert Finding.model_validate_json(context) == finding


async def test_output_schema_json_schema_dict_gives_a_matching_dict(simulated, echo):
    graph = compile_plan(structured_plan(FINDING_SCHEMA, echo), model=simulated, aggregator=None)
    state = await graph.ainvoke({"inputs": {}})
    finding = state["results"]["finding"].output
    assert isinstance(finding, dict)
    assert set(finding) == {"claim", "score"}
    assert isinstance(finding["claim"], str) and isinstance(finding["score"], int)
    context = echo.call_for("use").human.split("### finding\n", 1)[1]
    assert json.loads(context) == finding


def test_output_schema_on_a_model_without_tools_fails_only_that_subtask(echo):
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "finding", "prompt": "[finding] x", "output_schema": Finding},
                {"id": "plain", "prompt": "[plain] y"},
            ],
        }
    )
    state = compile_plan(plan, model=echo, aggregator=None).invoke({"inputs": {}})
    assert state["results"]["finding"].status == "failed"
    assert state["results"]["plain"].status == "succeeded"


# -- aggregators ---------------------------------------------------------------------------


def test_callable_aggregator_receives_every_result(make_plan, echo):
    seen = {}

    def aggregator(results):
        seen.update(results)
        return {sid: r.status for sid, r in results.items()}

    state = compile_plan(
        make_plan({"a": [], "b": ["a"]}), model=echo, aggregator=aggregator
    ).invoke({"inputs": {}})
    assert state["output"] == {"a": "succeeded", "b": "succeeded"}
    assert seen["b"].output == "echo: [b] do b"
    assert echo.calls_for("aggregate") == []
    assert state["totals"].aggregate_usage.total_tokens == 0


async def test_async_callable_aggregator_is_awaited(make_plan, echo):
    async def aggregator(results):
        return "\n".join(results[sid].output for sid in sorted(results))

    state = await compile_plan(
        make_plan({"a": [], "b": []}), model=echo, aggregator=aggregator
    ).ainvoke({"inputs": {}})
    assert state["output"] == "echo: [a] do a\necho: [b] do b"


def test_aggregator_none_skips_aggregation(make_plan, echo):
    state = compile_plan(make_plan({"a": [], "b": []}), model=echo, aggregator=None).invoke(
        {"inputs": {}}
    )
    assert state["output"] is None
    assert state["aggregate_error"] is None
    assert state["totals"].succeeded == 2
    assert len(echo.calls) == 2


def test_aggregator_model_differs_from_the_subtask_model(make_plan, echo_factory):
    workers, combiner = echo_factory(), echo_factory(replies={"Task:": "combined"})
    state = compile_plan(make_plan({"a": []}), model=workers, aggregator=combiner).invoke(
        {"inputs": {}}
    )
    assert state["output"] == "combined"
    assert [c.node for c in workers.calls] == ["a"]
    assert [c.node for c in combiner.calls] == ["aggregate"]


def test_plan_aggregation_settings_shape_the_aggregate_prompt(echo):
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [{"id": "a", "prompt": "[a] x"}],
            "aggregation": {"instructions": "Use three headings.", "system": "You edit."},
        }
    )
    compile_plan(plan, model=echo).invoke({"inputs": {}})
    call = echo.call_for("aggregate")
    assert call.system == "You edit."
    assert call.human.endswith("Use three headings.")


def test_disabled_aggregation_makes_no_aggregate_call(echo):
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [{"id": "a", "prompt": "[a] x"}],
            "aggregation": {"enabled": False},
        }
    )
    state = compile_plan(plan, model=echo).invoke({"inputs": {}})
    assert state["output"] is None
    assert echo.calls_for("aggregate") == []


# -- checkpointer --------------------------------------------------------------------------


def test_checkpointed_run_shows_its_results_in_get_state(make_plan, echo):
    graph = compile_plan(make_plan({"a": [], "b": ["a"]}), model=echo, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "run-1"}}
    state = graph.invoke({"inputs": {}}, config)
    snapshot = graph.get_state(config)
    assert snapshot.next == ()
    assert (
        outputs(snapshot.values)
        == outputs(state)
        == {
            "a": "echo: [a] do a",
            "b": "echo: [b] do b",
        }
    )
    assert snapshot.values["output"] == state["output"]
    # Other threads are untouched.
    assert graph.get_state({"configurable": {"thread_id": "run-2"}}).values == {}


def test_resuming_a_finished_thread_makes_no_new_calls(make_plan, echo):
    graph = compile_plan(make_plan({"a": [], "b": ["a"]}), model=echo, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "run-1"}}
    first = graph.invoke({"inputs": {}}, config)
    calls = len(echo.calls)
    again = graph.invoke(None, config)
    assert len(echo.calls) == calls
    assert outputs(again) == outputs(first)


async def test_a_fresh_input_on_a_used_thread_runs_again(make_plan, echo):
    plan = make_plan(TOPIC_SHAPE, prompts=TOPIC_PROMPTS)
    graph = compile_plan(plan, model=echo, checkpointer=InMemorySaver(), aggregator=None)
    config = {"configurable": {"thread_id": "run-1"}}
    await graph.ainvoke({"inputs": {"topic": "tides"}}, config)
    state = await graph.ainvoke({"inputs": {"topic": "comets"}}, config)
    assert outputs(state) == {"a": "echo: [a] about comets", "b": "echo: [b] more on comets"}
    snapshot = await graph.aget_state(config)
    assert outputs(snapshot.values) == outputs(state)
