"""Replanning a goal run against the loopback server: a judge call after the aggregate
decides "done" or "replan"; a replan may use earlier results as inputs and keeps the
result of a subtask it repeats unchanged (no second request)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from typer.testing import CliRunner

from fanfold import EVENT_TYPE, SubtaskResult, TaskPlan
from fanfold.cli import app
from fanfold.graphs.goal import compile_goal
from fanfold.graphs.goal_rounds import JudgeStep
from fanfold.scheduling.costs import PriceTable
from fanfold.testing import SimServer, SimServerConfig

GOAL = "Write a short brief on tidal power"
PRICES = {"sim-model": {"input": 1.0, "output": 2.0}}
REPLANNER = "The judge asked for another plan"  # in a replanning planner's request only
PLANNER = "Plan this goal"  # in every planner request
REASON = "the brief says nothing about costs"

FIRST = {
    "task": "Brief on tidal power",
    "subtasks": [
        {"id": "facts", "prompt": "[facts] list facts about tidal power", "depends_on": []},
        {"id": "rivals", "prompt": "[rivals] list rival energy sources", "depends_on": []},
        {
            "id": "brief",
            "prompt": "[brief] combine\n{facts}\n{rivals}",
            "depends_on": ["facts", "rivals"],
        },
    ],
}
SECOND = {
    "task": "Brief on tidal power",
    "subtasks": [
        FIRST["subtasks"][0],  # unchanged: keeps its result
        {"id": "costs", "prompt": "[costs] add costs to this brief\n{r1_brief}", "depends_on": []},
        {
            "id": "final",
            "prompt": "[final] combine\n{facts}\n{costs}",
            "depends_on": ["facts", "costs"],
        },
    ],
}
SCRIPT = {
    REPLANNER: SECOND,  # checked first: a replanning request also says "Plan this goal"
    PLANNER: FIRST,
    "Judge round 1 ": {"decision": "replan", "reason": REASON},
    "Judge round 2 ": {"decision": "done", "reason": "costs are covered now"},
}


@contextmanager
def serving(**knobs: Any) -> Iterator[SimServer]:
    with SimServer(SimServerConfig(scripted=SCRIPT, **knobs)) as srv:
        yield srv


def model_for(srv: SimServer) -> ChatOpenAI:
    return ChatOpenAI(model="sim-model", base_url=srv.base_url, api_key="sk-test", max_retries=0)


def run_goal(graph: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    for namespace, mode, chunk in graph.stream(
        {"goal": GOAL}, stream_mode=["custom", "values"], subgraphs=True
    ):
        if mode == "custom" and chunk.get("type") == EVENT_TYPE:
            events.append(chunk)
        elif mode == "values" and not namespace:
            final = chunk
    return final, events


def requests_starting(srv: SimServer, text: str) -> int:
    return sum(1 for record in srv.log if record.prompt.startswith(text))


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "plan_then_run"])
def test_a_judge_that_asks_once_replans_once_and_reuses_the_unchanged_subtask(streamed: bool):
    with serving() as srv:
        graph = compile_goal(model=model_for(srv), prices=PRICES, replan=2, streamed=streamed)
        state, events = run_goal(graph)
        prompts = [record.prompt for record in srv.log]
        answered = srv.tokens_answered
    # planner x2, judge x2, round 1: three subtasks + aggregate, round 2: two + aggregate
    assert len(prompts) == 11
    assert sum(REPLANNER in p for p in prompts) == 1
    assert sum(p.startswith("Judge round") for p in prompts) == 2
    assert requests_starting_in(prompts, "[facts]") == 1  # repeated unchanged: reused
    assert requests_starting_in(prompts, "[costs]") == 1
    # The new plan used round 1's brief as an input.
    brief = state["rounds"][0]["results"]["brief"]["output"]
    costs_prompt = next(p for p in prompts if p.startswith("[costs]"))
    assert brief and brief in costs_prompt

    rounds = state["rounds"]
    assert [(r["round"], r["decision"]) for r in rounds] == [(1, "replan"), (2, "done")]
    assert rounds[0]["reason"] == REASON and rounds[0]["judged"] and rounds[1]["judged"]
    assert [s["id"] for s in rounds[0]["plan"]["subtasks"]] == ["facts", "rivals", "brief"]
    assert state["plan"] == rounds[1]["plan"]
    assert [s["id"] for s in state["plan"]["subtasks"]] == ["facts", "costs", "final"]
    results = state["results"]
    assert {sid: r.status for sid, r in results.items()} == dict.fromkeys(
        ["facts", "costs", "final"], "succeeded"
    )
    assert results["facts"].cached and results["facts"].usage.total_tokens == 0
    assert results["facts"].output == rounds[0]["results"]["facts"]["output"]

    totals = state["totals"]
    assert totals.rounds == 2
    assert totals.total_tokens == answered  # every request counted once
    assert totals.judge_usage.total_tokens > 0 and totals.judge_cost > 0
    assert totals.earlier_usage.total_tokens > 0
    billed = totals.planner_usage + totals.judge_usage + totals.earlier_usage
    billed = billed + totals.usage + totals.aggregate_usage
    assert totals.cost == pytest.approx(
        (billed.input_tokens * 1.0 + billed.output_tokens * 2.0) / 1e6
    )

    judged = [e for e in events if e["subtask"] == "judge" and e["status"] == "succeeded"]
    assert [(e["round"], e["decision"]) for e in judged] == [(1, "replan"), (2, "done")]
    assert judged[0]["reason"] == REASON and judged[0]["cost"] > 0
    planned = [e for e in events if e["subtask"] == "planner" and e["status"] == "succeeded"]
    assert [e.get("round", 1) for e in planned] == [1, 2]
    assert not [e for e in events if e["subtask"] == "facts" and e["status"] == "started"][1:]


def requests_starting_in(prompts: list[str], text: str) -> int:
    return sum(1 for p in prompts if p.startswith(text))


def test_replan_stops_after_n_rounds_without_a_judge_call_for_the_last():
    script = {**SCRIPT, "Judge round 2 ": {"decision": "replan", "reason": "still not"}}
    with SimServer(SimServerConfig(scripted=script)) as srv:
        graph = compile_goal(model=model_for(srv), replan=1)
        state, _ = run_goal(graph)
        judge_calls = sum(1 for r in srv.log if r.prompt.startswith("Judge round"))
    assert judge_calls == 1  # round 2 is the last allowed: no second judge call
    assert [(r["round"], r["decision"], r["judged"]) for r in state["rounds"]] == [
        (1, "replan", True),
        (2, "done", False),
    ]


def test_a_budget_spent_so_far_that_cannot_cover_the_judge_makes_no_judge_call():
    plan = TaskPlan.model_validate(FIRST)
    results = {
        sid: SubtaskResult(id=sid, status="succeeded", output=f"{sid} done") for sid in plan.ids
    }
    events: list[dict[str, Any]] = []
    with serving() as srv:
        judge = JudgeStep(model=model_for(srv), prices=PriceTable(PRICES), budget=0.01)

        def judged(spent: float) -> Any:
            return asyncio.run(
                judge.run(
                    GOAL,
                    round_number=1,
                    plan=plan,
                    results=results,
                    output="the brief",
                    spent=spent,
                    config={},
                    emit=events.append,
                )  # fmt: skip
            )

        refused = judged(0.00999)
        assert srv.request_count == 0
        asked = judged(0.0)
        assert srv.request_count == 1
    assert (refused.decision, refused.called) == ("done", False)
    assert "budget" in refused.reason and refused.usage.total_tokens == 0
    assert (asked.decision, asked.reason, asked.called) == ("replan", REASON, True)
    assert asked.cost == pytest.approx(
        (asked.usage.input_tokens * 1.0 + asked.usage.output_tokens * 2.0) / 1e6
    )
    assert [e["status"] for e in events] == ["skipped", "started", "succeeded"]


def test_the_cli_shows_each_round_in_the_record_the_events_and_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    report, events = tmp_path / "report.html", tmp_path / "events.jsonl"
    with serving() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("FANFOLD_HOME", str(tmp_path / "home"))
        args = [
            "run", "--goal", GOAL, "-m", "openai:sim-model", "--replan", "1", "--no-cache",
            "--json", "--report", str(report), "--events", str(events),
        ]  # fmt: skip
        result = CliRunner().invoke(app, args)
        requests = srv.request_count
    assert result.exit_code == 0, result.output
    assert requests == 10  # one judge call: round 2 is the last allowed
    record = json.loads(result.stdout)
    assert [(r["round"], r["decision"]) for r in record["rounds"]] == [(1, "replan"), (2, "done")]
    assert record["rounds"][0]["reason"] == REASON
    assert [s["id"] for s in record["plan"]["subtasks"]] == ["facts", "costs", "final"]
    lines = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    judged = [
        (e["round"], e["decision"]) for e in lines if e["subtask"] == "judge" and "decision" in e
    ]
    assert judged == [(1, "replan")]  # round 2 was the last allowed: no judge call
    html = report.read_text(encoding="utf-8")
    assert '<section id="rounds">' in html and 'id="round-2"' in html and REASON in html


def test_replan_applies_only_with_a_goal(research_plan_path: Path):
    result = CliRunner().invoke(app, ["run", str(research_plan_path), "--replan", "1"])
    assert result.exit_code == 1 and "--replan applies only with --goal" in result.stderr


def test_a_repeated_replanning_run_makes_no_request(tmp_path: Path):
    with serving() as srv:
        graph = compile_goal(model=model_for(srv), replan=2, cache=tmp_path / "cache.db")
        first_state, _ = run_goal(graph)
        made = srv.request_count
        again, events = run_goal(graph)
        assert srv.request_count == made == 11
    assert [r["decision"] for r in again["rounds"]] == ["replan", "done"]
    assert again["output"] == first_state["output"]
    assert again["totals"].total_tokens == 0
    judged = [e for e in events if e["subtask"] == "judge" and e["status"] == "succeeded"]
    assert [e.get("cached") for e in judged] == [True, True]
