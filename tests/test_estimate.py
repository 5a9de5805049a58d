"""Estimates before a run: calls, tokens, cost and wall time, with no model called."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fanfold import (
    DEFAULT_PRICES,
    DurationStore,
    PlanEstimate,
    TaskPlan,
    compile_plan,
    estimate_plan,
)
from fanfold.cli import app
from fanfold.drawing import plan_dot
from fanfold.plan.prompts import subtask_messages
from fanfold.testing import SimServer, SimServerConfig

TEA = {
    "task": "Write about tea",
    "inputs": {"teas": {"description": "tea names"}},
    "subtasks": [
        {"id": "a", "prompt": "Name a green tea", "expected_output_tokens": 50},
        {"id": "b", "prompt": "Name a black tea"},
        {"id": "each", "prompt": "Describe {item}", "map": "teas"},
        {"id": "c", "prompt": "Compare {a} and {b}", "depends_on": ["a", "b"]},
        {"id": "fmt", "prompt": "Title: {c}", "depends_on": ["c"], "kind": "template"},
    ],
}
PRICES = {"sim-model": {"input": 100.0, "output": 400.0}}


def by_id(estimate: PlanEstimate) -> dict[str, Any]:
    return {call.id: call for call in estimate.subtasks}


def bare_tokens(plan: dict[str, Any], sid: str) -> int:
    """Tokens of a subtask's messages with no dependency context (chars / 4, rounded up)."""
    task_plan = TaskPlan.model_validate(plan)
    prompt = task_plan.subtask(sid).prompt
    messages = subtask_messages(task_plan.subtask(sid), task=task_plan.task, prompt=prompt)
    return math.ceil(sum(len(str(m.content)) for m in messages) / 4)


def test_a_map_over_an_input_list_counts_one_call_per_item():
    estimate = estimate_plan(TEA, {"teas": ["sencha", "assam", "oolong"]}, model="openai:gpt-4o")
    calls = by_id(estimate)
    assert calls["each"].calls == 3 and calls["each"].items == 3
    assert calls["fmt"].calls == 0 and calls["fmt"].model is None  # a template calls nothing
    assert estimate.calls == 1 + 1 + 3 + 1 + 1  # a, b, each x3, c, the aggregate
    assert estimate.unknown_maps == []


def test_a_map_input_given_as_json_text_counts_its_items_like_the_cli_gives_it():
    estimate = estimate_plan(TEA, {"teas": '["a", "b"]'}, model="openai:gpt-4o")
    assert by_id(estimate)["each"].calls == 2


def test_a_map_whose_list_is_not_known_is_unknown_with_per_item_figures():
    plan = {
        "task": "Split then describe",
        "subtasks": [
            {"id": "list", "prompt": "List teas", "output_schema": {"type": "array"}},
            {"id": "each", "prompt": "Describe {item}", "map": "list"},
        ],
    }
    estimate = estimate_plan(plan, model="openai:gpt-4o")
    each = by_id(estimate)["each"]
    assert each.calls is None and each.cost is None and each.input_tokens is None
    assert each.input_tokens_per_call > 0 and each.cost_per_call is not None
    assert estimate.unknown_maps == ["each"]
    assert "calls unknown, per item:" in "\n".join(estimate.lines())
    # A missing map input is unknown too, and named as missing.
    missing = estimate_plan(TEA, model="openai:gpt-4o")
    assert missing.unknown_maps == ["each"] and missing.missing_inputs == ["teas"]


def test_tokens_are_the_prompt_at_four_characters_a_token_plus_the_expected_reply():
    estimate = estimate_plan(TEA, {"teas": []}, model="openai:gpt-4o")
    calls = by_id(estimate)
    assert calls["a"].input_tokens_per_call == bare_tokens(TEA, "a")
    assert calls["a"].output_tokens_per_call == 50  # its expected_output_tokens
    assert calls["b"].output_tokens_per_call == 256  # the default
    # c's prompt holds a's and b's replies in place of `{a}` and `{b}`: 50 + 256 tokens more.
    grown = calls["c"].input_tokens_per_call - bare_tokens(TEA, "c")
    assert 50 + 256 - 2 <= grown <= 50 + 256
    assert estimate.input_tokens == sum((c.input_tokens or 0) for c in estimate.subtasks) + (
        estimate.aggregate.input_tokens if estimate.aggregate else 0
    )


def test_cost_uses_the_price_table_and_an_unpriced_model_is_unknown():
    estimate = estimate_plan(TEA, {"teas": ["x"]}, model="openai:gpt-4o")
    price = DEFAULT_PRICES["gpt-4o"]
    expected = (estimate.input_tokens * price.input + estimate.output_tokens * price.output) / 1e6
    assert estimate.cost == pytest.approx(expected)
    assert estimate.cost_by_model == {"gpt-4o": pytest.approx(expected)}

    unpriced = estimate_plan(TEA, {"teas": ["x"]}, model="openai:sim-model")
    assert unpriced.cost is None and unpriced.unknown_price_models == ["sim-model"]
    priced = estimate_plan(TEA, {"teas": ["x"]}, model="openai:sim-model", prices=PRICES)
    assert priced.cost is not None and priced.cost > expected


