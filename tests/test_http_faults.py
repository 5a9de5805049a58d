"""HTTP faults end to end: the real ChatOpenAI (via base_url) against the loopback SimServer.

Every request crosses a real socket, so these tests pin what the one retry layer does with
what a provider actually sends: 429s with retry-after, 5xx, 4xx, stalls, dropped
connections, truncated JSON, and how pacing keeps a hidden rate limit from being hit.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk

from fanfold import SubtaskResult, TaskPlan, compile_plan, resolve_model
from fanfold.models.resolve import DEFAULT_TIMEOUT
from fanfold.scheduling.dispatcher import EVENT_TYPE
from fanfold.scheduling.limits import RateLimiter
from fanfold.scheduling.retry import RetryPolicy
from fanfold.testing import SimServer, SimServerConfig

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.2)
"""Short waits so fault tests stay fast; retry-after values below 0.2 s are still honoured."""


@contextmanager
def serving(**knobs: Any) -> Iterator[SimServer]:
    with SimServer(SimServerConfig(**knobs)) as srv:
        yield srv


def openai_model(srv: SimServer, **kwargs: Any) -> Any:
    """A real ChatOpenAI built by fanfold for the simulated server."""
    return resolve_model(
        "openai:sim-model",
        base_url=srv.base_url,
        api_key=kwargs.pop("api_key", "sk-test-key"),
        **kwargs,
    )


def plan_of(n: int, *, prompts: dict[str, str] | None = None, **fields: Any) -> TaskPlan:
    """`n` independent subtasks s0..s{n-1}, prompt `[sI] do sI` unless given."""
    prompts = prompts or {}
    subtasks = [
        {"id": f"s{i}", "prompt": prompts.get(f"s{i}", f"[s{i}] do s{i}"), **fields}
        for i in range(n)
    ]
    return TaskPlan.model_validate({"task": "Exercise the HTTP faults", "subtasks": subtasks})


def graph_for(
    srv: SimServer,
    plan: TaskPlan,
    *,
    model: Any = None,
    retry: RetryPolicy = FAST,
    rate_limiter: RateLimiter | None = None,
    **options: Any,
) -> Any:
    """compile_plan on the server's model, no aggregation, and a cold limiter of its own."""
    if rate_limiter is None and "requests_per_second" not in options:
        rate_limiter = RateLimiter()
    return compile_plan(
        plan,
        model=model if model is not None else openai_model(srv),
        aggregator=None,
        retry=retry,
        rate_limiter=rate_limiter,
        **options,
    )


async def run_with_events(graph: Any) -> tuple[dict[str, SubtaskResult], list[dict[str, Any]]]:
    """Run to the end; return the results and the lifecycle events."""
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    async for mode, chunk in graph.astream({"inputs": {}}, stream_mode=["custom", "values"]):
        if mode == "values":
            final = chunk
        elif isinstance(chunk, dict) and chunk.get("type") == EVENT_TYPE:
            events.append(chunk)
    return final["results"], events


def assert_all_succeeded(results: dict[str, SubtaskResult], n: int) -> None:
    assert len(results) == n
    failed = {sid: r.error for sid, r in results.items() if not r.ok}
    assert not failed, failed


# -- 429 -------------------------------------------------------------------------------


async def test_429s_from_hidden_concurrency_limit_are_retried_after_retry_after_and_all_succeed():
    n, limit, retry_after = 10, 3, 0.15
    with serving(latency=0.02, rate_limit_concurrency=limit, retry_after_ms=150) as srv:
        # Not adaptive: this test is about the retry layer honouring retry-after, not about
        # pacing (see the adaptive tests below). Attempts are generous because every wave
        # admits only `limit` requests.
        graph = graph_for(
            srv,
            plan_of(n),
            rate_limiter=RateLimiter(adaptive=False),
            retry=RetryPolicy(max_attempts=20, initial_backoff=0.01, max_backoff=0.2),
        )
        results, events = await run_with_events(graph)
        counts = srv.status_counts()
        log = srv.log

    assert_all_succeeded(results, n)
    assert counts[200] == n
    assert counts.get(429, 0) >= n - limit  # the first wave alone overflows the limit
    assert set(counts) == {200, 429}
    assert max(r.attempts for r in results.values()) > 1
    assert sum(r.attempts for r in results.values()) == n + counts[429]
    retrying = [e for e in events if e["status"] == "retrying"]
    assert len(retrying) == counts[429]
    assert all("RateLimit" in e["error"] or "429" in e["error"] for e in retrying)
    assert all(e["delay"] >= retry_after for e in retrying)
    # On the wire: no prompt comes back sooner than retry-after-ms after its 429.
    gaps = []
    for prompt in {rec.prompt for rec in log}:
        times = [(rec.time, rec.outcome) for rec in log if rec.prompt == prompt]
        pairs = zip(times, times[1:], strict=False)
        gaps += [later - t for (t, outcome), (later, _) in pairs if outcome == 429]
    assert gaps and min(gaps) >= retry_after


