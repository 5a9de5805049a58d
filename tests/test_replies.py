"""Replies the provider bills but a run cannot use: cut off, filtered, or off the schema.

The real ChatOpenAI talks to fanfold's loopback SimServer, which honours `max_tokens`
(cutting a longer reply with finish reason "length") and can end a prompt's reply with
any finish reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fanfold import compile_plan, estimate_plan, resolve_model
from fanfold.scheduling.retry import RetryPolicy
from fanfold.testing import SimServer, SimServerConfig

API_KEY = "sk-test-replies-0123456789"
PRICES = {"sim-model": {"input": 100.0, "output": 400.0}}
FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.2)


@pytest.fixture
def server():
    with SimServer(SimServerConfig(api_key=API_KEY)) as srv:
        yield srv


def sim_model(srv: SimServer, **kwargs: Any) -> Any:
    return resolve_model("openai:sim-model", base_url=srv.base_url, api_key=API_KEY, **kwargs)


def wide_plan(count: int, **fields: Any) -> dict[str, Any]:
    return {
        "task": "Write the notes",
        "subtasks": [
            {"id": f"s{i:02d}", "prompt": f"Write a long note, please: [s{i:02d}]", **fields}
            for i in range(count)
        ],
    }


def per_call_estimate(plan: dict[str, Any]) -> float:
    estimate = estimate_plan(plan, model="openai:sim-model", prices=PRICES, aggregator=None)
    cost = max(c.cost_per_call or 0.0 for c in estimate.subtasks)
    assert cost > 0
    return cost


# -- the budget holds whatever the replies' length -----------------------------------------------


def test_replies_longer_than_estimated_are_capped_so_spend_stays_within_the_budget(
    server: SimServer,
):
    server.update(reply_tokens=2000)  # eight times the 256 tokens a call is reserved for
    plan = wide_plan(20)
    budget = 5 * per_call_estimate(plan)
    state = compile_plan(
        plan, model=sim_model(server), prices=PRICES, budget=budget, aggregator=None, retry=FAST
    ).invoke({"inputs": {}})

    sent = [r for r in server.log if r.outcome == 200]
    assert sent and all(r.max_tokens == 256 for r in sent)  # each call capped at its share
    results = state["results"]
    spent = sum(r.cost or 0.0 for r in results.values())
    assert 0 < spent <= budget * (1 + 1e-9)
    assert state["totals"].cost == pytest.approx(spent)
    called = [r for r in results.values() if r.attempts]
    assert len(called) == len(sent)
    for result in called:  # cut off at the cap: a failure, billed, not retried
        assert result.status == "failed" and result.attempts == 1
        assert "cut off at its 256-token cap" in (result.error or ""), result.error
        assert result.usage.output_tokens == 256 and (result.cost or 0) > 0


def test_a_subtask_expecting_long_replies_is_capped_and_reserved_at_that_length(
    server: SimServer,
):
    server.update(reply_tokens=2000)
    plan = wide_plan(6, expected_output_tokens=2000)
    budget = 3.5 * per_call_estimate(plan)
    results = compile_plan(
        plan, model=sim_model(server), prices=PRICES, budget=budget, aggregator=None
    ).invoke({"inputs": {}})["results"]

    assert {r.max_tokens for r in server.log} == {2000}
    ran = [r for r in results.values() if r.ok]
    assert len(ran) == 3 == server.request_count
    assert all(r.usage.output_tokens == 2000 for r in ran)
    assert sum(r.cost or 0.0 for r in results.values()) <= budget


def test_a_model_with_its_own_max_tokens_is_reserved_against_that_cap(server: SimServer):
    plan = wide_plan(4)
    model = sim_model(server, max_tokens=1024)
    estimate = estimate_plan(plan, model="openai:sim-model", prices=PRICES, aggregator=None)
    call = estimate.subtasks[0]
    assert call.cost_per_call is not None
    # Two calls at 256 reply tokens fit, but not one at the model's own 1024.
    budget = call.cost_per_call * 2
    results = compile_plan(plan, model=model, prices=PRICES, budget=budget, aggregator=None).invoke(
        {"inputs": {}}
    )["results"]
    assert server.request_count < 2
    assert all(r.status == "skipped" for r in results.values() if not r.attempts)


# -- billed failures count -------------------------------------------------------------------------


def test_a_reply_that_fails_its_schema_still_counts_its_tokens_and_cost(server: SimServer):
    plan = {
        "task": "Codes",
        "subtasks": [
            {
                "id": "code",
                "prompt": "A three-digit code",
                "output_schema": {
                    "type": "object",
                    "properties": {"code": {"type": "string", "pattern": "^[0-9]{3}$"}},
                    "required": ["code"],
                },
            }
        ],
    }
    state = compile_plan(
        plan, model=sim_model(server), prices=PRICES, aggregator=None, retry=FAST
    ).invoke({"inputs": {}})
    result = state["results"]["code"]
    assert server.status_counts() == {200: 1}
    assert result.status == "failed" and "output_schema" in (result.error or "")
    assert result.usage.total_tokens > 0 and (result.cost or 0) > 0
    assert state["totals"].cost == pytest.approx(result.cost)
    assert state["totals"].usage.total_tokens == result.usage.total_tokens


def test_billed_schema_failures_stop_a_budgeted_run(server: SimServer):
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[0-9]{3}$"}},
        "required": ["code"],
    }
    plan = wide_plan(30, output_schema=schema)
    state = compile_plan(plan, model=sim_model(server), prices=PRICES, aggregator=None).invoke(
        {"inputs": {}}
    )
    spent_each = state["results"]["s00"].cost
    assert spent_each
    server.reset()
    budget = 10.5 * spent_each + per_call_estimate(plan)
    results = compile_plan(
        plan,
        model=sim_model(server),
        prices=PRICES,
        budget=budget,
        aggregator=None,
        max_concurrency=1,
    ).invoke({"inputs": {}})["results"]
    assert server.request_count == 11
    assert sum(r.status == "skipped" for r in results.values()) == 19
    assert sum(r.cost or 0 for r in results.values()) <= budget


# -- cut off and filtered replies are failures, never cached ---------------------------------------


def test_cut_off_and_filtered_replies_fail_with_the_reason_and_are_not_cached(
    server: SimServer, tmp_path: Path
):
    server.update(finish_prompts={"[s00]": "length", "[s01]": "content_filter"})
    plan = wide_plan(3)
    cache = tmp_path / "cache.db"

    def run() -> dict[str, Any]:
        graph = compile_plan(
            plan, model=sim_model(server), prices=PRICES, cache=cache, aggregator=None, retry=FAST
        )
        return graph.invoke({"inputs": {}})["results"]

    first = run()
    assert first["s00"].status == "failed" and first["s00"].attempts == 1
    assert "cut off" in first["s00"].error and "'length'" in first["s00"].error
    assert first["s01"].status == "failed" and first["s01"].attempts == 1
    assert "filtered" in first["s01"].error and "'content_filter'" in first["s01"].error
    assert first["s00"].cost and first["s00"].usage.total_tokens > 0
    assert first["s02"].ok

    second = run()
    assert second["s02"].cached
    assert not second["s00"].ok and not second["s01"].ok
    assert server.requests_for("[s00]") == 2 and server.requests_for("[s01]") == 2
    assert server.requests_for("[s02]") == 1


def test_a_cut_off_structured_reply_fails_with_the_reason(server: SimServer):
    server.update(finish_prompts={"[s00]": "length"})
    plan = wide_plan(1, output_schema={"type": "object", "properties": {"a": {"type": "string"}}})
    result = compile_plan(
        plan, model=sim_model(server), prices=PRICES, aggregator=None, retry=FAST
    ).invoke({"inputs": {}})["results"]["s00"]
    assert result.status == "failed" and result.attempts == 1
    assert "cut off" in (result.error or ""), result.error
    assert (result.cost or 0) > 0
