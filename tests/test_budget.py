"""Budgets: no call is sent once the spent cost plus the calls in flight would pass it.

Every test counts the requests fanfold's loopback `SimServer` received from the real
ChatOpenAI. The server's replies are shorter than the 256 tokens a call is estimated to
write, so a finished call costs far less than its estimate: the tests tell the two apart.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from fanfold import (
    BudgetError,
    FanfoldError,
    PlanError,
    SimulatedChatModel,
    UnknownPriceError,
    compile_plan,
    estimate_plan,
    resolve_model,
)
from fanfold.cli import EXIT_INCOMPLETE, app
from fanfold.testing import SimServer, SimServerConfig

API_KEY = "sk-test-budget-0123456789"
PRICES = {"sim-model": {"input": 100.0, "output": 400.0}}
TASK_MARKER = "TASKMARK-budget"
"""In the task text: only the aggregate's request has it."""


@pytest.fixture
def server():
    with SimServer(SimServerConfig(api_key=API_KEY)) as srv:
        yield srv


def sim_model(srv: SimServer) -> Any:
    return resolve_model("openai:sim-model", base_url=srv.base_url, api_key=API_KEY)


def marker(sid: str) -> str:
    return f"<mark:{sid}>"


def wide_plan(count: int) -> dict[str, Any]:
    """`count` independent subtasks whose prompts are all as long as each other."""
    return {
        "task": f"Write the notes {TASK_MARKER}",
        "subtasks": [
            {"id": sid, "prompt": f"Write one short note for this step, please: {marker(sid)}"}
            for sid in (f"s{i:02d}" for i in range(count))
        ],
    }


def subtask_requests(srv: SimServer) -> int:
    return sum(TASK_MARKER not in r.prompt for r in srv.log)


def aggregate_requests(srv: SimServer) -> int:
    return sum(TASK_MARKER in r.prompt for r in srv.log)


def per_call_estimate(plan: dict[str, Any]) -> float:
    estimate = estimate_plan(plan, model="openai:sim-model", prices=PRICES)
    costs = {c.cost_per_call for c in estimate.subtasks}
    assert len(costs) == 1, "every call of the plan should be estimated alike"
    (cost,) = costs
    assert cost is not None
    return cost


def aggregate_estimate(plan: dict[str, Any]) -> float:
    estimate = estimate_plan(plan, model="openai:sim-model", prices=PRICES)
    assert estimate.aggregate is not None and estimate.aggregate.cost is not None
    return estimate.aggregate.cost


# -- the command line: 20 subtasks, a budget that fits 5 -----------------------------------------


def test_a_budget_that_fits_five_of_twenty_calls_sends_exactly_five_and_skips_the_rest(
    server: SimServer, tmp_path: Path
):
    plan = wide_plan(20)
    plan_file = tmp_path / "wide.json"
    plan_file.write_text(json.dumps(plan), encoding="utf-8")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES), encoding="utf-8")
    per_call = per_call_estimate(plan)
    budget = aggregate_estimate(plan) + 5.5 * per_call  # the aggregate's share, then 5 calls

    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": API_KEY}
    result = CliRunner(env=env).invoke(
        app,
        [
            "run",
            str(plan_file),
            "-m",
            "openai:sim-model",
            "--prices",
            str(prices),
            "--budget",
            repr(budget),
            # All 20 ask at once (a cold limiter ramps up, and calls that end meanwhile
            # settle below their estimates, leaving room for more than 5).
            "--max-concurrency",
            "20",
            "--json",
        ],
    )

    assert result.exit_code == EXIT_INCOMPLETE == 3, result.output
    assert subtask_requests(server) == 5
    assert aggregate_requests(server) == 1  # the aggregate still ran
    report = json.loads(result.stdout)
    statuses = [r["status"] for r in report["results"].values()]
    assert statuses.count("succeeded") == 5 and statuses.count("skipped") == 15
    for entry in report["results"].values():
        if entry["status"] == "skipped":
            assert entry["error"].startswith("budget: "), entry["error"]
            assert entry["attempts"] == 0 and entry["cost"] == 0.0
        else:
            assert server.requests_for(marker(entry["id"])) == 1
    assert report["aggregate_error"] is None and report["output"]
    assert report["totals"]["skipped"] == 15
    assert report["totals"]["cost"] <= budget


def test_a_budget_with_a_model_that_has_no_price_is_one_error_line_before_any_request(
    server: SimServer, tmp_path: Path
):
    plan_file = tmp_path / "wide.json"
    plan_file.write_text(json.dumps(wide_plan(2)), encoding="utf-8")
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": API_KEY}
    result = CliRunner(env=env).invoke(
        app, ["run", str(plan_file), "-m", "openai:sim-model", "--budget", "1"]
    )
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: a budget needs a price"), lines
    assert "'sim-model'" in lines[0] and "--prices" in lines[0]
    assert server.request_count == 0


# -- the Python API -------------------------------------------------------------------------------