@pytest.mark.parametrize("header", ["soon", "1.5s", "", "Mon, 99 Foo 2024 25:61:00 GMT"])
async def test_a_429_with_a_malformed_retry_after_is_retried_as_if_it_had_none(header: str):
    with serving(latency=0.02, rate_limit_concurrency=1, retry_after_header=header) as srv:
        graph = graph_for(
            srv,
            plan_of(4),
            rate_limiter=RateLimiter(adaptive=False),
            retry=RetryPolicy(max_attempts=30, initial_backoff=0.01, max_backoff=0.05),
        )
        results, events = await run_with_events(graph)
        counts = srv.status_counts()

    assert_all_succeeded(results, 4)
    assert counts.get(429, 0) >= 1  # the malformed header was really sent and read
    retrying = [e for e in events if e["status"] == "retrying"]
    assert len(retrying) == counts[429]
    assert all(e["delay"] <= 0.05 * 1.5 for e in retrying)  # the policy's own backoff


async def test_a_retry_after_longer_than_max_backoff_fails_that_call_and_pauses_others_briefly():
    # One hour asked for s0; max_backoff is 0.2 s: s0 fails at once with the reason, and
    # the endpoint's pause is capped, so s1 and s2 still run within seconds.
    with serving(latency=0.01, fail_prompts={"[s0]": 429}, retry_after_ms=3_600_000) as srv:
        plan = TaskPlan.model_validate(
            {
                "task": "One subtask is told to wait an hour",
                "subtasks": [
                    {"id": "s0", "prompt": "[s0] do s0", "priority": 10},
                    {"id": "s1", "prompt": "[s1] do s1"},
                    {"id": "s2", "prompt": "[s2] do s2"},
                ],
            }
        )
        graph = graph_for(srv, plan, rate_limiter=RateLimiter(max_concurrency=1))
        results, _ = await asyncio.wait_for(run_with_events(graph), 20)
        asked = srv.requests_for("[s0]")

    assert results["s0"].status == "failed" and results["s0"].attempts == 1 == asked
    error = results["s0"].error or ""
    assert "asked to wait 3600 s" in error and "max_backoff of 0.2 s" in error, error
    assert results["s1"].ok and results["s2"].ok


async def test_the_rate_limiters_pause_after_a_429_is_capped_at_max_pause():
    limiter = RateLimiter(max_concurrency=4)
    limiter.record_rate_limited(3600.0, max_pause=0.1)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(limiter.acquire(), 5)
    limiter.release()
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_the_aggregates_call_is_retried_and_announced_like_a_subtasks():
    # Every prompt's first request gets a 503; its retry succeeds.
    with serving(error_503_rate=1.0, fault_first_attempts_only=True) as srv:
        graph = compile_plan(
            plan_of(2), model=openai_model(srv), retry=FAST, rate_limiter=RateLimiter()
        )
        events: list[dict[str, Any]] = []
        final: dict[str, Any] = {}
        async for mode, chunk in graph.astream({"inputs": {}}, stream_mode=["custom", "values"]):
            if mode == "values":
                final = chunk
            else:
                events.append(chunk)
        counts = srv.status_counts()

    assert final["aggregate_error"] is None and final["output"]
    assert counts == {503: 3, 200: 3}  # two subtasks and the aggregate, each retried once
    steps = [e for e in events if e["subtask"] == "aggregate"]
    assert [e["status"] for e in steps] == ["started", "retrying", "started", "succeeded"]
    assert "503" in steps[1]["error"] and steps[1]["delay"] >= 0
    assert steps[-1]["attempts"] == 2 and steps[-1]["total_tokens"] > 0
    assert final["totals"].aggregate_usage.total_tokens == steps[-1]["total_tokens"]


