"""What a gateway says, read right (issue 23): LiteLLM's forwarded retry-after, per-minute
budgets waited for rather than failed, the requests left in a window, the cost a reply
reports, and why a call timed out behind a gateway that answers 429s.

The HTTP tests drive the real ChatOpenAI against fanfold's loopback server, which
answers with the headers a LiteLLM proxy sends.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fanfold import TaskPlan, compile_plan, resolve_model
from fanfold.cli import app
from fanfold.record import build_record
from fanfold.scheduling import call_attempts, limits
from fanfold.scheduling.dispatcher import EVENT_TYPE
from fanfold.scheduling.gateway import ReplyReport, read_report
from fanfold.scheduling.limits import RateLimiter
from fanfold.scheduling.pacing import PaceLimits, PaceState
from fanfold.scheduling.retry import RetryPolicy, classify
from fanfold.testing import SimServer, SimServerConfig

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.2)


class GatewayError(Exception):
    """An SDK-like error carrying a response with headers, as openai's errors do."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(f"Error code: {status}")
        self.status_code = status
        self.response = SimpleNamespace(status_code=status, headers=httpx.Headers(headers))


def plan_of(n: int, **fields: Any) -> TaskPlan:
    subtasks = [{"id": f"s{i}", "prompt": f"[s{i}] do s{i}", **fields} for i in range(n)]
    return TaskPlan.model_validate({"task": "Talk to a gateway", "subtasks": subtasks})


def model_for(srv: SimServer, **settings: Any) -> Any:
    return resolve_model("openai:conc8", base_url=srv.base_url, api_key="sk-test", **settings)