def test_a_budget_with_an_unpriced_model_is_a_budget_error_at_compile_time(server: SimServer):
    with pytest.raises(UnknownPriceError) as caught:
        compile_plan(wide_plan(2), model=sim_model(server), budget=1.0)
    assert isinstance(caught.value, BudgetError) and isinstance(caught.value, FanfoldError)
    assert not isinstance(caught.value, PlanError)
    assert caught.value.models == {"sim-model": ["s00", "s01", "aggregate"]}
    # Only the aggregate's model without a price: it is named alone.
    with pytest.raises(UnknownPriceError) as only_aggregate:
        compile_plan(
            wide_plan(1),
            model=SimulatedChatModel(latency=0),
            aggregator=sim_model(server),
            budget=1.0,
        )
    assert only_aggregate.value.models == {"sim-model": ["aggregate"]}
    assert server.request_count == 0


@pytest.mark.parametrize("budget", [-0.01, math.nan, math.inf, "1"])
def test_a_budget_that_is_not_a_number_of_usd_is_a_budget_error(budget: Any):
    with pytest.raises(BudgetError, match="budget must be a number of USD"):
        compile_plan(wide_plan(1), model="simulated", budget=budget)


def test_finished_calls_count_what_they_cost_not_what_they_were_estimated_at(server: SimServer):
    """One call at a time: each sees the spent cost of those before it, nothing in flight."""
    plan = wide_plan(10)
    probe = compile_plan(wide_plan(1), model=sim_model(server), prices=PRICES, aggregator=None)
    spent_per_call = probe.invoke({"inputs": {}})["results"]["s00"].cost
    estimate = per_call_estimate(plan)
    assert spent_per_call is not None and 0 < spent_per_call < estimate / 5
    server.reset()

    # Room for one estimate on top of 3.5 calls' actual cost: the fifth call no longer fits.
    budget = 3.5 * spent_per_call + estimate
    graph = compile_plan(
        plan,
        model=sim_model(server),
        prices=PRICES,
        budget=budget,
        aggregator=None,
        max_concurrency=1,
    )
    results = graph.invoke({"inputs": {}})["results"]

    ran = [r for r in results.values() if r.ok]
    assert len(ran) == 4 == server.request_count
    assert all(r.cost == pytest.approx(spent_per_call) for r in ran)
    assert sum(1 for r in results.values() if (r.error or "").startswith("budget: ")) == 6


def test_calls_in_flight_count_at_their_estimate(server: SimServer):
    """All at once: nothing is spent yet, so every call in flight holds its estimate."""
    plan = wide_plan(10)
    estimate = per_call_estimate(plan)
    graph = compile_plan(
        plan, model=sim_model(server), prices=PRICES, budget=3.5 * estimate, aggregator=None
    )
    results = graph.invoke({"inputs": {}})["results"]
    assert server.request_count == 3
    assert sum(r.ok for r in results.values()) == 3


def test_dependents_of_a_call_skipped_for_the_budget_are_skipped_for_the_budget(
    server: SimServer,
):
    plan = {
        "task": f"A chain {TASK_MARKER}",
        "subtasks": [
            {"id": "a", "prompt": f"Start {marker('a')}"},
            {"id": "b", "prompt": f"Continue {marker('b')}", "depends_on": ["a"]},
        ],
    }
    budget = aggregate_estimate(plan) + 0.5 * min(
        c.cost_per_call or 0
        for c in estimate_plan(plan, model="openai:sim-model", prices=PRICES).subtasks
    )
    state = compile_plan(plan, model=sim_model(server), prices=PRICES, budget=budget).invoke(
        {"inputs": {}}
    )
    results = state["results"]
    assert results["a"].status == "skipped" and results["a"].error.startswith("budget: a call")
    assert results["b"].status == "skipped"
    assert results["b"].error == "budget: dependency 'a' was skipped for the budget"
    # Nothing ran within the budget: there is nothing to aggregate, so no request at all.
    assert subtask_requests(server) == 0 and aggregate_requests(server) == 0
    assert state["output"] is None
    assert state["aggregate_error"].startswith("budget: no subtask ran within the budget")


def test_map_items_past_the_budget_are_skipped_and_the_map_is_skipped_for_budget(
    server: SimServer,
):
    plan = {
        "task": "Describe each",
        "inputs": {"teas": {"default": [f"tea-{i}" for i in range(10)]}},
        "subtasks": [{"id": "each", "prompt": "Describe {item}", "map": "teas"}],
    }
    per_item = estimate_plan(plan, model="openai:sim-model", prices=PRICES, aggregator=None)
    per_call = per_item.subtasks[0].cost_per_call
    assert per_call is not None
    graph = compile_plan(
        plan, model=sim_model(server), prices=PRICES, budget=3.5 * per_call, aggregator=None
    )
    result = graph.invoke({"inputs": {}})["results"]["each"]
    assert server.request_count == 3
    assert result.status == "skipped" and result.error.startswith("budget: 7 of 10 items")
    assert result.items is not None
    assert [i.status for i in result.items] == ["succeeded"] * 3 + ["skipped"] * 7
    assert result.output[:3] == [i.output for i in result.items[:3]]