# -- 5xx -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
async def test_injected_5xx_is_retried_once_and_succeeds_with_two_attempts(status):
    n = 6
    with serving(
        latency=0.005, fault_first_attempts_only=True, **{f"error_{status}_rate": 1.0}
    ) as srv:
        results, events = await run_with_events(graph_for(srv, plan_of(n)))
        counts = srv.status_counts()
        per_prompt = [srv.requests_for(f"[s{i}]") for i in range(n)]

    assert_all_succeeded(results, n)
    assert counts == {status: n, 200: n}
    assert per_prompt == [2] * n
    assert [r.attempts for r in results.values()] == [2] * n
    assert all(r.usage.total_tokens > 0 for r in results.values())
    assert sum(e["status"] == "retrying" for e in events) == n


# -- 4xx: no retry at any layer ---------------------------------------------------------


async def test_400_fails_its_subtask_at_once_with_one_request_while_siblings_succeed():
    with serving(latency=0.005, fail_prompts={"REJECT-ME": 400}) as srv:
        plan = plan_of(4, prompts={"s2": "[s2] REJECT-ME please"})
        results, events = await run_with_events(graph_for(srv, plan))
        rejected_requests = srv.requests_for("REJECT-ME")
        total = srv.request_count

    bad = results["s2"]
    assert bad.status == "failed"
    assert bad.attempts == 1
    assert "400" in bad.error and "REJECT-ME" in bad.error
    assert "gave up" not in bad.error
    assert rejected_requests == 1  # no SDK retries, no LangGraph retries, no fanfold retries
    assert total == 4
    assert not [e for e in events if e["status"] == "retrying"]
    for sid in ("s0", "s1", "s3"):
        assert results[sid].ok, results[sid].error


async def test_401_wrong_api_key_fails_every_subtask_at_once():
    n = 3
    with serving(latency=0.005, api_key="sk-the-right-key-000") as srv:
        model = openai_model(srv, api_key="sk-a-wrong-key-111")
        results, events = await run_with_events(graph_for(srv, plan_of(n), model=model))
        counts = srv.status_counts()

    assert counts == {401: n}
    for result in results.values():
        assert result.status == "failed"
        assert result.attempts == 1
        assert "401" in result.error
    assert not [e for e in events if e["status"] == "retrying"]


# -- transport faults ---------------------------------------------------------------------


async def test_stall_longer_than_client_timeout_is_retried_and_succeeds():
    n = 3
    with serving(
        latency=0.005, stall_rate=1.0, stall_seconds=5.0, fault_first_attempts_only=True
    ) as srv:
        model = openai_model(srv, timeout=0.3)
        assert model.request_timeout == 0.3
        results, events = await run_with_events(graph_for(srv, plan_of(n), model=model))
        counts = srv.status_counts()

    assert_all_succeeded(results, n)
    assert counts == {"stall": n, 200: n}
    assert [r.attempts for r in results.values()] == [2] * n
    retrying = [e for e in events if e["status"] == "retrying"]
    assert len(retrying) == n
    assert all("Timeout" in e["error"] for e in retrying)


async def test_dropped_connections_are_retried_and_succeed():
    n = 4
    with serving(latency=0.005, drop_rate=1.0, fault_first_attempts_only=True) as srv:
        results, _ = await run_with_events(graph_for(srv, plan_of(n)))
        counts = srv.status_counts()

    assert_all_succeeded(results, n)
    assert counts == {"drop": n, 200: n}
    assert [r.attempts for r in results.values()] == [2] * n


