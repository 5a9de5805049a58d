"""A goal run's planner as a step of the run, against the loopback server: its tokens and
cost in the totals, its budget and cache, and subtasks that start while the plan streams
(json_schema, function calling and JSON text replies)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from fanfold import EVENT_TYPE, TaskPlan
from fanfold.graphs.goal import compile_goal
from fanfold.graphs.planner_step import PlannerBudgetError
from fanfold.planning import PlannerError
from fanfold.planning.stream import PlanScanner
from fanfold.testing import SimServer, SimServerConfig

GOAL = "Write a short brief on tidal power"
PLANNER = "Plan this goal"  # in the planner's first request only
RETRY = "That plan was rejected"  # in the planner's retry request only
PRICES = {"sim-model": {"input": 1.0, "output": 2.0}}

PLAN = {
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


class FunctionCallingOpenAI(ChatOpenAI):
    """ChatOpenAI whose structured output is a function call (as many providers' is)."""

    def with_structured_output(self, schema: Any = None, **kwargs: Any) -> Any:
        kwargs["method"] = "function_calling"
        return super().with_structured_output(schema, **kwargs)


@contextmanager
def serving(**knobs: Any) -> Iterator[SimServer]:
    with SimServer(SimServerConfig(**knobs)) as srv:
        yield srv


def model_for(srv: SimServer, cls: type[ChatOpenAI] = ChatOpenAI) -> ChatOpenAI:
    return cls(model="sim-model", base_url=srv.base_url, api_key="sk-test", max_retries=0)


def run_goal(graph: Any, **input: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Invoke the goal graph; return its final state and its lifecycle events."""
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    for namespace, mode, chunk in graph.stream(
        {"goal": GOAL, **input}, stream_mode=["custom", "values"], subgraphs=True
    ):
        if mode == "custom" and chunk.get("type") == EVENT_TYPE:
            events.append(chunk)
        elif mode == "values" and not namespace:
            final = chunk
    return final, events


def requests_starting(srv: SimServer, text: str) -> int:
    """Requests whose prompt starts with `text` (a dependent's prompt quotes others)."""
    return sum(1 for record in srv.log if record.prompt.startswith(text))


def first(events: list[dict[str, Any]], subtask: str, status: str) -> dict[str, Any]:
    return next(e for e in events if e["subtask"] == subtask and e["status"] == status)


# -- the planner is a step of the run -------------------------------------------------------


def test_the_totals_count_every_token_the_server_answered_planner_included():
    with serving(scripted={PLANNER: PLAN}) as srv:
        graph = compile_goal(model=model_for(srv), prices=PRICES)
        state, events = run_goal(graph)
        answered = srv.tokens_answered
        requests = srv.request_count
    totals = state["totals"]
    assert requests == 5  # planner, three subtasks, aggregate
    assert totals.total_tokens == answered
    assert totals.planner_usage == state["planner_usage"]
    assert totals.planner_usage.total_tokens > 0
    planner_cost = (
        totals.planner_usage.input_tokens * 1.0 + totals.planner_usage.output_tokens * 2.0
    ) / 1e6
    assert totals.planner_cost == pytest.approx(planner_cost)
    assert totals.cost == pytest.approx(
        planner_cost
        + sum(r.cost for r in state["results"].values())
        + (totals.aggregate_cost or 0.0)
    )
    started, succeeded = first(events, "planner", "started"), first(events, "planner", "succeeded")
    assert succeeded["total_tokens"] == totals.planner_usage.total_tokens
    assert succeeded["cost"] == pytest.approx(planner_cost)
    assert succeeded["model"] == "sim-model" and succeeded["attempts"] == 1
    assert started["time"] <= succeeded["time"]


def test_a_repeated_goal_run_makes_no_request(tmp_path: Path):
    with serving(scripted={PLANNER: PLAN}) as srv:
        graph = compile_goal(model=model_for(srv), cache=tmp_path / "cache.db")
        first_state, _ = run_goal(graph)
        made = srv.request_count
        again, events = run_goal(graph)
        assert srv.request_count == made == 5
    assert again["plan"] == first_state["plan"]
    assert again["output"] == first_state["output"]
    assert again["totals"].cached == 5  # planner, three subtasks, aggregate
    assert again["totals"].total_tokens == 0
    assert first(events, "planner", "succeeded")["cached"] is True


def test_a_budget_too_small_for_the_planner_call_stops_before_any_request():
    with serving(scripted={PLANNER: PLAN}) as srv:
        graph = compile_goal(model=model_for(srv), prices=PRICES, budget=0.0001)
        with pytest.raises(PlannerBudgetError, match="does not cover the planner's call"):
            graph.invoke({"goal": GOAL})
        assert srv.request_count == 0


def test_the_planners_call_counts_against_the_budget():
    with serving(scripted={PLANNER: PLAN}, token_delay=0.02) as srv:
        with pytest.raises(PlannerBudgetError) as refused:
            compile_goal(model=model_for(srv), prices=PRICES, budget=0.0).invoke({"goal": GOAL})
        estimate = refused.value.estimate
        # Exactly the planner's estimate: the planner may call, and while its reply
        # streams its estimate is in flight, so no subtask fits beside it.
        graph = compile_goal(model=model_for(srv), prices=PRICES, budget=estimate, aggregator=None)
        state, _ = run_goal(graph)
        assert srv.request_count == 1
    totals = state["totals"]
    assert 0 < totals.planner_cost == totals.cost <= estimate
    assert {r.status for r in state["results"].values()} == {"skipped"}
    assert all(r.error.startswith("budget") for r in state["results"].values())


# -- streamed planning ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "form"),
    [(ChatOpenAI, "auto"), (FunctionCallingOpenAI, "auto"), (FunctionCallingOpenAI, "text")],
    ids=["json_schema", "function_calling", "json_text"],
)
def test_subtasks_start_while_the_plan_still_streams(cls: type[ChatOpenAI], form: str):
    # About 20 pieces 0.05 s apart: the plan takes about a second to arrive.
    with serving(scripted={PLANNER: PLAN}, scripted_form=form, token_delay=0.05) as srv:
        graph = compile_goal(model=model_for(srv, cls), aggregator=None)
        state, events = run_goal(graph)
        log = srv.log
    planned = first(events, "planner", "succeeded")
    facts = first(events, "facts", "started")
    assert facts["time"] < planned["time"]
    assert facts["time"] < first(events, "brief", "started")["time"]
    # brief names both others, so it starts only after both have finished.
    assert first(events, "brief", "started")["time"] >= first(events, "rivals", "succeeded")["time"]
    assert {sid: r.status for sid, r in state["results"].items()} == dict.fromkeys(
        ["facts", "rivals", "brief"], "succeeded"
    )
    assert state["results"]["brief"].output  # committed by the plan's own node
    # One request each: the plan's nodes took the calls the planner had started.
    assert sorted(r.prompt.split()[0] for r in log if not r.prompt.startswith(PLANNER)) == [
        "[brief]",
        "[facts]",
        "[rivals]",
    ]


def test_a_subtask_waits_for_a_dependency_listed_after_it():
    later = {
        "task": PLAN["task"],
        "subtasks": [PLAN["subtasks"][2], PLAN["subtasks"][0], PLAN["subtasks"][1]],
    }
    with serving(scripted={PLANNER: later}, token_delay=0.02) as srv:
        state, events = run_goal(compile_goal(model=model_for(srv), aggregator=None))
    assert first(events, "brief", "started")["time"] >= first(events, "facts", "succeeded")["time"]
    assert state["results"]["brief"].ok


def test_a_rejected_plan_keeps_unchanged_subtasks_and_discards_the_rest():
    broken = {
        "task": PLAN["task"],
        "subtasks": [
            PLAN["subtasks"][0],
            {"id": "rivals", "prompt": "[old-rivals] list rivals", "depends_on": []},
            {"id": "brief", "prompt": "[brief] {facts} {missing}", "depends_on": ["missing"]},
        ],
    }
    with serving(scripted={PLANNER: broken, RETRY: PLAN}, token_delay=0.02) as srv:
        graph = compile_goal(model=model_for(srv), aggregator=None)
        state, events = run_goal(graph)
        assert requests_starting(srv, "[facts]") == 1  # kept across the two replies
        assert requests_starting(srv, "[old-rivals]") == 1
        assert requests_starting(srv, "[rivals]") == 1
        assert requests_starting(srv, RETRY) == 1
    planned = first(events, "planner", "succeeded")
    assert planned["attempts"] == 2 and planned["discarded"] == ["rivals"]
    assert first(events, "rivals", "discarded")["time"] <= planned["time"]
    assert state["results"]["rivals"].ok
    assert state["results"]["rivals"].output != "[old-rivals]"
    assert [s["id"] for s in state["plan"]["subtasks"]] == ["facts", "rivals", "brief"]


def test_a_dependency_never_listed_is_a_plan_error_and_its_started_calls_are_cancelled():
    broken = {
        "task": PLAN["task"],
        "subtasks": [
            PLAN["subtasks"][0],
            {"id": "brief", "prompt": "[brief] {facts} {missing}", "depends_on": ["missing"]},
        ],
    }
    with serving(scripted={PLANNER: broken}, token_delay=0.02, latency=0.5) as srv:
        graph = compile_goal(model=model_for(srv), aggregator=None, attempts=1)
        events: list[dict[str, Any]] = []
        with pytest.raises(PlannerError, match="missing"):
            for _, chunk in graph.stream({"goal": GOAL}, stream_mode=["custom"], subgraphs=False):
                events.append(chunk)
        assert requests_starting(srv, "[brief]") == 0
    statuses = [(e["subtask"], e["status"]) for e in events]
    assert ("facts", "started") in statuses and ("facts", "discarded") in statuses
    assert ("facts", "succeeded") not in statuses  # cancelled mid-call
    assert statuses[-1] == ("planner", "failed")


def test_a_plan_reviewed_before_run_plan_starts_nothing_while_it_streams():
    from langgraph.checkpoint.memory import InMemorySaver

    with serving(scripted={PLANNER: PLAN}, token_delay=0.01) as srv:
        graph = compile_goal(model=model_for(srv), aggregator=None, checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": "review"}}
        graph.invoke({"goal": GOAL}, config, interrupt_before=["run_plan"])
        time.sleep(0.1)
        assert srv.request_count == 1  # the planner only
        state = graph.invoke(None, config)
        assert srv.request_count == 4
    assert TaskPlan.model_validate(state["plan"]).ids == ["facts", "rivals", "brief"]


def test_the_scanner_hands_out_an_object_only_once_its_closing_brace_arrives():
    text = '{"task": "T", "subtasks": [{"id": "a", "prompt": "x}"}, {"id": "b", "prompt": "y'
    scanner = PlanScanner()
    for end in range(1, len(text) + 1):
        scanner.feed(text[:end])
    assert scanner.task == "T"
    assert scanner.subtasks == [{"id": "a", "prompt": "x}"}]
    assert scanner.feed(text + '"}]}') == [{"id": "b", "prompt": "y"}]