def test_a_retried_run_counts_what_its_first_attempt_spent(server: SimServer):
    plan = {
        "task": "Two notes",
        "subtasks": [
            {"id": "a", "prompt": f"Write a note {marker('a')}"},
            {"id": "b", "prompt": f"Write a note {marker('b')}"},
        ],
    }
    saver = InMemorySaver()
    config: Any = {"configurable": {"thread_id": "budget-retry"}}
    server.update(fail_prompts={marker("b"): 400})
    first = compile_plan(
        plan, model=sim_model(server), prices=PRICES, checkpointer=saver, aggregator=None
    ).invoke({"inputs": {}}, config)
    spent = first["results"]["a"].cost
    assert first["results"]["b"].status == "failed" and spent
    server.update(fail_prompts={})

    # b's estimate fits the budget alone, but not on top of what a already cost.
    estimate = per_call_estimate(plan)
    graph = compile_plan(
        plan,
        model=sim_model(server),
        prices=PRICES,
        checkpointer=saver,
        aggregator=None,
        budget=estimate + spent / 2,
    )
    retried = graph.retry_failed(config)
    assert retried["results"]["b"].status == "skipped"
    assert retried["results"]["b"].error.startswith("budget: ")
    assert server.requests_for(marker("b")) == 1  # only the first run's failed request


def test_cached_calls_cost_nothing_against_the_budget(server: SimServer, tmp_path: Path):
    plan = wide_plan(3)
    cache = tmp_path / "cache.db"
    compile_plan(plan, model=sim_model(server), prices=PRICES, cache=cache).invoke({"inputs": {}})
    sent = server.request_count
    state = compile_plan(
        plan, model=sim_model(server), prices=PRICES, cache=cache, budget=0
    ).invoke({"inputs": {}})
    assert server.request_count == sent
    assert all(r.ok and r.cached for r in state["results"].values())
    assert state["totals"].cost == 0.0


def test_items_of_an_item_wise_map_after_a_budget_skip_are_skipped_for_the_budget(
    server: SimServer,
):
    plan = {
        "task": "Describe, then refine",
        "inputs": {"teas": {"default": [f"tea-{i}" for i in range(4)]}},
        "subtasks": [
            {"id": "first", "prompt": "Describe {item}", "map": "teas"},
            {"id": "second", "prompt": "Refine {item}", "map": "first"},
        ],
    }
    estimate = estimate_plan(plan, {}, model="openai:sim-model", prices=PRICES, aggregator=None)
    per_call = estimate.subtasks[0].cost_per_call
    assert per_call is not None
    graph = compile_plan(
        plan, model=sim_model(server), prices=PRICES, budget=2.5 * per_call, aggregator=None
    )
    results = graph.invoke({"inputs": {}})["results"]
    assert server.request_count == 2
    second = results["second"]
    assert second.status == "skipped" and second.items is not None
    errors = [item.error or "" for item in second.items]
    assert all(error.startswith("budget: ") for error in errors), errors
    assert errors[2] == "budget: dependency item 'first[2]' was skipped for the budget"


# -- the aggregate's call counts like any other -------------------------------------------------


def test_a_budget_too_small_for_anything_sends_no_request_says_why_and_exits_3(
    server: SimServer, tmp_path: Path
):
    plan_file = tmp_path / "wide.json"
    plan_file.write_text(json.dumps(wide_plan(3)), encoding="utf-8")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES), encoding="utf-8")
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": API_KEY}
    for budget in ("0", repr(aggregate_estimate(wide_plan(3)) / 2)):
        result = CliRunner(env=env).invoke(
            app,
            ["run", str(plan_file), "-m", "openai:sim-model", "--prices", str(prices)]
            + ["--budget", budget],
        )
        assert result.exit_code == EXIT_INCOMPLETE == 3, result.output
        assert server.request_count == 0
        assert "aggregation skipped: budget: the $" in result.stdout
        assert "cannot cover the aggregate's estimated" in result.stdout
        assert "0 succeeded, 0 failed, 3 skipped" in result.stdout


def test_the_aggregates_reply_is_capped_and_billed_within_the_budget(server: SimServer):
    server.update(reply_tokens=2000)
    plan = wide_plan(2)
    budget = aggregate_estimate(plan) + 2.5 * per_call_estimate(plan)
    state = compile_plan(plan, model=sim_model(server), prices=PRICES, budget=budget).invoke(
        {"inputs": {}}
    )
    [aggregate] = [r for r in server.log if TASK_MARKER in r.prompt]
    assert aggregate.max_tokens == 256
    assert "cut off at its 256-token cap" in (state["aggregate_error"] or "")
    totals = state["totals"]
    assert totals.aggregate_usage.output_tokens == 256  # the cut-off reply is counted
    assert totals.cost is not None and totals.cost <= budget