async def test_malformed_json_replies_are_retried_and_succeed():
    n = 4
    with serving(latency=0.005, malformed_rate=1.0, fault_first_attempts_only=True) as srv:
        results, _ = await run_with_events(graph_for(srv, plan_of(n)))
        counts = srv.status_counts()

    assert counts["malformed"] == n
    assert_all_succeeded(results, n)
    assert counts == {"malformed": n, 200: n}
    assert [r.attempts for r in results.values()] == [2] * n


async def test_malformed_json_in_a_stream_is_retried_and_succeeds():
    """Streamed ("messages" mode), the SSE parse error carries no response and is retried."""
    n = 4
    with serving(latency=0.005, malformed_rate=1.0, fault_first_attempts_only=True) as srv:
        graph = graph_for(srv, plan_of(n))
        final: dict[str, Any] = {}
        async for mode, chunk in graph.astream({"inputs": {}}, stream_mode=["messages", "values"]):
            if mode == "values":
                final = chunk
        counts = srv.status_counts()

    assert counts == {"malformed": n, 200: n}
    assert_all_succeeded(final["results"], n)
    assert [r.attempts for r in final["results"].values()] == [2] * n


async def test_a_retry_after_a_stream_cut_mid_reply_is_marked_so_the_partial_text_can_be_dropped():
    """Tokens of an attempt cut off mid-stream, then of its retry, each tagged with their
    attempt: the retry's tokens alone are the result (the aggregate's too)."""
    n = 3
    with serving(latency=0.005, drop_rate=1.0, fault_first_attempts_only=True) as srv:
        model = openai_model(srv)
        graph = compile_plan(
            plan_of(n), model=model, aggregator=model, retry=FAST, rate_limiter=RateLimiter()
        )
        text: dict[tuple[str, int], str] = {}
        final: dict[str, Any] = {}
        async for mode, item in graph.astream({"inputs": {}}, stream_mode=["messages", "values"]):
            if mode == "values":
                final = item
                continue
            message, metadata = item
            key = (metadata["langgraph_node"], metadata["fanfold_attempt"])
            text[key] = text.get(key, "") + message.content
        counts = srv.status_counts()

    assert counts == {"drop": n + 1, 200: n + 1}
    results = final["results"]
    assert_all_succeeded(results, n)
    for sid, result in results.items():
        assert result.attempts == 2
        assert text[(sid, 2)] == result.output
        partial = text[(sid, 1)]
        assert partial and result.output.startswith(partial) and partial != result.output
    assert text[("aggregate", 2)] == final["output"]
    assert final["output"].startswith(text[("aggregate", 1)])
    assert {attempt for _, attempt in text} == {1, 2}


# -- the attempt budget ---------------------------------------------------------------------


async def test_subtask_max_attempts_stops_after_exactly_two_requests_and_says_it_gave_up():
    with serving(latency=0.005, error_500_rate=1.0) as srv:
        plan = plan_of(1, max_attempts=2)
        results, events = await run_with_events(graph_for(srv, plan))
        requests = srv.requests_for("[s0]")
        counts = srv.status_counts()

    result = results["s0"]
    assert requests == 2
    assert counts == {500: 2}
    assert result.status == "failed"
    assert result.attempts == 2
    assert "500" in result.error
    assert "gave up after 2 attempts" in result.error
    assert [e["status"] for e in events] == ["started", "retrying", "started", "failed"]


# -- streaming usage -----------------------------------------------------------------------


async def test_streaming_messages_counts_tokens_thanks_to_stream_usage():
    n, reply_tokens = 3, 7
    with serving(latency=0.005, reply_tokens=reply_tokens) as srv:
        model = openai_model(srv)
        assert model.stream_usage is True  # resolve_model asks custom servers for usage
        graph = graph_for(srv, plan_of(n), model=model)
        chunks_by_node: dict[str, int] = {}
        final: dict[str, Any] = {}
        async for mode, item in graph.astream({"inputs": {}}, stream_mode=["messages", "values"]):
            if mode == "values":
                final = item
                continue
            message, metadata = item
            assert isinstance(message, AIMessageChunk)
            node = metadata["langgraph_node"]
            chunks_by_node[node] = chunks_by_node.get(node, 0) + 1

        # Without stream_usage the same streamed run reports no tokens at all.
        bare = graph_for(srv, plan_of(n), model=openai_model(srv, stream_usage=False))
        bare_final: dict[str, Any] = {}
        async for mode, item in bare.astream({"inputs": {}}, stream_mode=["messages", "values"]):
            if mode == "values":
                bare_final = item

    assert set(chunks_by_node) == {f"s{i}" for i in range(n)}
    assert all(count >= reply_tokens for count in chunks_by_node.values())
    results = final["results"]
    assert_all_succeeded(results, n)
    for result in results.values():
        assert result.usage.output_tokens == reply_tokens
        assert result.usage.input_tokens > 0
        assert result.usage.total_tokens == result.usage.input_tokens + reply_tokens
    assert all(r.usage.total_tokens == 0 for r in bare_final["results"].values())