async def run(graph: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    async for mode, chunk in graph.astream({"inputs": {}}, stream_mode=["custom", "values"]):
        if mode == "values":
            final = chunk
        elif isinstance(chunk, dict) and chunk.get("type") == EVENT_TYPE:
            events.append(chunk)
    return final, events


# -- retry-after as LiteLLM forwards it --------------------------------------------------


def test_litellms_forwarded_retry_after_is_read() -> None:
    assert classify(GatewayError(429, {"llm_provider-retry-after": "60"})).retry_after == 60.0
    ms = classify(GatewayError(429, {"llm_provider-retry-after-ms": "1500"}))
    assert ms.retry_after == 1.5
    # The server's own header comes first.
    both = {"retry-after": "2", "llm_provider-retry-after": "60"}
    assert classify(GatewayError(429, both)).retry_after == 2.0


async def test_a_forwarded_retry_after_sets_the_wait_before_the_retry() -> None:
    hint = {"llm_provider-retry-after": "0.3"}
    cost = {"x-litellm-response-cost": "0.01"}
    config = SimServerConfig(
        latency=0.05, rate_limit_concurrency=1, rate_limit_headers=hint, reply_headers=cost
    )
    with SimServer(config) as srv:
        graph = compile_plan(
            plan_of(3),
            model=model_for(srv),
            aggregator=None,
            retry=RetryPolicy(max_attempts=10, initial_backoff=0.01, max_backoff=1.0),
            rate_limiter=RateLimiter(),
        )
        final, events = await run(graph)
        rejected = srv.status_counts().get(429, 0)
    assert all(r.ok for r in final["results"].values())
    retrying = [e for e in events if e["status"] == "retrying"]
    assert rejected >= 1 and len(retrying) == rejected
    assert all(e["delay"] >= 0.3 for e in retrying), [e["delay"] for e in retrying]
    # A rejected attempt billed nothing: the call's cost is the one the gateway said.
    costs = {(r.cost, r.cost_source) for r in final["results"].values()}
    assert costs == {(0.01, "gateway")}, costs


# -- per-minute budgets ------------------------------------------------------------------


async def test_a_per_minute_budget_is_waited_for_until_the_minute_not_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # LiteLLM's rpm limit answers `llm_provider-retry-after: 60`, more than the policy's
    # max_backoff (0.2 s here): the calls wait for the next minute (0.3 s away, made up).
    soon = lambda wall=None: 0.3  # noqa: E731
    monkeypatch.setattr(limits, "minute_left", soon)
    monkeypatch.setattr(call_attempts, "minute_left", soon)
    hint = {"llm_provider-retry-after": "60"}
    config = SimServerConfig(latency=0.05, rate_limit_concurrency=1, rate_limit_headers=hint)
    with SimServer(config) as srv:
        limiter = RateLimiter()
        graph = compile_plan(
            plan_of(3), model=model_for(srv), aggregator=None, retry=FAST, rate_limiter=limiter
        )
        final, events = await run(graph)
        rejected = srv.status_counts().get(429, 0)
    failed = {sid: r.error for sid, r in final["results"].items() if not r.ok}
    assert not failed, failed
    assert rejected >= 1
    retrying = [e for e in events if e["status"] == "retrying"]
    assert retrying and all(0.3 <= e["delay"] < 1.0 for e in retrying)
    # A budget, not a pace: neither the pace nor the window was cut.
    assert limiter.rate is None and limiter.state.window_cuts == 0


def test_a_window_that_says_it_is_spent_holds_starts_until_it_refills() -> None:
    limits_ = PaceLimits()
    state = PaceState.fresh(0.0, limits_)
    state.reserve(0.0, 0, limits_)
    state.on_success(0.2, limits_, in_flight=0, latency=0.2, remaining=2, refill_in=10.0)
    assert state.start_delay(0.2, 0, limits_) == 0.0
    state.reserve(0.2, 0, limits_)
    state.reserve(0.2, 0, limits_)
    assert state.start_delay(0.3, 0, limits_) == pytest.approx(9.9)  # two left, two sent
    # An older reply, answered before those two were counted, says more are left: the
    # lower count stands.
    state.on_success(0.4, limits_, remaining=5, refill_in=9.8)
    assert state.start_delay(0.4, 0, limits_) == pytest.approx(9.8)
    # The window refills: a burst goes at once, and nothing is known of the new window.
    seq, delay = state.reserve(10.3, 0, limits_)
    assert delay == 0.0 and state.quota_left is None
    assert state.start_delay(10.3, 0, limits_) == 0.0


async def test_calls_still_in_flight_count_against_the_requests_left() -> None:
    # LiteLLM counts a call in x-ratelimit-remaining-requests when it ends: the two
    # calls still in flight will spend two of the three it says are left.
    limiter = RateLimiter()
    permits = [await limiter.acquire() for _ in range(3)]
    limiter.record_success(0, permits[0], remaining=3, refill_in=30.0)
    limiter.release(permits[0])
    assert limiter.state.quota_left == 1


def test_a_reply_says_when_its_window_refills() -> None:
    report = read_report({"X-RateLimit-Remaining-Requests": "0"}, None)
    assert report.remaining_requests == 0
    # No reset header (LiteLLM): the wall clock's minute, from 12:00:45 15 s away.
    assert report.refill_in(started=45.0, now=45.0) == pytest.approx(15.25)
    # A reply to a call started in the minute before tells nothing of this one.
    assert report.refill_in(started=59.9, now=60.1) is None
    said = read_report(
        {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1m0.5s"}, None
    )
    assert said.refill_in(started=0.0, now=30.0) == pytest.approx(60.5)
    assert read_report({"x-ratelimit-reset-requests": "6ms"}, None).reset_requests == 0.006
    assert read_report({"x-ratelimit-remaining-requests": "-3"}, None).remaining_requests == 0
    assert read_report({"x-ratelimit-reset-requests": "soon"}, None) == ReplyReport()


# -- cost from the gateway ---------------------------------------------------------------


def test_a_replys_cost_comes_from_its_header_or_its_usage() -> None:
    assert read_report({"x-litellm-response-cost": "4.9e-05"}, None).cost == pytest.approx(4.9e-5)
    assert read_report(None, {"prompt_tokens": 3, "cost": 0.002}).cost == 0.002
    header_first = read_report({"x-litellm-response-cost": "0.1"}, {"cost": 0.2})
    assert header_first.cost == 0.1
    assert read_report({"x-litellm-response-cost": "n/a"}, {"cost": -1}).cost is None


async def test_the_cost_a_gateway_reports_comes_ahead_of_the_price_table() -> None:
    # No price is known for "conc8"; the gateway says what each call cost.
    config = SimServerConfig(reply_headers={"x-litellm-response-cost": "0.0125"})
    with SimServer(config) as srv:
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        plan = TaskPlan.model_validate(
            {
                "task": "Ask a gateway",
                "subtasks": [
                    {"id": "text", "prompt": "say hi"},
                    {"id": "data", "prompt": "count", "output_schema": schema},
                ],
            }
        )
        graph = compile_plan(plan, model=model_for(srv), aggregator=None, retry=FAST)
        final, events = await run(graph)
    results = final["results"]
    assert all(r.ok for r in results.values()), {k: r.error for k, r in results.items()}
    assert {sid: (r.cost, r.cost_source) for sid, r in results.items()} == {
        "text": (0.0125, "gateway"),
        "data": (0.0125, "gateway"),
    }
    record = build_record(final, events=events)
    assert record.totals.cost == pytest.approx(0.025)
    assert record.totals.cost_sources == {"gateway": 2}
    assert {s.id: s.cost_source for s in record.subtasks} == {"text": "gateway", "data": "gateway"}


def test_the_cli_summary_gives_the_gateways_cost_once(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"task": "t", "subtasks": [{"id": "a", "prompt": "hi"}]}))
    config = SimServerConfig(reply_headers={"x-litellm-response-cost": "0.5"})
    with SimServer(config) as srv:
        env = {"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": "sk-test", "COLUMNS": "200"}
        result = CliRunner(env=env).invoke(app, ["run", str(plan), "-m", "openai:conc8"])
    assert result.exit_code == 0, result.output
    cost = [line for line in result.stdout.splitlines() if line.startswith("cost:")]
    # The subtask and the aggregate step: each said it cost $0.50.
    assert cost == ["cost: $1.0000, as the gateway reported it"], result.stdout


