"""Map subtasks: one call per item of a list, each limited, retried and streamed on its own.

A map over a run input or over a subtask's list output runs once per item; its result
holds one `SubtaskResult` per item (`analyse[3]`) and the list of item outputs. A map
over another map's items is pipelined item by item. Timings come from the calls the
fake models record, orders from the lifecycle events.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.memory import InMemorySaver

from fanfold import (
    EVENT_TYPE,
    DependencyCycleError,
    InvalidMapError,
    MapInputError,
    MissingInputError,
    NodeKindRegistry,
    PlanError,
    PlanValidationError,
    RateLimiter,
    RetryPolicy,
    SimulatedChatModel,
    SubtaskResult,
    TaskPlan,
    compile_plan,
    node_kinds,
)

TWINS = pytest.mark.parametrize("run", ["sync", "async"])
FAST_RETRY = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, jitter=0.0)


# -- helpers -------------------------------------------------------------------------------


def plan_of(
    *subtasks: dict[str, Any], inputs: Any = ("docs",), task: str = "Test maps"
) -> TaskPlan:
    """A TaskPlan from subtask dicts; `docs` is declared as an input unless told otherwise."""
    return TaskPlan.model_validate(
        {"task": task, "subtasks": list(subtasks), "inputs": list(inputs)}
    )


def each_over(source: str = "docs", sid: str = "each", **fields: Any) -> dict[str, Any]:
    """A map subtask whose prompt's first line is `[sid i] item` (the fake models' key)."""
    return {"id": sid, "prompt": f"[{sid} {{index}}] {{item}}", "map": source, **fields}


async def run_plan(graph: Any, run: str, inputs: dict[str, Any], **kwargs: Any) -> Any:
    if run == "sync":
        return graph.invoke({"inputs": inputs}, **kwargs)
    return await graph.ainvoke({"inputs": inputs}, **kwargs)


async def stream_plan(graph: Any, run: str, inputs: dict[str, Any], **kwargs: Any) -> list[Any]:
    if run == "sync":
        return list(graph.stream({"inputs": inputs}, **kwargs))
    return [chunk async for chunk in graph.astream({"inputs": inputs}, **kwargs)]


def item_calls(model: Any, sid: str) -> dict[int, Any]:
    """The single call of each item of map `sid`, by index (fails on a repeated item)."""
    calls = model.calls_for(sid)
    indices = [c.metadata["fanfold_item"] for c in calls]
    assert len(indices) == len(set(indices)), f"an item of {sid!r} was called twice: {indices}"
    return {c.metadata["fanfold_item"]: c for c in calls}


def events_of(chunks: list[Any]) -> list[dict[str, Any]]:
    return [c for c in chunks if isinstance(c, dict) and c.get("type") == EVENT_TYPE]


def kinds_with_json() -> NodeKindRegistry:
    """The built-in llm and template kinds, plus `json`: the prompt parsed as JSON."""
    kinds = NodeKindRegistry()
    kinds.register("llm", node_kinds.get("llm").function, needs_model=True)
    kinds.register("template", node_kinds.get("template").function)
    kinds.register("json", lambda call: json.loads(call.prompt))
    return kinds


def flaky_model(
    markers: tuple[str, ...], *, failures: int = 1
) -> tuple[SimulatedChatModel, Counter[str]]:
    """A model whose calls for `markers` time out `failures` times, and a count per first line."""
    seen: Counter[str] = Counter()

    def latency(messages: list[BaseMessage]) -> float:
        first_line = str(messages[-1].content).split("\n", 1)[0]
        seen[first_line] += 1
        if any(m in first_line for m in markers) and seen[first_line] <= failures:
            raise TimeoutError(f"timed out on {first_line!r}")
        return 0.001

    return SimulatedChatModel(latency_fn=latency), seen


# -- one call per item ---------------------------------------------------------------------


@TWINS
async def test_map_over_an_input_runs_one_call_per_item_in_item_order(run, echo):
    graph = compile_plan(plan_of(each_over()), model=echo, aggregator=None)

    state = await run_plan(graph, run, {"docs": ["alpha", "beta", "gamma"]})

    result = state["results"]["each"]
    assert result.status == "succeeded" and result.error is None
    assert result.output == ["echo: [each 0] alpha", "echo: [each 1] beta", "echo: [each 2] gamma"]
    assert [i.id for i in result.items] == ["each[0]", "each[1]", "each[2]"]
    assert [i.index for i in result.items] == [0, 1, 2]
    assert all(i.status == "succeeded" and i.attempts == 1 for i in result.items)
    assert [i.output for i in result.items] == result.output
    calls = item_calls(echo, "each")
    assert sorted(calls) == [0, 1, 2]
    assert {i: c.first_line for i, c in calls.items()} == {
        0: "[each 0] alpha",
        1: "[each 1] beta",
        2: "[each 2] gamma",
    }


def test_map_result_sums_its_items_usage_and_attempts(echo):
    state = compile_plan(plan_of(each_over()), model=echo, aggregator=None).invoke(
        {"inputs": {"docs": ["one", "two words", "three more words"]}}
    )
    result = state["results"]["each"]
    assert all(i.usage.total_tokens > 0 for i in result.items)
    assert result.usage.total_tokens == sum(i.usage.total_tokens for i in result.items)
    assert result.usage.input_tokens == sum(i.usage.input_tokens for i in result.items)
    assert result.attempts == 3
    assert result.kind == "llm" and {i.kind for i in result.items} == {"llm"}
    assert result.model == "EchoChatModel" and {i.model for i in result.items} == {result.model}
    assert result.started_at == min(i.started_at for i in result.items)
    assert result.finished_at >= max(i.finished_at for i in result.items)
    assert state["totals"].usage.total_tokens == result.usage.total_tokens


def test_item_renders_a_string_verbatim_and_anything_else_as_json():
    plan = plan_of({"id": "show", "kind": "template", "prompt": "{index}={item}", "map": "docs"})
    items = ["a {b} }}", {"k": [1, 2]}, 3, None, True, ["x", "y"]]

    state = compile_plan(plan, model="simulated", aggregator=None).invoke(
        {"inputs": {"docs": items}}
    )

    assert state["results"]["show"].output == [
        "0=a {b} }}",  # braces in the item are not template syntax
        '1={\n  "k": [\n    1,\n    2\n  ]\n}',
        "2=3",
        "3=null",
        "4=true",
        '5=[\n  "x",\n  "y"\n]',
    ]


def test_a_map_prompt_without_item_still_shows_the_model_its_item(echo):
    plan = plan_of({"id": "each", "prompt": "[each {index}] summarise this", "map": "docs"})
    compile_plan(plan, model=echo, aggregator=None).invoke({"inputs": {"docs": ["ALPHA", "BETA"]}})
    calls = item_calls(echo, "each")
    assert "ALPHA" in calls[0].human and "BETA" not in calls[0].human
    assert "BETA" in calls[1].human and "ALPHA" not in calls[1].human


def test_map_over_a_subtask_whose_output_is_a_list_depends_on_it_implicitly(echo):
    plan = plan_of(
        {"id": "rows", "kind": "split_rows", "prompt": "{doc}", "options": {"rows": 1}},
        each_over("rows"),
        inputs=["doc"],
    )
    assert plan.dependencies()["each"] == ("rows",)
    graph = compile_plan(plan, model=echo, aggregator=None)
    edges = {(e.source, e.target) for e in graph.get_graph().edges}
    assert ("rows", "each") in edges and ("__start__", "each") not in edges

    state = graph.invoke({"inputs": {"doc": '{"city": "Lisbon"}\n{"city": "Oslo"}\n'}})

    rows = state["results"]["rows"]
    result = state["results"]["each"]
    assert result.status == "succeeded"
    assert len(result.items) == 2 == len(rows.output)
    calls = item_calls(echo, "each")
    # Each item is one partition, rendered as JSON.
    assert json.loads(calls[0].human.split(" ", 2)[2]) == rows.output[0]
    assert '"city": "Oslo"' in calls[1].human and "Lisbon" not in calls[1].human
    assert all(c.started >= rows.finished_at for c in calls.values())


def test_a_string_input_holding_a_json_list_is_read_as_that_list(echo):
    graph = compile_plan(plan_of(each_over()), model=echo, aggregator=None)
    state = graph.invoke({"inputs": {"docs": '["x", {"y": 1}]'}})  # as the CLI passes it
    result = state["results"]["each"]
    assert len(result.items) == 2
    assert result.output[0] == "echo: [each 0] x"
    assert item_calls(echo, "each")[1].human == '[each 1] {\n  "y": 1\n}'


def test_a_tuple_input_is_mapped_like_a_list(echo):
    graph = compile_plan(plan_of(each_over()), model=echo, aggregator=None)
    state = graph.invoke({"inputs": {"docs": ("p", "q")}})
    assert state["results"]["each"].output == ["echo: [each 0] p", "echo: [each 1] q"]


def test_a_declared_default_list_is_mapped_when_the_run_gives_none(echo):
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [each_over()],
            "inputs": {"docs": {"default": ["d0", "d1"]}},
        }
    )
    state = compile_plan(plan, model=echo, aggregator=None).invoke({"inputs": {}})
    assert state["results"]["each"].output == ["echo: [each 0] d0", "echo: [each 1] d1"]


def test_a_map_is_one_graph_node_with_one_update_however_many_items(echo):
    graph = compile_plan(
        plan_of(each_over(), {"id": "after", "prompt": "[after] {each}", "depends_on": ["each"]}),
        model=echo,
        aggregator=None,
    )
    assert set(graph.nodes) == {"__start__", "each", "after", "aggregate"}

    chunks = list(graph.stream({"inputs": {"docs": [f"d{i}" for i in range(50)]}}))

    updates = [node for chunk in chunks for node in chunk]
    assert Counter(updates) == {"each": 1, "after": 1, "aggregate": 1}
    (write,) = [c["each"]["results"]["each"] for c in chunks if "each" in c]
    committed = SubtaskResult.model_validate(write)
    assert len(committed.items) == 50 and committed.items[49].id == "each[49]"


# -- empty lists ---------------------------------------------------------------------------


@TWINS
async def test_an_empty_list_makes_no_calls_and_its_dependents_still_run(run, echo):
    plan = plan_of(
        each_over(),
        each_over("each", sid="again"),
        {"id": "after", "prompt": "[after] {each} / {again}", "depends_on": ["each", "again"]},
    )
    graph = compile_plan(plan, model=echo, aggregator=None)

    state = await run_plan(graph, run, {"docs": []})

    for sid in ("each", "again"):
        result = state["results"][sid]
        assert (result.status, result.output, result.items) == ("succeeded", [], [])
        assert result.attempts == 0
    assert state["results"]["after"].status == "succeeded"
    assert [c.node for c in echo.calls] == ["after"]


def test_an_empty_list_output_of_a_subtask_gives_an_empty_map(echo):
    plan = plan_of(
        {"id": "found", "kind": "json", "prompt": "[]"},
        each_over("found"),
        {"id": "after", "prompt": "[after] {each}", "depends_on": ["each"]},
        inputs=[],
    )
    graph = compile_plan(plan, model=echo, kinds=kinds_with_json(), aggregator=None)
    state = graph.invoke({"inputs": {}})
    assert state["results"]["each"].output == []
    assert state["results"]["each"].status == "succeeded"
    assert [c.node for c in echo.calls] == ["after"]


# -- failures ------------------------------------------------------------------------------


def test_a_failed_item_fails_the_map_and_leaves_none_in_its_place(echo_factory):
    model = echo_factory(fail_on=("[each 1]",))
    graph = compile_plan(plan_of(each_over()), model=model, aggregator=None)

    state = graph.invoke({"inputs": {"docs": ["a", "b", "c"]}})

    result = state["results"]["each"]
    assert result.status == "failed"
    assert result.output == ["echo: [each 0] a", None, "echo: [each 2] c"]
    assert [i.status for i in result.items] == ["succeeded", "failed", "succeeded"]
    assert result.items[1].error == "ScriptedFailure: scripted failure on '[each 1]'"
    assert result.items[1].output is None
    # The map's error says how many and which item failed first.
    assert "1 of 3" in result.error and "each[1]" in result.error
    assert "scripted failure" in result.error
    assert state["totals"].failed == 1


async def test_a_failing_item_never_cancels_a_slower_sibling(echo_factory):
    model = echo_factory(fail_on=("[each 1]",), latencies={"[each 0]": 0.1})
    graph = compile_plan(plan_of(each_over()), model=model, aggregator=None)

    state = await graph.ainvoke({"inputs": {"docs": ["slow", "bad"]}})

    calls = item_calls(model, "each")
    assert calls[0].outcome == "replied"
    assert calls[0].finished > calls[1].finished  # it outlived the failure
    assert state["results"]["each"].output == ["echo: [each 0] slow", None]


@TWINS
async def test_dependents_of_a_failed_map_are_skipped_without_allow_partial(run, echo_factory):
    model = echo_factory(fail_on=("[each 1]",))
    plan = plan_of(each_over(), {"id": "after", "prompt": "[after] {each}", "depends_on": "each"})
    graph = compile_plan(plan, model=model, aggregator=None)

    state = await run_plan(graph, run, {"docs": ["a", "b", "c"]})

    after = state["results"]["after"]
    assert after.status == "skipped"
    assert after.error == "dependency 'each' failed"
    assert model.calls_for("after") == []


@TWINS
async def test_allow_partial_lets_dependents_run_on_the_partial_list(run, echo_factory):
    model = echo_factory(fail_on=("[each 1]",))
    plan = plan_of(
        each_over(allow_partial=True),
        {"id": "after", "prompt": "[after]\n{each}", "depends_on": "each"},
    )
    seen: dict[str, Any] = {}

    def aggregator(results: dict[str, SubtaskResult]) -> str:
        seen.update(results)
        return "done"

    graph = compile_plan(plan, model=model, aggregator=aggregator)
    state = await run_plan(graph, run, {"docs": ["a", "b", "c"]})

    assert state["results"]["each"].status == "failed"  # partial is still not success
    assert state["results"]["after"].status == "succeeded"
    prompt = model.call_for("after").human
    first, third = prompt.index("echo: [each 0] a"), prompt.index("echo: [each 2] c")
    assert first < prompt.index("each[1]") < third  # the failed item keeps its place
    assert "echo: [each 1]" not in prompt
    assert seen["each"].output == ["echo: [each 0] a", None, "echo: [each 2] c"]


def test_allow_partial_does_not_run_dependents_when_there_is_no_list(echo):
    plan = plan_of(
        {"id": "text", "prompt": "[text] one string"},
        each_over("text", allow_partial=True),
        {"id": "after", "prompt": "[after] {each}", "depends_on": "each"},
        inputs=[],
    )
    state = compile_plan(plan, model=echo, aggregator=None).invoke({"inputs": {}})
    assert state["results"]["each"].status == "failed"
    assert state["results"]["after"].status == "skipped"
    assert echo.calls_for("after") == []


@TWINS
async def test_a_map_over_a_subtask_whose_output_is_not_a_list_fails_naming_both(run, echo):
    plan = plan_of(
        {"id": "text", "prompt": "[text] one string"},
        each_over("text"),
        {"id": "after", "prompt": "[after] {each}", "depends_on": "each"},
        {"id": "other", "prompt": "[other] unrelated"},
        inputs=[],
    )
    graph = compile_plan(plan, model=echo, aggregator=None)

    state = await run_plan(graph, run, {})

    result = state["results"]["each"]
    assert result.status == "failed"
    assert "'each'" in result.error and "'text'" in result.error
    assert "str" in result.error and "list" in result.error
    assert result.items is None and result.output is None
    assert echo.calls_for("each") == []
    assert state["results"]["after"].error == "dependency 'each' failed"
    assert state["results"]["other"].status == "succeeded"


def test_the_aggregate_prompt_shows_a_map_item_by_item_in_order(echo_factory):
    model = echo_factory(latencies={"[each 0]": 0.05})
    graph = compile_plan(plan_of(each_over()), model=model)
    state = graph.invoke({"inputs": {"docs": ["a", "b", "c"]}})
    prompt = model.call_for("aggregate").human
    positions = [prompt.index(f"echo: [each {i}]") for i in range(3)]
    assert positions == sorted(positions)
    assert state["output"] == model.call_for("aggregate").reply


# -- dependents receive the list -----------------------------------------------------------


@TWINS
async def test_dependent_gets_the_list_in_item_order_when_items_finish_out_of_order(
    run, echo_factory
):
    model = echo_factory(latencies={"[each 0]": 0.15, "[each 1]": 0.08})
    plan = plan_of(
        each_over(),
        {"id": "after", "kind": "template", "prompt": "{each}", "depends_on": "each"},
    )
    graph = compile_plan(plan, model=model, aggregator=None)

    state = await run_plan(graph, run, {"docs": ["first\nline two", "second", "third"]})

    calls = item_calls(model, "each")
    assert calls[2].finished < calls[1].finished < calls[0].finished  # reverse order
    assert state["results"]["each"].output == [
        "echo: [each 0] first",
        "echo: [each 1] second",
        "echo: [each 2] third",
    ]
    text = state["results"]["after"].output
    # One block per item, each headed by its id, in item order and nothing else mixed in.
    heads = [text.index(f"each[{i}]") for i in range(3)]
    bodies = [text.index(f"echo: [each {i}]") for i in range(3)]
    assert heads[0] < bodies[0] < heads[1] < bodies[1] < heads[2] < bodies[2]
    blocks = text.split("\n\n")
    assert len(blocks) == 3
    assert [b.splitlines()[-1] for b in blocks] == state["results"]["each"].output


def test_a_map_dependency_the_prompt_does_not_place_is_appended_item_by_item(echo):
    plan = plan_of(each_over(), {"id": "after", "prompt": "[after] sum up", "depends_on": "each"})
    compile_plan(plan, model=echo, aggregator=None).invoke({"inputs": {"docs": ["a", "b"]}})
    prompt = echo.call_for("after").human
    assert prompt.index("each[0]") < prompt.index("echo: [each 0] a")
    assert prompt.index("echo: [each 0] a") < prompt.index("each[1]")
    assert prompt.index("each[1]") < prompt.index("echo: [each 1] b")


# -- item-wise maps over maps --------------------------------------------------------------


def chain_plan(**down: Any) -> TaskPlan:
    return plan_of(each_over(sid="up"), each_over("up", sid="down", **down))


@TWINS
async def test_item_wise_map_starts_item_zero_before_upstream_item_one_finishes(run, echo_factory):
    model = echo_factory(latencies={"[up 0]": 0.01, "[up 1]": 0.5})
    graph = compile_plan(chain_plan(), model=model, aggregator=None)

    state = await run_plan(graph, run, {"docs": ["a", "b"]})

    up, down = item_calls(model, "up"), item_calls(model, "down")
    assert down[0].started < up[1].finished
    assert down[0].started >= up[0].finished  # but only once its own upstream item is done
    assert down[1].started >= up[1].finished
    assert state["results"]["down"].output == [
        "echo: [down 0] echo: [up 0] a",
        "echo: [down 1] echo: [up 1] b",
    ]


async def test_item_wise_map_item_events_follow_their_own_upstream_item(echo_factory):
    model = echo_factory(latencies={"[up 0]": 0.01, "[up 1]": 0.3})
    graph = compile_plan(chain_plan(), model=model, aggregator=None)

    chunks = await stream_plan(graph, "async", {"docs": ["a", "b"]}, stream_mode="custom")

    position = {
        (e.get("id", e["subtask"]), e["status"]): i for i, e in enumerate(events_of(chunks))
    }
    assert position[("down[0]", "succeeded")] < position[("up[1]", "succeeded")]
    assert position[("up[0]", "succeeded")] < position[("down[0]", "started")]
    assert position[("up[1]", "succeeded")] < position[("down[1]", "started")]
    assert position[("up", "succeeded")] < position[("down", "succeeded")]


@TWINS
async def test_item_wise_map_skips_only_the_items_whose_upstream_item_failed(run, echo_factory):
    model = echo_factory(fail_on=("[up 1]",))
    graph = compile_plan(chain_plan(), model=model, aggregator=None)

    state = await run_plan(graph, run, {"docs": ["a", "b", "c"]})

    down = state["results"]["down"]
    assert [i.status for i in down.items] == ["succeeded", "skipped", "succeeded"]
    assert down.items[1].error == "dependency item 'up[1]' failed"
    assert down.items[1].id == "down[1]" and down.items[1].started_at is None
    assert down.status == "failed"
    assert down.output == ["echo: [down 0] echo: [up 0] a", None, "echo: [down 2] echo: [up 2] c"]
    assert sorted(item_calls(model, "down")) == [0, 2]


def test_item_wise_map_over_a_skipped_map_is_skipped(echo_factory):
    model = echo_factory(fail_on=("[bad]",))
    plan = plan_of(
        {"id": "bad", "prompt": "[bad] fails"},
        each_over(sid="up", depends_on=["bad"]),
        each_over("up", sid="down"),
    )
    state = compile_plan(plan, model=model, aggregator=None).invoke({"inputs": {"docs": ["a"]}})
    assert state["results"]["up"].error == "dependency 'bad' failed"
    down = state["results"]["down"]
    assert down.status == "skipped" and down.error == "dependency 'up' skipped"
    assert model.calls_for("up") == [] and model.calls_for("down") == []


def test_item_wise_map_waits_for_its_other_dependencies_too(echo_factory):
    model = echo_factory(latencies={"[slow]": 0.2})
    plan = plan_of(
        each_over(sid="up"),
        {"id": "slow", "prompt": "[slow] context"},
        {
            "id": "down",
            "prompt": "[down {index}] {item} with {slow}",
            "map": "up",
            "depends_on": ["slow"],
        },
    )
    compile_plan(plan, model=model, aggregator=None).invoke({"inputs": {"docs": ["a", "b"]}})
    slow = model.call_for("slow")
    down = item_calls(model, "down")
    assert all(c.started >= slow.finished for c in down.values())
    assert all("echo: [slow] context" in c.human for c in down.values())


@TWINS
async def test_a_map_whose_prompt_also_shows_its_source_map_gets_the_whole_list(run, echo_factory):
    model = echo_factory(latencies={"[up 1]": 0.1})
    plan = plan_of(
        each_over(sid="up"),
        {"id": "down", "prompt": "[down {index}] {item}\nAll: {up}", "map": "up"},
    )
    graph = compile_plan(plan, model=model, aggregator=None)

    state = await run_plan(graph, run, {"docs": ["a", "b"]})

    down = state["results"]["down"]
    assert down.status == "succeeded", down.error
    up, calls = item_calls(model, "up"), item_calls(model, "down")
    for i, call in calls.items():
        assert call.first_line == f"[down {i}] echo: [up {i}] {'ab'[i]}"
        assert "echo: [up 0] a" in call.human and "echo: [up 1] b" in call.human
        assert call.started >= up[1].finished  # the whole list was needed first


def test_a_map_showing_its_source_map_skips_the_items_that_failed_upstream(echo_factory):
    model = echo_factory(fail_on=("[up 1]",))
    plan = plan_of(
        each_over(sid="up", allow_partial=True),
        {"id": "down", "prompt": "[down {index}] {item}\nAll: {up}", "map": "up"},
    )
    state = compile_plan(plan, model=model, aggregator=None).invoke(
        {"inputs": {"docs": ["a", "b", "c"]}}
    )
    down = state["results"]["down"]
    assert [i.status for i in down.items] == ["succeeded", "skipped", "succeeded"]
    assert down.items[1].error == "dependency item 'up[1]' failed"
    assert sorted(item_calls(model, "down")) == [0, 2]


# -- limits, priorities, retries -----------------------------------------------------------


@TWINS
async def test_items_in_flight_never_exceed_max_concurrency(run, echo_factory):
    model = echo_factory(latency=0.02)
    graph = compile_plan(plan_of(each_over()), model=model, aggregator=None, max_concurrency=3)

    state = await run_plan(graph, run, {"docs": [f"d{i}" for i in range(20)]})

    assert len(state["results"]["each"].items) == 20 == len(model.calls)
    assert model.max_in_flight == 3  # the limit was reached, never passed


async def test_items_and_other_subtasks_share_the_concurrency_limit(echo_factory):
    model = echo_factory(latency=0.02)
    plan = plan_of(
        each_over(),
        each_over("each", sid="again"),
        *({"id": f"x{i}", "prompt": f"[x{i}] plain"} for i in range(4)),
    )
    graph = compile_plan(plan, model=model, aggregator=None, max_concurrency=2)

    state = await graph.ainvoke({"inputs": {"docs": [f"d{i}" for i in range(8)]}})

    assert all(r.status == "succeeded" for r in state["results"].values())
    assert len(model.calls) == 8 + 8 + 4
    assert model.max_in_flight == 2


async def test_items_are_paced_by_requests_per_second(echo):
    graph = compile_plan(plan_of(each_over()), model=echo, aggregator=None, requests_per_second=25)
    await graph.ainvoke({"inputs": {"docs": [f"d{i}" for i in range(5)]}})
    starts = sorted(c.started for c in echo.calls)
    assert len(starts) == 5
    assert starts[-1] - starts[0] >= 4 / 25 * 0.85  # four gaps of 40 ms


async def wait_until_queued(limiter: RateLimiter, count: int) -> None:
    for _ in range(5000):
        if limiter.waiting >= count:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"only {limiter.waiting} of {count} calls queued for the slot")


@pytest.mark.parametrize(("priority", "first"), [(5.0, "items"), (-5.0, "plain")])
async def test_map_items_take_free_slots_by_the_map_priority(priority, first, echo):
    plan = plan_of(
        {"id": "x1", "prompt": "[x1] plain"},
        each_over(priority=priority),
        {"id": "x2", "prompt": "[x2] plain"},
    )
    limiter = RateLimiter(max_concurrency=1)
    graph = compile_plan(plan, model=echo, aggregator=None, rate_limiter=limiter)
    await limiter.acquire()  # hold the only slot until all five calls have queued
    run = asyncio.ensure_future(
        stream_plan(graph, "async", {"docs": ["a", "b", "c"]}, stream_mode="custom")
    )
    try:
        await wait_until_queued(limiter, 5)
    finally:
        limiter.release()
    order = [e.get("id", e["subtask"]) for e in events_of(await run) if "attempt" in e]

    items, plain = ["each[0]", "each[1]", "each[2]"], ["x1", "x2"]
    assert order == (items + plain if first == "items" else plain + items)


@TWINS
async def test_a_transient_item_failure_retries_only_that_item(run):
    model, seen = flaky_model(("[each 1]",))
    graph = compile_plan(plan_of(each_over()), model=model, aggregator=None, retry=FAST_RETRY)

    chunks = await stream_plan(
        graph, run, {"docs": ["a", "b", "c"]}, stream_mode=["custom", "values"]
    )

    state = [c for mode, c in chunks if mode == "values"][-1]
    result = state["results"]["each"]
    assert result.status == "succeeded"
    assert [i.attempts for i in result.items] == [1, 2, 1]
    assert result.attempts == 4
    assert seen == {"[each 0] a": 1, "[each 1] b": 2, "[each 2] c": 1}
    retrying = [c for mode, c in chunks if mode == "custom" and c["status"] == "retrying"]
    assert [(e["id"], e["item"], e["attempt"]) for e in retrying] == [("each[1]", 1, 1)]
    assert "TimeoutError" in retrying[0]["error"]


def test_an_item_that_keeps_failing_gives_up_after_the_subtask_attempt_budget():
    model, seen = flaky_model(("[each 0]",), failures=100)
    graph = compile_plan(
        plan_of(each_over(max_attempts=3)), model=model, aggregator=None, retry=FAST_RETRY
    )
    state = graph.invoke({"inputs": {"docs": ["a", "b"]}})
    result = state["results"]["each"]
    assert [i.status for i in result.items] == ["failed", "succeeded"]
    assert [i.attempts for i in result.items] == [3, 1]
    assert result.items[0].error.endswith("(gave up after 3 attempts)")
    assert seen == {"[each 0] a": 3, "[each 1] b": 1}


def test_a_permanent_item_error_is_not_retried(echo_factory):
    model = echo_factory(fail_on=("[each 0]",))
    graph = compile_plan(plan_of(each_over()), model=model, aggregator=None, retry=FAST_RETRY)
    state = graph.invoke({"inputs": {"docs": ["a", "b"]}})
    assert [i.attempts for i in state["results"]["each"].items] == [1, 1]
    assert len(model.calls_for("each")) == 2


# -- streaming -----------------------------------------------------------------------------


@TWINS
async def test_custom_events_report_each_item_with_its_index_and_id(run, echo):
    graph = compile_plan(plan_of(each_over()), model=echo, aggregator=None)

    chunks = await stream_plan(graph, run, {"docs": ["a", "b", "c"]}, stream_mode="custom")

    events = events_of(chunks)
    assert {e["subtask"] for e in events} == {"each"}
    by_item: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_item[event.get("item")].append(event)
    whole = by_item.pop(None)
    assert [e["status"] for e in whole] == ["started", "succeeded"]
    assert whole[0]["items"] == 3
    assert sorted(by_item) == [0, 1, 2]
    for index, seen in by_item.items():
        assert [e["status"] for e in seen] == ["started", "succeeded"]
        assert {e["id"] for e in seen} == {f"each[{index}]"}
        assert seen[0]["attempt"] == 1
        assert seen[1]["total_tokens"] > 0
        assert seen[0]["time"] <= item_calls(echo, "each")[index].started
    position = {id(e): i for i, e in enumerate(events)}
    items = [e for seen in by_item.values() for e in seen]
    assert all(position[id(whole[0])] < position[id(e)] < position[id(whole[1])] for e in items)


async def test_custom_events_report_a_failed_item_then_the_failed_map(echo_factory):
    model = echo_factory(fail_on=("[each 1]",))
    graph = compile_plan(plan_of(each_over()), model=model, aggregator=None)

    chunks = await stream_plan(graph, "async", {"docs": ["a", "b"]}, stream_mode="custom")

    ends = [(e.get("id"), e["status"]) for e in events_of(chunks) if e["status"] != "started"]
    assert sorted(ends[:2], key=str) == [("each[0]", "succeeded"), ("each[1]", "failed")]
    assert ends[2:] == [(None, "failed")]
    failed = next(e for e in events_of(chunks) if e.get("id") == "each[1]" and "error" in e)
    assert failed["error"] == "ScriptedFailure: scripted failure on '[each 1]'"


@TWINS
async def test_messages_stream_tags_item_tokens_with_the_item(run, echo):
    graph = compile_plan(plan_of(each_over()), model=echo, aggregator=None)

    chunks = await stream_plan(
        graph, run, {"docs": ["a", "b", "c"]}, stream_mode=["messages", "values"]
    )

    text: dict[tuple[Any, ...], str] = defaultdict(str)
    pieces: Counter[Any] = Counter()
    for mode, chunk in chunks:
        if mode == "messages":
            message, metadata = chunk
            key = (
                metadata["langgraph_node"],
                metadata.get("fanfold_item"),
                metadata.get("fanfold_item_id"),
            )
            text[key] += message.content
            pieces[key] += 1
    final = [c for mode, c in chunks if mode == "values"][-1]
    outputs = final["results"]["each"].output
    assert dict(text) == {("each", i, f"each[{i}]"): outputs[i] for i in range(3)}
    assert all(n > 1 for n in pieces.values()), "the items' replies were not streamed"


# -- plan errors ---------------------------------------------------------------------------


def test_a_map_over_an_unknown_name_raises_invalid_map_error_with_did_you_mean():
    with pytest.raises(InvalidMapError) as info:
        plan_of({"id": "fetch", "prompt": "x"}, each_over("fecth"))
    err = info.value
    assert isinstance(err, PlanError)
    assert (err.subtask_id, err.source) == ("each", "fecth")
    assert "'each'" in str(err) and "'fecth'" in str(err)
    assert "did you mean 'fetch'?" in str(err)


def test_a_map_over_an_undeclared_input_says_to_declare_it():
    with pytest.raises(InvalidMapError) as info:
        plan_of(each_over("pages"), inputs=[])
    assert info.value.source == "pages"
    assert "inputs:" in str(info.value)


def test_a_map_over_an_input_used_in_a_prompt_but_not_declared_is_rejected():
    with pytest.raises(InvalidMapError):
        plan_of({"id": "intro", "prompt": "about {pages}"}, each_over("pages"), inputs=[])


def test_a_map_over_itself_is_rejected():
    with pytest.raises(InvalidMapError) as info:
        plan_of(each_over("each"))
    assert (info.value.subtask_id, info.value.source) == ("each", "each")
    assert "itself" in str(info.value)


@pytest.mark.parametrize("name", ["item", "index"])
def test_an_item_placeholder_without_a_map_is_rejected(name):
    with pytest.raises(PlanValidationError) as info:
        plan_of({"id": "plain", "prompt": f"show {{{name}}}"})
    message = str(info.value)
    assert "'plain'" in message and f"{{{name}}}" in message and "map" in message


def test_literal_item_braces_without_a_map_are_fine(echo):
    plan = plan_of({"id": "plain", "prompt": "[plain] {{item}} and {{index}}"}, inputs=[])
    compile_plan(plan, model=echo, aggregator=None).invoke({"inputs": {}})
    assert echo.call_for("plain").human == "[plain] {item} and {index}"


@pytest.mark.parametrize(
    "subtasks",
    [
        [{"id": "a", "prompt": "x", "map": "b"}, {"id": "b", "prompt": "y", "depends_on": "a"}],
        [{"id": "a", "prompt": "x", "map": "b"}, {"id": "b", "prompt": "y", "map": "a"}],
        [
            {"id": "a", "prompt": "x", "map": "c"},
            {"id": "b", "prompt": "y", "map": "a"},
            {"id": "c", "prompt": "z", "depends_on": "b"},
        ],
    ],
    ids=["map-and-depends_on", "two-maps", "three-subtasks"],
)
def test_a_cycle_through_maps_is_rejected(subtasks):
    with pytest.raises(DependencyCycleError) as info:
        plan_of(*subtasks, inputs=[])
    assert set(info.value.cycle) == {s["id"] for s in subtasks}


def test_compile_plan_checks_a_map_changed_after_validation(echo):
    plan = plan_of(each_over())
    plan.subtask("each").map = "dosc"
    with pytest.raises(InvalidMapError, match="did you mean 'docs'"):
        compile_plan(plan, model=echo)


@pytest.mark.parametrize("value", ["not json", '{"a": 1}', "7", 5, {"a": 1}, None])
@pytest.mark.parametrize("entry", ["invoke", "ainvoke", "stream"])
async def test_a_map_input_that_is_not_a_list_raises_before_anything_runs(entry, value, echo):
    plan = plan_of({"id": "first", "prompt": "[first] runs"}, each_over())
    graph = compile_plan(plan, model=echo)
    with pytest.raises(MapInputError) as info:
        if entry == "invoke":
            graph.invoke({"inputs": {"docs": value}})
        elif entry == "ainvoke":
            await graph.ainvoke({"inputs": {"docs": value}})
        else:
            list(graph.stream({"inputs": {"docs": value}}))
    assert (info.value.subtask_id, info.value.source) == ("each", "docs")
    assert "'each'" in str(info.value) and "'docs'" in str(info.value)
    assert echo.calls == []


@pytest.mark.parametrize(
    ("interface", "example"),
    [
        ("python", 'inputs={"docs": ["a", "b"]}'),
        ("cli", """--input docs='["a", "b"]'"""),
        ("server", '{"inputs": {"docs": ["a", "b"]}}'),
    ],
)
def test_a_map_input_error_shows_a_list_in_the_interface_in_use(interface, example, echo):
    graph = compile_plan(plan_of(each_over()), model=echo, input_interface=interface)
    with pytest.raises(MapInputError) as info:
        graph.invoke({"inputs": {"docs": "one doc"}})
    assert f"pass a list, such as {example}" in str(info.value)


def test_a_missing_map_input_raises_missing_input_error_naming_the_map(echo):
    graph = compile_plan(plan_of(each_over()), model=echo)
    with pytest.raises(MissingInputError) as info:
        graph.invoke({"inputs": {}})
    assert info.value.missing == {"docs": ["each"]}
    assert echo.calls == []


# -- retrying a failed map -----------------------------------------------------------------


def failed_then_fixed(model: Any, graph: Any, docs: list[str], config: Any) -> int:
    """Run once with `model` failing, then stop the failures; return the calls so far."""
    first = graph.invoke({"inputs": {"docs": docs}}, config)
    assert any(r.status != "succeeded" for r in first["results"].values())
    model.fail_on = ()
    return len(model.calls)


@TWINS
async def test_retry_failed_reruns_only_the_failed_items_of_a_map(run, echo_factory):
    model = echo_factory(fail_on=("[each 1]",))
    graph = compile_plan(
        plan_of(each_over()), model=model, aggregator=None, checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": f"retry-{run}"}}
    before = failed_then_fixed(model, graph, ["a", "b", "c"], config)
    kept = graph.get_state(config).values["results"]["each"].items

    if run == "sync":
        state = graph.retry_failed(config)
    else:
        state = await graph.aretry_failed(config)

    assert [c.first_line for c in model.calls[before:]] == ["[each 1] b"]
    result = state["results"]["each"]
    assert result.status == "succeeded"
    assert result.output == ["echo: [each 0] a", "echo: [each 1] b", "echo: [each 2] c"]
    assert result.items[0] == kept[0] and result.items[2] == kept[2]


def test_a_retry_request_reruns_only_the_failed_items_and_keeps_the_others(echo_factory):
    model = echo_factory(fail_on=("[each 1]", "[each 3]"))
    plan = plan_of(each_over(), {"id": "after", "prompt": "[after] {each}", "depends_on": "each"})
    graph = compile_plan(plan, model=model, aggregator=None, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "retry-request"}}
    before = failed_then_fixed(model, graph, ["a", "b", "c", "d"], config)
    kept = graph.get_state(config).values["results"]["each"].items

    payload, options = graph.retry_request(graph.get_state(config).values)
    state = graph.invoke(payload, config, **options)

    again = Counter(c.first_line for c in model.calls[before:])
    assert again == {"[each 1] b": 1, "[each 3] d": 1, "[after] #### each[0]": 1}
    result = state["results"]["each"]
    assert result.status == "succeeded"
    assert result.output == [f"echo: [each {i}] {d}" for i, d in enumerate("abcd")]
    assert result.items[0] == kept[0] and result.items[2] == kept[2]  # reused as they were
    assert state["results"]["after"].status == "succeeded"


def test_a_retry_request_reruns_only_the_failed_links_of_an_item_wise_chain(echo_factory):
    model = echo_factory(fail_on=("[up 1]",))
    graph = compile_plan(chain_plan(), model=model, aggregator=None, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "retry-chain"}}
    before = failed_then_fixed(model, graph, ["a", "b", "c"], config)

    payload, options = graph.retry_request(graph.get_state(config).values)
    state = graph.invoke(payload, config, **options)

    assert sorted(c.first_line for c in model.calls[before:]) == [
        "[down 1] echo: [up 1] b",
        "[up 1] b",
    ]
    assert state["results"]["down"].status == "succeeded"
    assert state["results"]["down"].output[1] == "echo: [down 1] echo: [up 1] b"


def test_a_map_starts_at_most_a_window_of_item_calls_at_once(monkeypatch, echo_factory):
    from fanfold.scheduling import map_items

    monkeypatch.setattr(map_items, "ITEM_WINDOW", 8)
    model = echo_factory(latency=0.005)
    docs = [f"doc {i}" for i in range(40)]
    state = compile_plan(plan_of(each_over()), model=model, aggregator=None).invoke(
        {"inputs": {"docs": docs}}
    )
    each = state["results"]["each"]
    assert each.ok and len(each.items) == 40
    assert model.max_in_flight == 8  # no limit was set: only the window bounds the calls
