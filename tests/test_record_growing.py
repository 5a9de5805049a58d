"""The run record as it grows (issue 15): the live view and the CLI's summary read it.

A real run's events are fed one by one to a `Progress` (a view of a `RecordBuilder`);
after every event the live view's counts, tokens and cost equal what the growing record
says, and at the end the grown record is `build_record`'s, byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fanfold import TaskPlan, compile_plan
from fanfold.cli._output import run_record
from fanfold.progress import Progress
from fanfold.record import RecordBuilder, build_record, record_json
from fanfold.runs.api import PlanRun, open_run, start_run
from fanfold.runs.watch import Watch
from fanfold.testing import SimServer, SimServerConfig

FINISHED = ("succeeded", "failed", "skipped")
SIM_KEY = "sk-test-growing-record"

PLAN = {
    "task": "Review {xs}",
    "inputs": {"xs": {"description": "things"}},
    "subtasks": [
        {"id": "fetch", "prompt": "fetch"},
        {"id": "check", "prompt": "check"},
        {"id": "summarise", "prompt": "sum {fetch}", "depends_on": ["fetch"]},
        {"id": "each", "prompt": "look at {item}", "map": "xs", "depends_on": ["fetch"]},
        {"id": "broken", "prompt": "fail {check}", "depends_on": ["check"]},
        {"id": "after", "prompt": "after {broken}", "depends_on": ["broken"]},
    ],
}
INPUTS = {"xs": ["a", "b", "c", "d", "e"]}


def assert_the_view_tells_the_record(progress: Progress, now: float) -> None:
    """The live snapshot's counts, items, tokens and cost are the growing record's."""
    record = progress.record.record()
    snap = progress.snapshot(now)
    subs = record.subtasks
    counts = snap.counts
    by_status = tuple(sum(s.status == status for s in subs) for status in FINISHED)
    assert (counts.done, counts.failed, counts.skipped) == by_status
    assert counts.running + counts.backoff == sum(s.status == "running" for s in subs)
    assert counts.waiting == sum(s.status == "not run" for s in subs)
    assert snap.tokens == sum(s.usage.total_tokens for s in subs)
    over = [c for s in subs for c in s.calls if c.status in FINISHED]
    known = [c.cost for c in over if c.cost is not None]
    assert snap.cost == (pytest.approx(sum(known)) if known else None)
    assert snap.cost_unknown == sum(c.cost is None for c in over)
    items = [c for s in subs for c in s.calls if c.item is not None]
    if snap.items is not None:
        assert snap.items.done == sum(c.status == "succeeded" for c in items)
        assert snap.items.failed == sum(c.status == "failed" for c in items)
        assert snap.items.running + snap.items.backoff == sum(c.status == "running" for c in items)


async def stream(graph: Any, payload: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    async for mode, chunk in graph.astream(payload, stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(chunk)
        else:
            state = chunk
    return state, events


def replay(progress: Progress, events: list[dict[str, Any]]) -> None:
    """Feed the events one by one, checking the view against the record after each."""
    for event in events:
        progress.feed(event)
        assert_the_view_tells_the_record(progress, now=event["time"])


async def test_the_live_view_tells_the_growing_records_story_after_every_event(echo_factory):
    """A run with a map, a failure, a skip and priced calls: after each of its events the
    live view's counts, items, tokens and cost equal the record as it stands."""
    prices = {"EchoChatModel": {"input": 1.0, "output": 2.0}}
    model = echo_factory(fail_on={"fail"})
    graph = compile_plan(TaskPlan.model_validate(PLAN), model=model, prices=prices)
    runtime = graph.fanfold_runtime
    assert runtime is not None
    state, events = await stream(graph, {"inputs": INPUTS})
    assert any(e.get("item") is not None for e in events)

    progress = Progress(runtime, inputs=INPUTS)
    replay(progress, events)
    middle = Progress(runtime, inputs=INPUTS)
    for event in events[: len(events) // 2]:
        middle.feed(event)
    statuses = {s.status for s in middle.record.record().subtasks}
    assert "running" in statuses and "succeeded" in statuses  # truly mid-run

    grown = progress.record.record(state, runtime=runtime)
    built = build_record(state, events=events, runtime=runtime)
    assert record_json(grown) == record_json(built)
    assert grown.totals.cost is not None and grown.totals.cost > 0
    counts = progress.counts()
    assert (counts.done, counts.failed, counts.skipped) == (4, 1, 1)
    assert progress.calls_finished() == progress.calls_total() == grown.totals.calls == 10


async def test_a_run_on_the_simulated_model_grows_into_build_records_record(simulated):
    graph = compile_plan(TaskPlan.model_validate(PLAN), model=simulated)
    runtime = graph.fanfold_runtime
    assert runtime is not None
    state, events = await stream(graph, {"inputs": INPUTS})
    progress = Progress(runtime, inputs=INPUTS)
    replay(progress, events)
    grown = progress.record.record(state, runtime=runtime, max_concurrency=4)
    built = build_record(state, events=events, runtime=runtime, max_concurrency=4)
    assert record_json(grown) == record_json(built)
    assert grown.subtask("each").calls and grown.totals.speedup is not None


async def test_a_fully_cached_run_grows_into_build_records_record(simulated, tmp_path: Path):
    cache = tmp_path / "cache.db"
    plan = TaskPlan.model_validate(PLAN)
    await stream(compile_plan(plan, model=simulated, cache=cache), {"inputs": INPUTS})
    graph = compile_plan(plan, model=simulated, cache=cache)
    runtime = graph.fanfold_runtime
    assert runtime is not None
    state, events = await stream(graph, {"inputs": INPUTS})
    progress = Progress(runtime, inputs=INPUTS)
    replay(progress, events)
    grown = progress.record.record(state, runtime=runtime)
    assert record_json(grown) == record_json(build_record(state, events=events, runtime=runtime))
    assert grown.totals.speedup is None  # no call reached the provider
    assert grown.totals.cached >= grown.totals.calls > 0


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    with SimServer(SimServerConfig(api_key=SIM_KEY)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", SIM_KEY)
        yield srv


def test_a_resumed_run_grows_into_build_records_record(server: SimServer, tmp_path: Path):
    """A retried run: kept results and reused map items are in the record from the start,
    the view agrees with it after every event, and it ends as build_record's."""
    store = str(tmp_path / "runs.db")
    server.update(fail_prompts={"look at c": 400})
    plan = {**PLAN, "subtasks": PLAN["subtasks"][:4]}
    options = {"model": "openai:sim-model", "max_attempts": 1}
    first = start_run(plan, INPUTS, checkpoint=store, options=options)
    first.run()
    assert first.run_id is not None
    server.update(fail_prompts={})

    prepared = open_run(first.run_id, store)
    assert isinstance(prepared, PlanRun) and prepared.mode == "retry"
    runtime = prepared.runtime
    assert prepared.reused_items
    progress = Progress(runtime, inputs=prepared.inputs)
    progress.preload(prepared.kept, reused_items=prepared.reused_items)
    assert_the_view_tells_the_record(progress, now=0.0)
    assert progress.counts().done == 3  # fetch, check and summarise are kept
    events: list[dict[str, Any]] = []
    final = prepared.run(on_event=events.append)
    replay(progress, events)
    grown = progress.record.record(final, runtime=runtime, inputs=prepared.inputs)
    built = build_record(final, events=events, runtime=runtime, inputs=prepared.inputs)
    assert record_json(grown) == record_json(built)
    assert len(grown.sessions) == 2 and grown.totals.not_running > 0
    assert grown.subtask("each").status == "succeeded"


async def test_the_clis_summary_is_the_record_that_grew_with_the_live_view(simulated):
    """The CLI's watch feeds one record: the live view reads it as it grows, and the
    summary, --json and the report are its final state (with the run's events, even when
    neither --json nor --report asked for them)."""
    graph = compile_plan(TaskPlan.model_validate(PLAN), model=simulated)
    runtime = graph.fanfold_runtime
    assert runtime is not None
    state, events = await stream(graph, {"inputs": INPUTS})
    for mode in ("live", "plain", "none"):
        watch = Watch(mode)  # type: ignore[arg-type]
        watch.set_runtime(runtime, inputs=INPUTS)
        for event in events:
            watch.feed(event)
        if mode == "live":
            assert watch.progress is not None and watch.progress.record is watch.growing
            assert_the_view_tells_the_record(watch.progress, now=events[-1]["time"])
        record = run_record(state, watch, runtime=runtime, max_concurrency=8, inputs=INPUTS)
        built = build_record(state, events=events, runtime=runtime, max_concurrency=8)
        assert record_json(record) == record_json(built), mode


def test_a_record_builder_takes_events_out_of_order_as_build_record_does():
    t = 1_000.0
    events = [
        {"type": "fanfold.subtask", "subtask": "a", "status": "started", "time": t + 1},
        {"type": "fanfold.subtask", "subtask": "a", "status": "succeeded", "time": t + 3,
         "total_tokens": 4, "attempts": 1, "cost": 0.5},
        {"type": "fanfold.subtask", "subtask": "b", "status": "started", "time": t + 2},
    ]  # fmt: skip
    growing = RecordBuilder()
    for event in events:
        growing.add_event(event)
    assert not growing.in_order
    plan = {"task": "t", "subtasks": [{"id": "a", "prompt": "a"}, {"id": "b", "prompt": "b"}]}
    state = {"results": {}, "run": {"plan": plan}}
    assert record_json(growing.record(state)) == record_json(build_record(state, events=events))
    now = growing.record()  # no plan known yet: the subtasks its events name
    assert [(s.id, s.status) for s in now.subtasks] == [("a", "succeeded"), ("b", "running")]
    assert growing.subtasks["a"].cost == 0.5 and growing.subtasks["b"].status == "running"
    assert now.subtask("a").cost == 0.5