def test_an_unpriced_model_is_named_once_in_the_cli_summary(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"task": "t", "subtasks": [{"id": "a", "prompt": "hi"}]}))
    with SimServer(SimServerConfig()) as srv:
        env = {"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": "sk-test", "COLUMNS": "200"}
        result = CliRunner(env=env).invoke(app, ["run", str(plan), "-m", "openai:conc8"])
    assert result.exit_code == 0, result.output
    cost = [line for line in result.stdout.splitlines() if line.startswith("cost:")]
    assert cost == ["cost: $0 + unknown (no price for conc8)"], result.stdout


# -- timeouts behind a gateway -----------------------------------------------------------


@pytest.mark.parametrize("earlier_429s", [0, 2])
async def test_a_timeout_after_429s_says_the_gateway_may_be_retrying(earlier_429s: int) -> None:
    config = SimServerConfig(stall_rate=1.0, stall_seconds=2.0)
    with SimServer(config) as srv:
        limiter = RateLimiter()
        for _ in range(earlier_429s):
            limiter.record_rate_limited()
        graph = compile_plan(
            plan_of(1),
            model=model_for(srv, timeout=0.2),
            aggregator=None,
            retry=RetryPolicy(max_attempts=1),
            rate_limiter=limiter,
        )
        final, _ = await run(graph)
    error = final["results"]["s0"].error or ""
    assert "timed out" in error.lower(), error
    if earlier_429s:
        assert "answered 2 429s" in error and "num_retries: 0" in error, error
    else:
        assert "num_retries" not in error, error
