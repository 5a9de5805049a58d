"""Maps sent through the Batch API: the real openai SDK against the loopback server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from fanfold import BatchNotSupportedError, BatchOptions, ResultCache, compile_plan
from fanfold.testing import SimServer, SimServerConfig

FAST = BatchOptions(poll_min=0.02, poll_max=0.05)
LABEL = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


@pytest.fixture
def server() -> Iterator[SimServer]:
    with SimServer(SimServerConfig(seed=7)) as srv:
        yield srv


def openai_model(srv: SimServer, **settings: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini", base_url=srv.base_url, api_key="sk-test", max_retries=0, **settings
    )


def map_plan(*, batch: bool = True, **fields: Any) -> dict[str, Any]:
    return {
        "task": "Sort the tickets",
        "inputs": {"tickets": {"description": "the tickets"}},
        "subtasks": [
            {"id": "classify", "map": "tickets", "prompt": "Classify {item}", "batch": batch}
            | fields
        ],
    }


def tickets(n: int) -> list[str]:
    return [f"ticket {i}" for i in range(n)]


def run(graph: Any, items: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    for mode, chunk in graph.stream(
        {"inputs": {"tickets": items}}, stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            events.append(chunk)
        else:
            state = chunk
    return state, events


def test_a_batched_map_sends_one_batch_and_no_live_request(server: SimServer) -> None:
    model = openai_model(server)
    graph = compile_plan(map_plan(output_schema=LABEL), model=model, aggregator=None, batch=FAST)
    state, events = run(graph, tickets(5))
    result = state["results"]["classify"]
    assert result.status == "succeeded"
    assert result.output == [{"label": "simulated label"}] * 5
    assert server.batch_api.creations == 1
    assert server.request_count == 0
    (batch_id,) = server.batch_api.batch_ids()
    assert result.batch["id"] == batch_id and result.batch["status"] == "completed"
    assert result.batch["input_file_id"] and result.batch["output_file_id"]
    assert result.to_state()["batch"] == result.batch  # kept in the checkpoint
    states = [e["batch"]["status"] for e in events if e["status"] == "batch"]
    assert states[-1] == "completed"
    started = [e for e in events if e["status"] == "started" and e.get("item") is not None]
    assert len(started) == 5 and all(e["batch"] for e in started)


def test_each_line_carries_the_exact_body_the_live_call_sends(server: SimServer) -> None:
    model = openai_model(server, temperature=0.25, max_tokens=40)
    for batch in (False, True):
        graph = compile_plan(
            map_plan(batch=batch, output_schema=LABEL), model=model, aggregator=None, batch=FAST
        )
        run(graph, tickets(2))
    (batch_id,) = server.batch_api.batch_ids()
    lines = sorted(
        server.batch_api.input_lines(batch_id),
        key=lambda line: line["body"]["messages"][-1]["content"],
    )
    live = sorted(server.log, key=lambda record: record.prompt)
    assert [line["url"] for line in lines] == ["/v1/chat/completions"] * 2
    for line, record in zip(lines, live, strict=True):
        body = {k: v for k, v in line["body"].items() if k not in ("messages", "tools")}
        sent_live = {k: v for k, v in record.params.items() if k not in ("stream",)}
        assert body == sent_live
        assert body["temperature"] == 0.25
        assert body.get("max_completion_tokens", body.get("max_tokens")) == 40
        assert body["response_format"]["type"] == "json_schema"
        assert line["body"]["messages"][-1]["content"] == record.prompt


def test_batched_calls_cost_half_the_live_price(server: SimServer) -> None:
    costs = {}
    for batch in (False, True):
        graph = compile_plan(
            map_plan(batch=batch), model=openai_model(server), aggregator=None, batch=FAST
        )
        state, _ = run(graph, tickets(4))
        result = state["results"]["classify"]
        costs[batch] = result.cost
        assert result.usage.total_tokens > 0
    assert costs[True] == pytest.approx(costs[False] / 2)


def test_a_prices_table_gives_its_own_batch_price(server: SimServer) -> None:
    prices = {"gpt-4o-mini": {"input": 1.0, "output": 1.0, "batch": {"input": 0.1, "output": 0.1}}}
    graph = compile_plan(
        map_plan(), model=openai_model(server), aggregator=None, batch=FAST, prices=prices
    )
    result = run(graph, tickets(2))[0]["results"]["classify"]
    assert result.cost == pytest.approx(result.usage.total_tokens * 0.1 / 1_000_000)


def test_items_already_in_the_cache_are_not_sent(server: SimServer) -> None:
    cache = ResultCache(":memory:")
    model = openai_model(server)
    live = compile_plan(map_plan(batch=False), model=model, aggregator=None, cache=cache)
    run(live, tickets(3))
    graph = compile_plan(map_plan(), model=model, aggregator=None, cache=cache, batch=FAST)
    state, _ = run(graph, tickets(5))
    (batch_id,) = server.batch_api.batch_ids()
    sent = [
        line["body"]["messages"][-1]["content"] for line in server.batch_api.input_lines(batch_id)
    ]
    assert sorted(sent) == ["Classify ticket 3", "Classify ticket 4"]
    items = state["results"]["classify"].items
    assert [r.cached for r in items] == [True, True, True, False, False]
    # and the batched items are cached in turn: a third run sends nothing
    run(compile_plan(map_plan(), model=model, aggregator=None, cache=cache, batch=FAST), tickets(5))
    assert server.batch_api.creations == 1


def test_a_failed_line_is_retried_live_within_its_attempts(server: SimServer) -> None:
    server.batch_api.update(line_errors={"ticket 2": 500, "ticket 3": 400})
    graph = compile_plan(map_plan(), model=openai_model(server), aggregator=None, batch=FAST)
    state, _ = run(graph, tickets(4))
    items = state["results"]["classify"].items
    assert [r.status for r in items] == ["succeeded", "succeeded", "succeeded", "failed"]
    assert items[2].attempts == 2  # the batch line, then one live request
    assert server.requests_for("ticket 2") == 1
    assert server.requests_for("ticket 3") == 0  # a 400 is a verdict: not retried
    assert "400" in (items[3].error or "")
    # the live retry is billed at the live price, the batched items at the batch price
    assert items[2].cost == pytest.approx(2 * items[1].cost, rel=0.2)


def test_an_expired_batch_gives_a_partial_map(server: SimServer) -> None:
    server.batch_api.update(completion_delay=1.0, expire_after=0.5)
    graph = compile_plan(
        map_plan(allow_partial=True), model=openai_model(server), aggregator=None, batch=FAST
    )
    state, events = run(graph, tickets(4))
    result = state["results"]["classify"]
    assert result.status == "failed"
    assert result.output[:2] == [r.output for r in result.items[:2]]
    assert result.output[2:] == [None, None]
    assert "expired before this request ran" in (result.items[3].error or "")
    assert server.request_count == 0  # expired lines are not sent live
    assert [e["batch"]["status"] for e in events if e["status"] == "batch"][-1] == "expired"


def test_a_batch_cancelled_at_the_provider_keeps_what_finished(server: SimServer) -> None:
    server.batch_api.update(completion_delay=2.0)
    graph = compile_plan(map_plan(), model=openai_model(server), aggregator=None, batch=FAST)

    async def cancel_soon() -> None:
        while not server.batch_api.batch_ids():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.7)
        server.batch_api.cancel(server.batch_api.batch_ids()[0])

    async def both() -> dict[str, Any]:
        canceller = asyncio.create_task(cancel_soon())
        state = await graph.ainvoke({"inputs": {"tickets": tickets(4)}})
        await canceller
        return state

    items = asyncio.run(both())["results"]["classify"].items
    statuses = [r.status for r in items]
    assert statuses[0] == "succeeded" and statuses[-1] == "failed"
    assert "cancelled before this request ran" in (items[-1].error or "")


@pytest.mark.parametrize(
    "create_delay",
    # 2.0: the server makes the batch, then holds its answer, so the cancel lands mid-create.
    [0.0, 2.0],
    ids=["while_running", "while_being_created"],
)
def test_a_run_cancelled_without_a_checkpoint_cancels_its_batch(
    server: SimServer, create_delay: float
) -> None:
    server.batch_api.update(completion_delay=30.0, create_delay=create_delay)
    graph = compile_plan(map_plan(), model=openai_model(server), aggregator=None, batch=FAST)

    async def start_then_cancel() -> None:
        task = asyncio.create_task(graph.ainvoke({"inputs": {"tickets": tickets(3)}}))
        while not server.batch_api.batch_ids():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(start_then_cancel())
    (batch_id,) = server.batch_api.batch_ids()
    assert server.batch_api.status(batch_id) in ("cancelling", "cancelled")


def test_every_map_batches_only_maps_of_at_least_min_items(server: SimServer) -> None:
    plan = map_plan(batch=False)
    plan["subtasks"].append({"id": "small", "map": "few", "prompt": "Say {item}"})
    plan["inputs"]["few"] = {"description": "a short list"}
    options = BatchOptions(every_map=True, min_items=3, poll_min=0.02, poll_max=0.05)
    graph = compile_plan(plan, model=openai_model(server), aggregator=None, batch=options)
    state = graph.invoke({"inputs": {"tickets": tickets(3), "few": ["a", "b"]}})
    assert all(r.ok for r in state["results"].values())
    assert server.batch_api.creations == 1
    assert server.request_count == 2  # the two-item map went live


def test_a_budget_reserves_the_batch_price_before_submitting(server: SimServer) -> None:
    model = openai_model(server, max_tokens=20)
    live = compile_plan(map_plan(batch=False), model=model, aggregator=None)
    one = live.invoke({"inputs": {"tickets": tickets(1)}})["results"]["classify"]
    assert one.cost
    # Room for 6 items' worst case at the batch price, but fewer than 6 at the live price.
    from fanfold.scheduling.prices import DEFAULT_PRICES

    price = DEFAULT_PRICES["gpt-4o-mini"]
    worst = price.batch.cost(one.usage.input_tokens + 4, 20)
    budget = worst * 6 * 1.05
    assert budget < 6 * price.cost(one.usage.input_tokens, 20)
    graph = compile_plan(map_plan(), model=model, aggregator=None, batch=FAST, budget=budget)
    result = graph.invoke({"inputs": {"tickets": tickets(6)}})["results"]["classify"]
    assert result.status == "succeeded"
    assert result.cost is not None and result.cost <= budget
    assert server.batch_api.creations == 1


def test_batch_on_a_subtask_that_is_not_a_map_is_a_plan_error() -> None:
    plan = {"task": "t", "subtasks": [{"id": "a", "prompt": "x", "batch": True}]}
    with pytest.raises(BatchNotSupportedError, match="only a map's item calls go as a batch"):
        compile_plan(plan, model="simulated")


def test_batch_with_a_model_that_has_no_batch_api_is_a_plan_error() -> None:
    with pytest.raises(BatchNotSupportedError, match="SimulatedChatModel.*has no Batch API"):
        compile_plan(map_plan(), model="simulated")
    with pytest.raises(BatchNotSupportedError, match="'classify'"):
        compile_plan(map_plan(batch=False), model="simulated", batch=True)


def test_batch_on_another_kind_is_a_plan_error() -> None:
    with pytest.raises(BatchNotSupportedError, match="only the llm kind"):
        compile_plan(map_plan(kind="template"), model="simulated")


def test_estimate_shows_live_and_batch_prices_side_by_side() -> None:
    from fanfold import estimate_plan

    plan = map_plan()
    plan["subtasks"].append({"id": "live", "map": "tickets", "prompt": "Summarise {item}"})
    estimate = estimate_plan(
        plan, {"tickets": tickets(4)}, model="openai:gpt-4o-mini", aggregator=None
    )
    batched, live = estimate.subtasks
    assert batched.batch and not live.batch
    assert batched.live_cost and batched.batch_cost
    assert batched.batch_cost == pytest.approx(batched.live_cost / 2)
    assert batched.cost == batched.batch_cost and live.cost == live.live_cost
    assert estimate.batch_cost == pytest.approx(batched.batch_cost + live.batch_cost)
    assert estimate.cost == pytest.approx(batched.batch_cost + live.live_cost)
    text = "\n".join(estimate.lines())
    assert "(live $" in text and "sent batch" in text and "with every map as a batch" in text


def test_the_record_live_view_and_report_show_the_batch(server: SimServer) -> None:
    from fanfold.progress import PlainProgress, Progress
    from fanfold.record import build_record
    from fanfold.report import run_report

    server.batch_api.update(validate_seconds=0.1, completion_delay=0.3, finalize_seconds=0.1)
    graph = compile_plan(map_plan(), model=openai_model(server), aggregator=None, batch=FAST)
    state, events = run(graph, tickets(3))
    progress, lines = Progress(), []
    plain = PlainProgress(lines.append)
    snapshots = []
    for event in events:
        progress.feed(event)
        plain.feed(event)
        snapshots.extend(row.batch for row in progress.snapshot().running if row.batch)
    statuses = [b["status"] for b in snapshots]
    assert statuses[0] == "validating" and "in_progress" in statuses
    assert any(line.startswith("  batch     classify: batch-") for line in lines)
    assert any(line.endswith("completed: 3/3 done") for line in lines)

    record = build_record(state, events=events, runtime=graph.fanfold_runtime)
    batch = record.subtasks[0].batch
    assert batch is not None and batch.status == "completed"
    assert (batch.total, batch.completed, batch.failed) == (3, 3, 0)
    assert [s for s, _ in batch.states] == ["validating", "in_progress", "finalizing", "completed"]
    assert batch.start is not None and batch.end is not None and batch.start <= batch.end
    html = run_report(state, events=events, runtime=graph.fanfold_runtime)
    assert html.count('class="bar batch bs-') == 4
    assert f"batch {batch.id} completed: 3/3 done" in html


def test_run_with_the_batch_flag_batches_big_maps_on_the_command_line(
    server: SimServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from fanfold.cli import EXIT_ERROR, EXIT_OK, app

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({**map_plan(batch=False), "aggregation": {"enabled": False}}))
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("FANFOLD_BATCH_POLL", "0.05")
    args = ["run", str(plan), "-m", "openai:gpt-4o-mini", "--no-cache", "--json",
            "-i", f"tickets={json.dumps(tickets(3))}"]  # fmt: skip
    done = CliRunner().invoke(app, [*args, "--batch", "--batch-min-items", "3"])
    assert done.exit_code == EXIT_OK, done.output
    assert server.batch_api.creations == 1 and server.request_count == 0
    done = CliRunner().invoke(app, [*args, "--batch"])  # 3 items: below the default 100
    assert done.exit_code == EXIT_OK, done.output
    assert server.batch_api.creations == 1 and server.request_count == 3
    refused = CliRunner().invoke(app, ["run", str(plan), "-m", "simulated", "--batch",
                                       "-i", f"tickets={json.dumps(tickets(3))}"])  # fmt: skip
    assert refused.exit_code == EXIT_ERROR
    assert "cannot be sent as a batch" in refused.output
    assert "Traceback" not in refused.output
