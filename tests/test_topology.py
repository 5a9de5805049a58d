"""The compiled graph has the plan's shape, and calls start as soon as their own deps finish."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from langgraph.graph import END, START

from fanfold import CompiledPlanGraph, SimulatedChatModel, TaskPlan, compile_plan

AGGREGATE = "aggregate"


def expected_edges(graph: Mapping[str, list[str]]) -> set[tuple[str, str]]:
    """START -> roots, each declared dependency, sinks -> aggregate -> END."""
    edges = {(START, sid) for sid, deps in graph.items() if not deps}
    edges |= {(dep, sid) for sid, deps in graph.items() for dep in deps}
    has_dependents = {dep for deps in graph.values() for dep in deps}
    edges |= {(sid, AGGREGATE) for sid in graph if sid not in has_dependents}
    edges.add((AGGREGATE, END))
    return edges


def drawn_edges(graph: CompiledPlanGraph) -> list[tuple[str, str]]:
    return [(e.source, e.target) for e in graph.get_graph().edges]


SHAPES = {
    "fan-out": {"a": [], "b": [], "c": []},
    "chain": {"a": [], "b": ["a"], "c": ["b"], "d": ["c"]},
    "diamond": {"top": [], "left": ["top"], "right": ["top"], "bottom": ["left", "right"]},
    "join": {"x": [], "y": [], "z": [], "join": ["x", "y", "z"]},
    "two-sinks": {"root": [], "mid": ["root"], "leaf1": ["mid"], "leaf2": ["mid", "root"]},
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_graph_has_exactly_the_declared_edges(shape, make_plan, echo):
    graph = compile_plan(make_plan(shape), model=echo)
    edges = drawn_edges(graph)
    assert len(edges) == len(set(edges)), "an edge is drawn twice"
    assert set(edges) == expected_edges(shape)
    assert not any(e.conditional for e in graph.get_graph().edges)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_graph_has_one_node_per_subtask_plus_aggregate(shape, make_plan, echo):
    graph = compile_plan(make_plan(shape), model=echo)
    assert set(graph.get_graph().nodes) == {*shape, AGGREGATE, START, END}


def test_a_dependency_listed_twice_draws_one_edge_and_runs_once(make_plan, echo):
    graph = compile_plan(make_plan({"a": [], "b": ["a", "a"]}), model=echo)
    assert drawn_edges(graph).count(("a", "b")) == 1
    graph.invoke({"inputs": {}})
    assert len(echo.calls_for("a")) == 1


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_results_are_keyed_by_subtask_id(shape, make_plan, echo):
    state = compile_plan(make_plan(shape), model=echo).invoke({"inputs": {}})
    assert set(state["results"]) == set(shape)
    for sid, result in state["results"].items():
        assert result.id == sid
        assert result.status == "succeeded"
        assert result.output == f"echo: [{sid}] do {sid}"


async def test_results_are_keyed_by_subtask_id_async(make_plan, echo):
    shape = SHAPES["diamond"]
    state = await compile_plan(make_plan(shape), model=echo).ainvoke({"inputs": {}})
    assert {sid: r.output for sid, r in state["results"].items()} == {
        sid: f"echo: [{sid}] do {sid}" for sid in shape
    }


def test_a_wide_plan_of_200_independent_subtasks_runs_every_one(make_plan, echo):
    shape = {f"s{i}": [] for i in range(200)}
    graph = compile_plan(make_plan(shape), model=echo)
    assert sum(1 for src, _ in drawn_edges(graph) if src == START) == 200
    state = graph.invoke({"inputs": {}})
    assert len(state["results"]) == 200
    assert all(r.ok for r in state["results"].values())
    assert sorted(c.node for c in echo.calls if c.node != AGGREGATE) == sorted(shape)


async def test_a_wide_plan_of_200_independent_subtasks_runs_every_one_async(make_plan, echo):
    shape = {f"s{i}": [] for i in range(200)}
    state = await compile_plan(make_plan(shape), model=echo, aggregator=None).ainvoke(
        {"inputs": {}}
    )
    assert state["totals"].succeeded == 200
    assert len(echo.calls) == 200


def test_independent_subtasks_are_all_in_flight_together(make_plan, echo_factory):
    model = echo_factory(latency=0.1)
    compile_plan(make_plan({f"s{i}": [] for i in range(5)}), model=model, aggregator=None).invoke(
        {"inputs": {}}
    )
    calls = model.calls
    assert max(c.started for c in calls) < min(c.finished for c in calls)
    assert model.max_in_flight == 5


# -- greedy scheduling: a join waits only for its own dependencies -------------------------


def latency_by_marker(seconds: Mapping[str, float]):
    """A SimulatedChatModel latency_fn keyed on the `[id]` marker of a subtask prompt."""

    def latency(messages) -> float:
        first_line = str(messages[-1].content).split("\n", 1)[0]
        return next((s for marker, s in seconds.items() if marker in first_line), 0.001)

    return latency


def lifecycle(chunks) -> dict[tuple[str, str], float]:
    """(subtask, status) -> event time, from "custom" stream chunks."""
    return {(e["subtask"], e["status"]): e["time"] for e in chunks if isinstance(e, dict)}


GREEDY_SHAPE = {"slow": [], "fast1": [], "fast2": ["fast1"], "join": ["slow", "fast2"]}


def test_join_waits_only_for_its_own_dependencies(make_plan, echo_factory):
    model = echo_factory(latencies={"[slow]": 0.25}, latency=0.001)
    graph = compile_plan(make_plan(GREEDY_SHAPE), model=model, aggregator=None)
    graph.invoke({"inputs": {}})
    slow, fast1, fast2, join = (model.call_for(s) for s in GREEDY_SHAPE)
    # fast2's call does not wait for the superstep that holds `slow`.
    assert fast1.finished <= fast2.started < slow.finished
    # The join starts only once both of its own dependencies have replied.
    assert join.started >= max(slow.finished, fast2.finished)


async def test_join_waits_only_for_its_own_dependencies_async(make_plan, echo_factory):
    model = echo_factory(latencies={"[slow]": 0.25}, latency=0.001)
    graph = compile_plan(make_plan(GREEDY_SHAPE), model=model, aggregator=None)
    await graph.ainvoke({"inputs": {}})
    slow, fast1, fast2, join = (model.call_for(s) for s in GREEDY_SHAPE)
    assert fast1.finished <= fast2.started < slow.finished
    assert join.started >= max(slow.finished, fast2.finished)


def test_dependent_starts_before_a_slow_sibling_finishes_per_lifecycle_events(make_plan):
    model = SimulatedChatModel(latency_fn=latency_by_marker({"[slow]": 0.25}))
    graph = compile_plan(make_plan(GREEDY_SHAPE), model=model, aggregator=None)
    times = lifecycle(graph.stream({"inputs": {}}, stream_mode="custom"))
    assert times[("fast2", "started")] < times[("slow", "succeeded")]
    assert times[("fast1", "succeeded")] <= times[("fast2", "started")]
    assert times[("join", "started")] >= times[("slow", "succeeded")]


async def test_dependent_starts_before_a_slow_sibling_finishes_per_lifecycle_events_async(
    make_plan,
):
    model = SimulatedChatModel(latency_fn=latency_by_marker({"[slow]": 0.25}))
    graph = compile_plan(make_plan(GREEDY_SHAPE), model=model, aggregator=None)
    times = lifecycle([c async for c in graph.astream({"inputs": {}}, stream_mode="custom")])
    assert times[("fast2", "started")] < times[("slow", "succeeded")]
    assert times[("join", "started")] >= times[("slow", "succeeded")]


async def test_a_subtask_has_no_task_until_its_dependencies_finish(make_plan, echo_factory):
    """A waiting subtask is a count of unfinished dependencies, not a task awaiting them."""
    model = echo_factory(latencies={"[a]": 0.1}, latency=0.001)
    graph = compile_plan(make_plan({"a": [], "b": ["a"], "c": ["b"]}), model=model)
    running: dict[str, set[str]] = {}
    async for event in graph.astream({"inputs": {}}, stream_mode="custom"):
        if event["status"] == "started":
            running[event["subtask"]] = {
                t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("fanfold:")
            }
    assert running["a"] == {"fanfold:a"}
    assert "fanfold:b" in running["b"]
    assert "fanfold:c" not in running["b"]


# -- what reaches the model ----------------------------------------------------------------


def test_dependency_outputs_reach_the_dependent_as_labelled_context(make_plan, echo):
    plan = make_plan({"facts": [], "figures": [], "summary": ["facts", "figures"]})
    compile_plan(plan, model=echo).invoke({"inputs": {}})
    prompt = echo.call_for("summary").human
    assert prompt.startswith("[summary] do summary")
    assert "## Results from earlier subtasks" in prompt
    assert "### facts\necho: [facts] do facts" in prompt
    assert "### figures\necho: [figures] do figures" in prompt


def test_dependency_outputs_fill_their_placeholders_and_are_not_repeated(make_plan, echo):
    plan = make_plan(
        {"facts": [], "figures": [], "summary": ["facts", "figures"]},
        prompts={"summary": "[summary] Facts: {facts}"},
    )
    compile_plan(plan, model=echo).invoke({"inputs": {}})
    prompt = echo.call_for("summary").human
    assert prompt.startswith("[summary] Facts: echo: [facts] do facts")
    assert prompt.count("echo: [facts] do facts") == 1
    # A dependency without a placeholder still arrives as labelled context.
    assert "### figures\necho: [figures] do figures" in prompt
    assert "### facts" not in prompt


def test_only_direct_dependencies_reach_a_prompt(make_plan, echo):
    compile_plan(make_plan(SHAPES["chain"]), model=echo).invoke({"inputs": {}})
    prompt = echo.call_for("c").human
    assert "### b\n" in prompt
    assert "### a\n" not in prompt


def test_dashed_and_unicode_ids_work_as_nodes_and_placeholders(echo):
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "market-scan", "prompt": "[scan] look"},
                {"id": "résumé", "prompt": "[r] sum {market-scan}", "depends_on": "market-scan"},
            ],
        }
    )
    graph = compile_plan(plan, model=echo)
    assert ("market-scan", "résumé") in drawn_edges(graph)
    state = graph.invoke({"inputs": {}})
    assert echo.call_for("résumé").human == "[r] sum echo: [scan] look"
    assert state["results"]["résumé"].output == "echo: [r] sum echo: [scan] look"


BRACES = '{"json": {"nested": [1, 2]}} {topic} {{double}} {0} {} }{ ${x} {% raw %}'


def test_braces_in_inputs_reach_the_model_verbatim(make_plan, echo):
    plan = make_plan({"a": []}, prompts={"a": "[a] Review: {notes}"})
    compile_plan(plan, model=echo).invoke({"inputs": {"notes": BRACES, "topic": "NOPE"}})
    assert echo.call_for("a").human == f"[a] Review: {BRACES}"


def test_braces_in_dependency_outputs_reach_the_model_verbatim(make_plan, echo_factory):
    model = echo_factory(replies={"[a]": BRACES})
    plan = make_plan({"a": [], "b": ["a"], "c": ["a"]}, prompts={"b": "[b] Use {a} here"})
    compile_plan(plan, model=model).invoke({"inputs": {"topic": "NOPE"}})
    assert model.call_for("b").human == f"[b] Use {BRACES} here"
    assert f"### a\n{BRACES}" in model.call_for("c").human
    assert BRACES in model.call_for("aggregate").human


def test_template_syntax_in_a_prompt_is_kept_apart_from_placeholders(make_plan, echo):
    template = '[a] Reply as {"answer": "..."} about {topic}, literally {{topic}}'
    plan = make_plan({"a": []}, prompts={"a": template})
    compile_plan(plan, model=echo).invoke({"inputs": {"topic": "tides"}})
    assert (
        echo.call_for("a").human == '[a] Reply as {"answer": "..."} about tides, literally {topic}'
    )


def test_subtask_system_prompt_replaces_the_default(make_plan, echo):
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "a", "prompt": "[a] x", "system": "You are terse."},
                {"id": "b", "prompt": "[b] y"},
            ],
        }
    )
    compile_plan(plan, model=echo).invoke({"inputs": {}})
    assert echo.call_for("a").system == "You are terse."
    assert "Overall task: t" in echo.call_for("b").system


def test_a_subtask_model_overrides_the_plan_model(make_plan, echo_factory):
    plan_model, own_model = echo_factory(), echo_factory()
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "a", "prompt": "[a] x", "model": own_model},
                {"id": "b", "prompt": "[b] y"},
            ],
        }
    )
    compile_plan(plan, model=plan_model, aggregator=None).invoke({"inputs": {}})
    assert [c.node for c in own_model.calls] == ["a"]
    assert [c.node for c in plan_model.calls] == ["b"]


# -- concurrency limits --------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3])
def test_max_concurrency_is_never_exceeded(limit, make_plan, echo_factory):
    model = echo_factory(latency=0.02)
    shape = {f"s{i}": [] for i in range(8)} | {"join": ["s0", "s1"]}
    state = compile_plan(
        make_plan(shape), model=model, max_concurrency=limit, aggregator=None
    ).invoke({"inputs": {}})
    assert state["totals"].succeeded == len(shape)
    assert model.max_in_flight == limit


async def test_max_concurrency_is_never_exceeded_async(make_plan, echo_factory):
    model = echo_factory(latency=0.02)
    shape = {f"s{i}": [] for i in range(8)}
    await compile_plan(make_plan(shape), model=model, max_concurrency=2, aggregator=None).ainvoke(
        {"inputs": {}}
    )
    assert model.max_in_flight == 2
    assert len(model.calls) == 8


def test_higher_priority_starts_first_under_a_concurrency_limit(echo_factory):
    model = echo_factory(latency=0.02)
    plan = TaskPlan.model_validate(
        {
            "task": "t",
            "subtasks": [
                {"id": "first", "prompt": "[first] x"},
                {"id": "low", "prompt": "[low] x", "priority": 0},
                {"id": "high", "prompt": "[high] x", "priority": 10},
            ],
        }
    )
    compile_plan(plan, model=model, max_concurrency=1, aggregator=None).invoke({"inputs": {}})
    order = [c.node for c in sorted(model.calls, key=lambda c: c.started)]
    assert order.index("high") < order.index("low")


# -- rendering -----------------------------------------------------------------------------


def test_research_example_mermaid_matches_snapshot(research_plan_path, snapshot):
    graph = compile_plan(research_plan_path, model="simulated")
    snapshot("research.mermaid", graph.get_graph().draw_mermaid())


def test_research_example_ascii_matches_snapshot(research_plan_path, snapshot):
    graph = compile_plan(research_plan_path, model="simulated")
    snapshot("research.ascii.txt", graph.get_graph().draw_ascii())


def test_research_example_mermaid_draws_every_declared_dependency(research_plan_path):
    plan = TaskPlan.from_file(research_plan_path)
    mermaid = compile_plan(plan, model="simulated").get_graph().draw_mermaid()
    for sub in plan.subtasks:
        for dep in sub.depends_on:
            assert f"{dep} --> {sub.id};" in mermaid
    assert "recommendation --> aggregate;" in mermaid
