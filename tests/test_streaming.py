"""Stream modes: updates, values, custom lifecycle events and per-subtask token messages."""

from __future__ import annotations

from collections import defaultdict

import pytest

from fanfold import EVENT_TYPE, SubtaskResult, compile_plan

SHAPE = {"a": [], "bad": [], "b": ["a"], "c": ["bad"], "d": ["a", "b"]}
EXPECTED = {"a": "succeeded", "bad": "failed", "b": "succeeded", "c": "skipped", "d": "succeeded"}


@pytest.fixture
def graph(make_plan, echo_factory):
    model = echo_factory(fail_on=("[bad]",))
    compiled = compile_plan(make_plan(SHAPE), model=model)
    compiled.test_model = model  # type: ignore[attr-defined]
    return compiled


async def collect_async(graph, **kwargs):
    return [chunk async for chunk in graph.astream({"inputs": {}}, **kwargs)]


def collect_sync(graph, **kwargs):
    return list(graph.stream({"inputs": {}}, **kwargs))


async def collect(graph, mode: str, **kwargs):
    if mode == "sync":
        return collect_sync(graph, **kwargs)
    return await collect_async(graph, **kwargs)


TWINS = pytest.mark.parametrize("run", ["sync", "async"])


# -- updates and values --------------------------------------------------------------------


@TWINS
async def test_updates_stream_one_result_per_subtask_then_the_aggregate(run, graph):
    chunks = await collect(graph, run, stream_mode="updates")
    nodes = [next(iter(chunk)) for chunk in chunks]
    assert sorted(nodes[:-1]) == sorted(SHAPE)
    assert nodes[-1] == "aggregate"
    for chunk in chunks[:-1]:
        ((sid, update),) = chunk.items()
        ((key, data),) = update["results"].items()
        # An update is the node's write: the result as plain data, as it is checkpointed.
        assert isinstance(data, dict) and not isinstance(data, SubtaskResult)
        result = SubtaskResult.model_validate(data)
        assert key == sid == result.id
        assert result.status == EXPECTED[sid]
    final = chunks[-1]["aggregate"]
    assert set(final) >= {"output", "totals", "aggregate_error"}
    # A dependency's update always arrives before its dependents'.
    for sid, deps in SHAPE.items():
        for dep in deps:
            assert nodes.index(dep) < nodes.index(sid)


@TWINS
async def test_values_stream_grows_to_the_final_state(run, graph):
    chunks = await collect(graph, run, stream_mode="values")
    assert chunks[0]["results"] == {}
    counts = [len(c["results"]) for c in chunks]
    assert counts == sorted(counts)
    final = chunks[-1]
    assert {sid: r.status for sid, r in final["results"].items()} == EXPECTED
    assert final["output"] == graph.test_model.call_for("aggregate").reply
    assert final["totals"] is not None


# -- custom lifecycle events ---------------------------------------------------------------


@TWINS
async def test_custom_stream_reports_each_subtasks_lifecycle(run, graph):
    events = await collect(graph, run, stream_mode="custom")
    assert EVENT_TYPE == "fanfold.subtask"
    assert all(e["type"] == "fanfold.subtask" for e in events)
    by_subtask = defaultdict(list)
    for event in events:
        by_subtask[event["subtask"]].append(event)
    assert set(by_subtask) == set(SHAPE) | {"aggregate"}
    # The aggregate step is announced like a subtask, after every subtask finished.
    assert [e["status"] for e in by_subtask["aggregate"]] == ["started", "succeeded"]
    assert by_subtask["aggregate"][0]["attempt"] == 1
    last_subtask = max(i for i, e in enumerate(events) if e["subtask"] != "aggregate")
    assert events.index(by_subtask["aggregate"][0]) > last_subtask
    assert by_subtask["aggregate"][1]["total_tokens"] > 0
    for sid, status in EXPECTED.items():
        seen = [e["status"] for e in by_subtask[sid]]
        if status == "skipped":
            assert seen == ["skipped"]  # never started
        else:
            assert seen == ["started", status]
    model = graph.test_model  # the calls the model recorded tell the same story
    for sid in ("a", "b", "d"):
        started, done = by_subtask[sid]
        assert started["started_at"] <= done["finished_at"]
        assert done["duration"] == pytest.approx(done["finished_at"] - done["started_at"])
        assert started["time"] <= model.call_for(sid).started
        assert done["total_tokens"] > 0
    assert by_subtask["bad"][1]["error"] == "ScriptedFailure: scripted failure on '[bad]'"
    assert by_subtask["c"][0]["error"] == "dependency 'bad' failed"