def test_wall_time_plays_out_learned_durations_under_the_concurrency_limit(tmp_path: Path):
    plan = {
        "task": "Durations",
        "subtasks": [
            {"id": "a", "prompt": "A"},
            {"id": "b", "prompt": "B"},
            {"id": "c", "prompt": "C", "depends_on": ["a", "b"]},
        ],
    }
    store = DurationStore(tmp_path / "durations.db")
    store.record(TaskPlan.model_validate(plan).fingerprint(), "sim-model", {"a": 2.0, "b": 3.0})
    free = estimate_plan(plan, model="openai:sim-model", durations=store)
    calls = by_id(free)
    assert (calls["a"].seconds_source, calls["c"].seconds_source) == ("learned", "median")
    assert free.durations == "mixed"
    # b (3 s), then c (the median of what was recorded, 2.5 s), then the aggregate (5 s).
    assert free.wall_time == pytest.approx(3.0 + 2.5 + 5.0)
    assert free.critical_path == ["b", "c", "aggregate"]
    one_at_a_time = estimate_plan(
        plan, model="openai:sim-model", durations=store, max_concurrency=1
    )
    assert one_at_a_time.wall_time == pytest.approx(2.0 + 3.0 + 2.5 + 5.0)


def test_estimate_scheduler_and_drawing_take_durations_in_the_same_order(tmp_path: Path):
    """Issue 15 (2): the estimate took learned before hints and 5 s after; the
    scheduler took hints first and the plan's median; DOT tooltips said 1 s."""
    plan = TaskPlan.model_validate(
        {
            "task": "Durations",
            "subtasks": [
                {"id": "hinted", "prompt": "A", "expected_seconds": 1.0},
                {"id": "long", "prompt": "B"},
                {"id": "tail", "prompt": "C", "depends_on": ["hinted"]},
                {"id": "fresh", "prompt": "D"},
            ],
        }
    )
    store = DurationStore(tmp_path / "durations.db")
    recorded = {"hinted": 9.0, "long": 4.0, "tail": 2.0, "gone": 1.0}
    store.record(plan.fingerprint(), "simulated", recorded)
    graph = compile_plan(plan, model="simulated", durations=store)
    runtime = graph.fanfold_runtime
    estimate = estimate_plan(graph, durations=store)

    seconds = {c.id: c.seconds_per_call for c in estimate.subtasks}
    assert seconds == runtime.expected == {"hinted": 1.0, "long": 4.0, "tail": 2.0, "fresh": 3.0}
    assert [c.seconds_source for c in estimate.subtasks] == ["hint", "learned", "learned", "median"]
    assert estimate.critical_path[:-1] == ["long"]  # 4 s beats hinted + tail (3 s)
    dot = plan_dot(runtime)
    assert "hinted (llm), expected 1.00 s" in dot and "fresh (llm), expected 3.00 s" in dot
    assert "expected 5.00 s" in plan_dot(plan)  # no figures at all: the 5 s default


def test_a_map_under_a_limit_takes_its_items_in_turns():
    plan = {
        "task": "Map",
        "inputs": ["xs"],
        "subtasks": [{"id": "each", "prompt": "{item}", "map": "xs", "expected_seconds": 1.0}],
    }
    estimate = estimate_plan(
        plan, {"xs": list(range(10))}, model="simulated", aggregator=None, max_concurrency=4
    )
    assert estimate.wall_time == pytest.approx(3.0)  # 4 + 4 + 2 items
    assert estimate.aggregate is None


def test_a_compiled_graph_is_estimated_with_its_own_models_and_prices():
    graph = compile_plan(TEA, model="simulated", prices={"simulated": {"input": 1, "output": 1}})
    estimate = estimate_plan(graph, {"teas": ["x"]})
    assert {c.model for c in estimate.subtasks if c.calls} == {"simulated"}
    assert estimate.cost == pytest.approx(estimate.total_tokens / 1e6)


# -- the command line -----------------------------------------------------------------------------