# -- resolve_model ------------------------------------------------------------------------


def test_resolve_model_sets_a_finite_default_timeout_and_no_sdk_retries():
    model = resolve_model("openai:sim-model", base_url="http://127.0.0.1:9/v1", api_key="sk-x")
    assert model.max_retries == 0
    assert model.request_timeout == DEFAULT_TIMEOUT
    assert math.isfinite(DEFAULT_TIMEOUT) and 0 < DEFAULT_TIMEOUT <= 600
    # What the SDK client will actually use.
    client = model.root_async_client
    assert client.max_retries == 0
    assert client.timeout == DEFAULT_TIMEOUT
    assert model.stream_usage is True
    override = resolve_model("openai:sim-model", base_url="http://127.0.0.1:9/v1", timeout=0.3)
    assert override.request_timeout == 0.3
    assert override.root_async_client.timeout == 0.3
    assert override.max_retries == 0


# -- pacing ---------------------------------------------------------------------------------


async def test_requests_per_second_pacing_keeps_hidden_rps_limit_from_being_hit():
    n = 60
    with serving(latency=0.005, rate_limit_rps=50) as srv:
        # compile_plan's own (shared, per-endpoint) limiter; the port makes it fresh.
        graph = graph_for(srv, plan_of(n), requests_per_second=40)
        results, _ = await run_with_events(graph)
        counts = srv.status_counts()

    assert_all_succeeded(results, n)
    assert counts[200] == n
    assert counts.get(429, 0) <= 3  # at most a stray one after an event-loop stall


ADAPTIVE_DEADLINE = 6.0
"""Seconds the adaptive run may take; the hidden limit alone needs about 1.2 s."""


async def test_adaptive_pacing_without_explicit_rps_succeeds_with_bounded_429s():
    n = 60
    with serving(latency=0.02, rate_limit_rps=50) as srv:
        limiter = RateLimiter()  # cold: no rate known, adaptive
        graph = graph_for(srv, plan_of(n), rate_limiter=limiter)
        results, _ = await asyncio.wait_for(run_with_events(graph), ADAPTIVE_DEADLINE)
        counts = srv.status_counts()

    assert_all_succeeded(results, n)
    assert counts[200] == n
    assert counts.get(429, 0) < n


async def test_a_cold_burst_of_429s_sets_the_window_to_what_the_server_admitted():
    """The first wave of 8 meets a burst of 4: the window learns the 4 the server let in."""
    n = 12
    with serving(latency=0.05, rate_limit_rps=20, rate_limit_burst=4) as srv:
        limiter = RateLimiter()
        # Attempts to spare, as in the other 429-heavy tests: the window is the point here.
        retry = RetryPolicy(max_attempts=20, initial_backoff=0.01, max_backoff=0.2)
        graph = graph_for(srv, plan_of(n), rate_limiter=limiter, retry=retry)
        results, _ = await run_with_events(graph)
        counts = srv.status_counts()

    assert_all_succeeded(results, n)
    assert counts[200] == n
    # The burst is met (some 429s) and learned from (the window asserts below); on a busy
    # machine late event-loop wake-ups bunch retries, so the count's bound is loose.
    assert 0 < counts[429] <= 2 * n
    assert limiter.rate_limited == counts[429]
    assert limiter.state.window_cuts >= 1
    assert limiter.window is not None and limiter.window <= 6
