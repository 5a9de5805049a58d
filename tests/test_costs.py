"""Cost: the price table, per-call and per-model cost, and where the CLI shows it.

HTTP paths drive the real ChatOpenAI against fanfold's loopback `SimServer`, whose usage
is deterministic per prompt, so every figure is checked against the usage it came from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fanfold import (
    DEFAULT_PRICES,
    KindOutput,
    NodeKindRegistry,
    Price,
    PriceError,
    PriceTable,
    SimulatedChatModel,
    TokenUsage,
    compile_plan,
    load_prices,
    resolve_model,
)
from fanfold.cli import app
from fanfold.nodes.builtin_kinds import run_llm
from fanfold.testing import SimServer, SimServerConfig

API_KEY = "sk-test-costs-0123456789"
PRICE_IN, PRICE_OUT = 100.0, 400.0
"""USD per 1M tokens for `sim-model` in these tests: large, so costs are easy to read."""
SIM_PRICES = {"sim-model": {"input": PRICE_IN, "output": PRICE_OUT}}


@pytest.fixture
def server():
    with SimServer(SimServerConfig(api_key=API_KEY)) as srv:
        yield srv


def sim_model(srv: SimServer) -> Any:
    return resolve_model("openai:sim-model", base_url=srv.base_url, api_key=API_KEY)


def priced(usage: TokenUsage) -> float:
    return (usage.input_tokens * PRICE_IN + usage.output_tokens * PRICE_OUT) / 1e6


PLAN = {
    "task": "Write about tea",
    "subtasks": [
        {"id": "a", "prompt": "Name a green tea"},
        {"id": "b", "prompt": "Name a black tea"},
        {"id": "c", "prompt": "Compare {a} and {b}", "depends_on": ["a", "b"]},
    ],
}


def events_of(graph: Any, payload: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    for mode, chunk in graph.stream(payload, stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(chunk)
        else:
            final = chunk
    return final, events


# -- the table ------------------------------------------------------------------------------


def test_default_prices_cover_common_openai_models_and_the_free_simulated_model():
    for model in (
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3-mini",
        "o4-mini",
        "gpt-3.5-turbo",
    ):
        price = DEFAULT_PRICES[model]
        assert price.input > 0 and price.output >= price.input, model
    assert DEFAULT_PRICES["simulated"] == Price(0.0, 0.0)
    assert DEFAULT_PRICES["gpt-4o-mini"] == Price(0.15, 0.60)


def test_a_provider_prefix_and_a_dated_snapshot_get_the_models_price_but_a_sibling_does_not():
    table = PriceTable()
    assert table.price("openai:gpt-4o") == DEFAULT_PRICES["gpt-4o"]
    assert table.price("gpt-4o-2024-08-06") == DEFAULT_PRICES["gpt-4o"]
    assert table.price("gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert table.price("gpt-4o-audio") is None
    assert table.price("sim-model") is None


def test_given_prices_override_a_default_and_add_a_model():
    table = PriceTable({"gpt-4o": {"input": 1, "output": 2}, **SIM_PRICES})
    assert table.price("gpt-4o") == Price(1.0, 2.0)
    assert table.price("sim-model") == Price(PRICE_IN, PRICE_OUT)
    assert table.price("gpt-4o-mini") == DEFAULT_PRICES["gpt-4o-mini"]  # the rest stay


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_prices_file_is_read_as_yaml_or_json(tmp_path: Path, suffix: str):
    path = tmp_path / f"prices{suffix}"
    path.write_text(json.dumps(SIM_PRICES), encoding="utf-8")  # JSON is YAML too
    assert load_prices(path) == {"sim-model": Price(PRICE_IN, PRICE_OUT)}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("sim-model: {input: 1}", "'output'"),
        ("sim-model: {input: -1, output: 1}", "at least 0"),
        ("sim-model: {input: 1, output: 1, cached: 0.5}", "unknown keys"),
        ("sim-model: 3", "must be a mapping"),
        ("[1, 2]", "must hold a mapping"),
        ("sim-model: {input: [", "not valid YAML"),
    ],
)
def test_an_invalid_prices_file_is_a_price_error_that_names_the_problem(
    tmp_path: Path, text: str, needle: str
):
    path = tmp_path / "prices.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PriceError, match="prices file") as caught:
        load_prices(path)
    assert needle in str(caught.value)


def test_a_total_without_its_split_is_unknown_unless_both_directions_cost_the_same():
    total_only = TokenUsage(total_tokens=1000)
    assert PriceTable().cost("gpt-4o", total_only) is None
    assert PriceTable().cost("simulated", total_only) == 0.0


# -- per call, per map, per model ---------------------------------------------------------------


def test_each_result_costs_its_reported_usage_at_the_models_price(server: SimServer):
    graph = compile_plan(PLAN, model=sim_model(server), prices=SIM_PRICES)
    state, events = events_of(graph, {"inputs": {}})
    results = state["results"]
    for sid in ("a", "b", "c"):
        usage = results[sid].usage
        assert usage.input_tokens > 0 and usage.output_tokens > 0
        assert results[sid].cost == pytest.approx(priced(usage))
    totals = state["totals"]
    assert totals.aggregate_cost == pytest.approx(priced(totals.aggregate_usage))
    expected = sum(priced(results[s].usage) for s in "abc") + priced(totals.aggregate_usage)
    assert totals.cost == pytest.approx(expected)
    assert totals.cost_by_model == {"sim-model": pytest.approx(expected)}
    assert totals.unknown_cost_models == []
    finished = {e["subtask"]: e for e in events if e["status"] == "succeeded"}
    assert finished["c"]["cost"] == pytest.approx(results["c"].cost)


def test_a_model_without_a_price_costs_unknown_never_zero(server: SimServer):
    graph = compile_plan(PLAN, model=sim_model(server))
    state, events = events_of(graph, {"inputs": {}})
    assert all(r.cost is None for r in state["results"].values())
    totals = state["totals"]
    assert totals.cost is None
    assert totals.known_cost == 0.0
    assert totals.cost_by_model == {"sim-model": None}
    assert totals.unknown_cost_models == ["sim-model"]
    finished = [e for e in events if e["status"] == "succeeded"]
    assert finished and all("cost" in e and e["cost"] is None for e in finished)


def test_the_simulated_model_costs_zero_and_is_known(simulated: SimulatedChatModel):
    state = compile_plan(PLAN, model=simulated).invoke({"inputs": {}})
    assert all(r.cost == 0.0 for r in state["results"].values())
    assert state["totals"].cost == 0.0
    assert state["totals"].cost_by_model == {"simulated": 0.0}


def test_a_failed_call_event_carries_its_cost(server: SimServer):
    server.update(fail_prompts={"black tea": 400})
    graph = compile_plan(PLAN, model=sim_model(server), prices=SIM_PRICES)
    state, events = events_of(graph, {"inputs": {}})
    assert state["results"]["b"].status == "failed"
    failed = [e for e in events if e["subtask"] == "b" and e["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["cost"] == 0.0  # no usage reported: nothing billed
    skipped = state["results"]["c"]
    assert skipped.status == "skipped" and skipped.cost == 0.0


def test_per_model_totals_keep_a_priced_and_an_unpriced_model_apart(server: SimServer):
    plan = {
        "task": "Two models",
        "subtasks": [
            {"id": "paid", "prompt": "Name a green tea", "model": sim_model(server)},
            {"id": "free", "prompt": "Name a black tea", "model": SimulatedChatModel(latency=0)},
            {
                "id": "mystery",
                "prompt": "Name a white tea",
                "model": SimulatedChatModel(latency=0, model_name="mystery-model"),
            },
        ],
    }
    state = compile_plan(plan, model="simulated", prices=SIM_PRICES, aggregator=None).invoke(
        {"inputs": {}}
    )
    totals = state["totals"]
    paid = priced(state["results"]["paid"].usage)
    assert totals.cost_by_model == {
        "sim-model": pytest.approx(paid),
        "simulated": 0.0,
        "mystery-model": None,
    }
    assert totals.cost is None and totals.known_cost == pytest.approx(paid)
    assert totals.unknown_cost_models == ["mystery-model"]


def test_a_maps_cost_adds_up_its_items_and_is_unknown_when_one_item_is(server: SimServer):
    # A model kind whose reply for item 1 reports a total without its input/output split.
    kinds = NodeKindRegistry()

    async def sometimes_unsplit(call: Any) -> KindOutput:
        out = await run_llm(call)
        if call.index == 1:
            return KindOutput(out.output, TokenUsage(total_tokens=out.usage.total_tokens))
        return out

    kinds.register("llm", run_llm, needs_model=True)
    kinds.register("odd", sometimes_unsplit, needs_model=True)
    plan = {
        "task": "Teas",
        "inputs": {"teas": {"default": ["sencha", "assam", "darjeeling"]}},
        "subtasks": [
            {"id": "each", "prompt": "Describe {item}", "map": "teas"},
            {"id": "odd_each", "prompt": "Describe {item} oddly", "map": "teas", "kind": "odd"},
        ],
    }
    graph = compile_plan(
        plan, model=sim_model(server), prices=SIM_PRICES, kinds=kinds, aggregator=None
    )
    results = graph.invoke({"inputs": {}})["results"]
    each = results["each"]
    assert each.items is not None and len(each.items) == 3
    assert each.cost == pytest.approx(sum(priced(i.usage) for i in each.items))
    odd = results["odd_each"]
    assert odd.items is not None and odd.items[1].cost is None
    assert odd.items[0].cost == pytest.approx(priced(odd.items[0].usage))
    assert odd.cost is None


# -- the command line -----------------------------------------------------------------------------


def cli(srv: SimServer, *args: str) -> Any:
    env = {"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": API_KEY, "COLUMNS": "200"}
    return CliRunner(env=env).invoke(app, [*args])


def write_plan(tmp_path: Path) -> Path:
    path = tmp_path / "tea.json"
    path.write_text(json.dumps(PLAN), encoding="utf-8")
    return path


def write_prices(path: Path, prices: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(prices), encoding="utf-8")
    return path


def test_cli_json_shows_each_results_cost_and_the_totals_per_model(
    server: SimServer, tmp_path: Path
):
    prices = write_prices(tmp_path / "prices.json", SIM_PRICES)
    args = ["run", str(write_plan(tmp_path)), "-m", "openai:sim-model", "--json"]
    result = cli(server, *args, "--prices", str(prices), "--no-cache")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for sid, entry in report["results"].items():
        assert entry["cost"] == pytest.approx(priced(TokenUsage(**entry["usage"]))), sid
        assert entry["cached"] is False
    totals = report["totals"]
    assert totals["cost"] == pytest.approx(totals["cost_by_model"]["sim-model"])
    assert totals["cost"] > sum(e["cost"] for e in report["results"].values())  # + aggregate
    assert totals["unknown_cost_models"] == []


def test_cli_report_prints_each_cost_and_the_total(server: SimServer, tmp_path: Path):
    prices = write_prices(tmp_path / "prices.json", SIM_PRICES)
    plan = write_plan(tmp_path)
    result = cli(server, "run", str(plan), "-m", "openai:sim-model", "--prices", str(prices))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    line_of = {line.split()[-1]: line for line in lines if line.startswith("  succeeded")}
    assert set(line_of) == {"a", "b", "c"}
    assert all("$0.0" in line for line in line_of.values())
    cost = [line for line in lines if line.startswith("cost: $")]
    assert len(cost) == 1, result.stdout


def test_cli_says_unknown_for_a_model_without_a_price(server: SimServer, tmp_path: Path):
    result = cli(server, "run", str(write_plan(tmp_path)), "-m", "openai:sim-model")
    assert result.exit_code == 0, result.output
    assert "cost: $0 + unknown (no price for sim-model)" in result.stdout
    assert result.stdout.count("cost unknown") == 3


def test_the_home_prices_file_is_read_and_prices_overrides_it(server: SimServer, tmp_path: Path):
    home = Path(os.environ["FANFOLD_HOME"])
    write_prices(home / "prices.yaml", {"sim-model": {"input": 1.0, "output": 1.0}})
    plan = write_plan(tmp_path)
    from_home = cli(server, "run", str(plan), "-m", "openai:sim-model", "--json", "--no-cache")
    totals = json.loads(from_home.stdout)["totals"]
    tokens = totals["usage"]["total_tokens"] + totals["aggregate_usage"]["total_tokens"]
    assert totals["cost"] == pytest.approx(tokens / 1e6)

    prices = write_prices(tmp_path / "prices.json", SIM_PRICES)
    overridden = cli(
        server,
        "run",
        str(plan),
        "-m",
        "openai:sim-model",
        "--json",
        "--no-cache",
        "--prices",
        str(prices),
    )
    totals = json.loads(overridden.stdout)["totals"]
    assert totals["cost"] > tokens / 1e6 * 50


def test_a_bad_prices_file_is_one_error_line_and_nothing_runs(server: SimServer, tmp_path: Path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("sim-model: {input: cheap, output: 1}\n", encoding="utf-8")
    result = cli(
        server, "run", str(write_plan(tmp_path)), "-m", "openai:sim-model", "--prices", str(prices)
    )
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "'input'" in lines[0]
    assert server.request_count == 0


def test_run_report_html_prices_the_calls_with_the_runs_prices(server: SimServer, tmp_path: Path):
    prices = write_prices(tmp_path / "prices.json", SIM_PRICES)
    report = tmp_path / "run.html"
    result = cli(
        server,
        "run",
        str(write_plan(tmp_path)),
        "-m",
        "openai:sim-model",
        "--prices",
        str(prices),
        "--report",
        str(report),
    )
    assert result.exit_code == 0, result.output
    html = report.read_text(encoding="utf-8")
    assert 'data-cost="unknown"' not in html
    assert html.count('class="num cost" data-cost="') >= 4  # a, b, c and the aggregate