def write(tmp_path: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_fanfold_estimate_needs_no_api_key_and_prints_calls_tokens_cost_and_time(tmp_path: Path):
    plan = write(tmp_path, "tea.json", TEA)
    result = CliRunner().invoke(
        app, ["estimate", str(plan), "-m", "openai:gpt-4o", "-i", 'teas=["x", "y"]']
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "calls: 6" in text
    assert "tokens: " in text and "cost: $" in text and "gpt-4o $" in text
    assert "wall time: ~" in text and "critical path: " in text
    assert "no model was called" in text


def test_run_dry_run_prints_the_estimate_and_sends_no_request(tmp_path: Path):
    plan = write(tmp_path, "tea.json", TEA)
    prices = write(tmp_path, "prices.json", PRICES)
    with SimServer(SimServerConfig()) as srv:
        env = {"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": "sk-test-estimate-123"}
        args = ["-m", "openai:sim-model", "-i", 'teas=["x"]', "--prices", str(prices)]
        dry = CliRunner(env=env).invoke(app, ["run", str(plan), *args, "--dry-run", "--json"])
        same = CliRunner(env=env).invoke(app, ["estimate", str(plan), *args, "--json"])
        assert srv.request_count == 0
    assert dry.exit_code == 0, dry.output
    estimate = PlanEstimate.model_validate_json(dry.stdout)
    assert estimate == PlanEstimate.model_validate_json(same.stdout)
    assert estimate.calls == 5 and estimate.cost is not None and estimate.cost > 0


def test_dry_run_with_a_budget_says_whether_the_estimate_fits(tmp_path: Path):
    plan = write(tmp_path, "tea.json", TEA)
    args = ["run", str(plan), "-m", "openai:gpt-4o", "-i", "teas=[]", "--dry-run"]
    fits = CliRunner().invoke(app, [*args, "--budget", "10"])
    assert fits.exit_code == 0, fits.output
    assert "budget $10.0000: the estimate ($" in fits.stdout and ") fits" in fits.stdout
    passes = CliRunner().invoke(app, [*args, "--budget", "0.0001"])
    assert "passes it" in passes.stdout
    unpriced = CliRunner().invoke(
        app, ["estimate", str(plan), "-m", "openai:sim-model", "--budget", "1"]
    )
    assert "cannot be enforced, no price for sim-model" in unpriced.stdout


def test_dry_run_of_a_goal_is_one_error_line():
    result = CliRunner().invoke(app, ["run", "--goal", "Compare teas", "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --dry-run needs a PLAN file")


# -- splitters and maps over their pieces ---------------------------------------------------

SPLIT = {
    "task": "Read a document",
    "inputs": {"doc": {"description": "a Markdown document"}},
    "subtasks": [
        {
            "id": "parts",
            "prompt": "{doc}",
            "kind": "split_text",
            "options": {"max_tokens": 20, "overlap": 0},
        },
        {"id": "read", "prompt": "Read {item}", "map": "parts", "expected_output_tokens": 10},
        {"id": "digest", "prompt": "Digest {read}", "depends_on": ["read"]},
    ],
}
DOC = "\n\n".join(f"# Part {i}\n\n" + "word " * 30 for i in range(6))


def test_a_splitter_over_a_given_input_is_split_locally_to_count_its_maps_calls():
    from fanfold.nodes.splitters import split_text

    pieces = split_text(DOC, max_tokens=20, overlap=0)
    estimate = estimate_plan(SPLIT, {"doc": DOC}, model="openai:gpt-4o")
    calls = by_id(estimate)
    assert len(pieces) > 6
    assert calls["read"].calls == calls["read"].items == len(pieces)
    assert estimate.unknown_maps == []
    assert "calls unknown" not in "\n".join(estimate.lines())
    assert calls["parts"].calls == 0  # the split itself calls no model
    # Without the document the split is unknown, as before.
    assert estimate_plan(SPLIT, model="openai:gpt-4o").unknown_maps == ["read"]


def test_a_dependent_of_a_map_counts_its_items_one_by_one_as_the_run_renders_them(echo_factory):
    estimate = estimate_plan(SPLIT, {"doc": DOC}, model="openai:gpt-4o", aggregator=None)
    model = echo_factory(replies={"Read": "x" * 40})  # 10 tokens, as expected_output_tokens
    compile_plan(SPLIT, model=model, aggregator=None).invoke({"inputs": {"doc": DOC}})
    call = model.call_for("digest")
    sent = math.ceil(sum(len(str(m.content)) for m in call.messages) / 4)
    assert by_id(estimate)["digest"].input_tokens_per_call == pytest.approx(sent, rel=0.1)


def test_the_aggregates_reply_is_counted_at_its_models_max_tokens():
    model = {"name": "openai:gpt-4o", "max_tokens": 1000}
    estimate = estimate_plan(TEA, {"teas": ["x"]}, model=model)
    assert estimate.aggregate is not None
    assert estimate.aggregate.output_tokens == 1000  # what the run reserves and caps at
    plain = estimate_plan(TEA, {"teas": ["x"]}, model="openai:gpt-4o")
    assert plain.aggregate is not None and plain.aggregate.output_tokens == 256
