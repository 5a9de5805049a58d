"""The README's worked custom kind (examples/custom_kind/web_api.py) against a loopback API."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web

from fanfold import (
    EVENT_TYPE,
    InvalidOptionsError,
    KindOutput,
    NodeKindRegistry,
    SubtaskCall,
    TokenUsage,
    compile_plan,
    node_kinds,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_kind" / "web_api.py"
RATES = {"EUR": {"USD": 1.08, "JPY": 162.0}, "USD": {"EUR": 0.93, "JPY": 150.0}}


@pytest.fixture(scope="module")
def web_api() -> Iterator[ModuleType]:
    """The example module, imported once (it registers `http_json`), unregistered after."""
    spec = importlib.util.spec_from_file_location("fanfold_example_web_api", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        node_kinds.unregister("http_json")


class RatesAPI:
    """An exchange-rate API on loopback: `/rates/{code}`; answers 503 to chosen first tries."""

    def __init__(self, *, unavailable_once: frozenset[str] = frozenset()) -> None:
        self.unavailable_once = set(unavailable_once)
        self.requests: list[str] = []

    async def rates(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        self.requests.append(code)
        if code in self.unavailable_once:
            self.unavailable_once.discard(code)
            return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "0"})
        if code not in RATES:
            return web.json_response({"error": f"unknown currency {code}"}, status=404)
        return web.json_response({"base": code, "rates": RATES[code]})


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(api: RatesAPI) -> str:
        app = web.Application()
        app.router.add_get("/rates/{code}", api.rates)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_the_web_api_kind_fetches_each_item_and_feeds_the_llm_subtask(web_api, serve, capsys):
    api = RatesAPI()
    final = await web_api.main(await serve(api), ["EUR", "USD"])
    rates = final["results"]["rates"]
    assert rates.status == "succeeded"
    assert rates.output == [{"base": code, "rates": RATES[code]} for code in ("EUR", "USD")]
    assert sorted(api.requests) == ["EUR", "USD"]
    assert final["results"]["advice"].status == "succeeded"
    assert final["output"]
    printed = capsys.readouterr().out
    assert "'status': 200" in printed and final["output"] in printed


async def test_the_web_api_kind_is_retried_on_503_with_its_attempt_counted(web_api, serve):
    api = RatesAPI(unavailable_once={"USD"})
    graph = compile_plan(web_api.PLAN, model="simulated")
    inputs = {"api": await serve(api), "currencies": ["EUR", "USD"]}
    kind_events, lifecycle = [], []
    async for mode, chunk in graph.astream({"inputs": inputs}, stream_mode=["custom", "values"]):
        if mode == "custom" and chunk["type"] == web_api.EVENT:
            kind_events.append(chunk)
        elif mode == "custom" and chunk["type"] == EVENT_TYPE:
            lifecycle.append(chunk)
        elif mode == "values":
            final = chunk
    usd = final["results"]["rates"].items[1]
    assert usd.status == "succeeded" and usd.attempts == 2
    assert api.requests.count("USD") == 2
    usd_starts = [e for e in kind_events if e["index"] == 1 and "url" in e]
    assert [e["attempt"] for e in usd_starts] == [1, 2]
    assert usd_starts[0]["url"].endswith("/rates/USD")
    (retrying,) = [e for e in lifecycle if e["status"] == "retrying"]
    assert retrying["id"] == "rates[1]" and "503" in retrying["error"]


async def test_an_unknown_currency_fails_its_item_at_once_and_skips_the_dependent(web_api, serve):
    api = RatesAPI()
    graph = compile_plan(web_api.PLAN, model="simulated")
    inputs = {"api": await serve(api), "currencies": ["EUR", "XXX"]}
    final = await graph.ainvoke({"inputs": inputs})
    rates = final["results"]["rates"]
    assert rates.status == "failed"
    assert "404" in (rates.items[1].error or "")
    assert api.requests.count("XXX") == 1  # a 404 is not retried
    assert final["results"]["advice"].status == "skipped"


def test_the_web_api_kind_rejects_an_unknown_option_when_compiled(web_api):
    plan = {
        **web_api.PLAN,
        "subtasks": [{**web_api.PLAN["subtasks"][0], "options": {"retries": 3}}],
    }
    with pytest.raises(InvalidOptionsError, match="'retries'"):
        compile_plan(plan, model="simulated")


def test_a_kind_without_a_model_needs_no_model_or_key(web_api, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    plan = {**web_api.PLAN, "subtasks": [web_api.PLAN["subtasks"][0]]}
    graph = compile_plan(plan, aggregator=None)  # the default OpenAI model is never built
    assert graph.fanfold_runtime is not None
    assert graph.fanfold_runtime.models == {"rates": None}


async def test_a_kind_reporting_input_and_output_tokens_counts_their_sum(make_plan):
    registry = NodeKindRegistry()

    @registry.register("counted")
    async def counted(call: SubtaskCall) -> KindOutput:
        return KindOutput("done", TokenUsage(input_tokens=30, output_tokens=12))

    plan = make_plan({"a": [], "b": []})
    for sub in plan.subtasks:
        sub.kind = "counted"
    state = await compile_plan(plan, kinds=registry, aggregator=None).ainvoke({"inputs": {}})
    assert state["results"]["a"].usage.total_tokens == 42
    assert state["totals"].usage.total_tokens == 84