@TWINS
async def test_custom_events_follow_dependency_order(run, graph):
    events = await collect(graph, run, stream_mode="custom")
    position = {(e["subtask"], e["status"]): i for i, e in enumerate(events)}
    assert position[("a", "succeeded")] < position[("b", "started")]
    assert position[("b", "succeeded")] < position[("d", "started")]
    assert position[("bad", "failed")] < position[("c", "skipped")]
    times = {(e["subtask"], e["status"]): e["time"] for e in events}
    assert times[("a", "succeeded")] <= times[("b", "started")]


@TWINS
async def test_custom_event_tokens_match_the_results(run, graph):
    chunks = await collect(graph, run, stream_mode=["custom", "values"])
    events = [c for mode, c in chunks if mode == "custom"]
    final = [c for mode, c in chunks if mode == "values"][-1]
    for event in events:
        if event["status"] == "succeeded" and event["subtask"] == "aggregate":
            assert event["total_tokens"] == final["totals"].aggregate_usage.total_tokens
        elif event["status"] == "succeeded":
            result = final["results"][event["subtask"]]
            assert event["total_tokens"] == result.usage.total_tokens


# -- messages ------------------------------------------------------------------------------


@TWINS
async def test_messages_stream_tags_tokens_with_their_subtask(run, graph):
    chunks = await collect(graph, run, stream_mode=["messages", "values"])
    tokens: dict[str, list[str]] = defaultdict(list)
    for mode, chunk in chunks:
        if mode == "messages":
            message, metadata = chunk
            tokens[metadata["langgraph_node"]].append(message.content)
    final = [c for mode, c in chunks if mode == "values"][-1]
    succeeded = {sid for sid, status in EXPECTED.items() if status == "succeeded"}
    assert set(tokens) == succeeded | {"aggregate"}
    for sid in succeeded:
        assert len(tokens[sid]) > 1, "the reply was not streamed token by token"
        assert "".join(tokens[sid]) == final["results"][sid].output
    assert "".join(tokens["aggregate"]) == final["output"]


@TWINS
async def test_messages_stream_delivers_every_subtasks_tokens_in_a_wide_plan(run, make_plan, echo):
    shape = {f"s{i}": [] for i in range(20)} | {"join": ["s0", "s19"]}
    graph = compile_plan(make_plan(shape), model=echo, aggregator=None)
    chunks = await collect(graph, run, stream_mode="messages")
    text: dict[str, str] = defaultdict(str)
    for message, metadata in chunks:
        text[metadata["langgraph_node"]] += message.content
    assert text == {sid: f"echo: [{sid}] do {sid}" for sid in shape}


# -- run totals ----------------------------------------------------------------------------


def words(text: str) -> int:
    return len(text.split())


@TWINS
async def test_final_state_has_run_totals(run, graph):
    chunks = await collect(graph, run, stream_mode="values")
    totals = chunks[-1]["totals"]
    model = graph.test_model
    assert (totals.tasks, totals.succeeded, totals.failed, totals.skipped) == (5, 3, 1, 1)
    subtask_calls = [c for c in model.calls if c.node != "aggregate" and c.reply is not None]
    expected = sum(
        sum(words(m.content) for m in c.messages) + words(c.reply) for c in subtask_calls
    )
    assert totals.usage.total_tokens == expected
    aggregate = model.call_for("aggregate")
    aggregate_tokens = sum(words(m.content) for m in aggregate.messages) + words(aggregate.reply)
    assert totals.aggregate_usage.total_tokens == aggregate_tokens
    assert totals.total_tokens == expected + aggregate_tokens
    assert totals.wall_time > 0


def test_totals_count_only_subtasks_without_an_aggregator(make_plan, echo):
    state = compile_plan(make_plan({"a": [], "b": ["a"]}), model=echo, aggregator=None).invoke(
        {"inputs": {}}
    )
    totals = state["totals"]
    assert totals.aggregate_usage.total_tokens == 0
    assert totals.total_tokens == sum(r.usage.total_tokens for r in state["results"].values())
    assert totals.total_tokens > 0
