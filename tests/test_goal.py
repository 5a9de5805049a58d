"""compile_goal (plan a goal, then run the plan as a subgraph) and the CLI's `plan` and
`run --goal` commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Overwrite
from pydantic import BaseModel
from typer.testing import CliRunner

import fanfold.graphs.goal as goal_module
import fanfold.planning.planner as planner_module
from fanfold import (
    EVENT_TYPE,
    EmptyPlanError,
    MissingInputError,
    ModelResolutionError,
    PlanError,
    PlanValidationError,
    SimulatedChatModel,
    SubtaskResult,
    TaskPlan,
    TokenUsage,
    UnknownDependencyError,
)
from fanfold.cli import app
from fanfold.graphs.goal import compile_goal
from fanfold.planning import PlannerError, make_plan

SIMULATED_MARK = "[simulated plan]"
GOAL = "Write a short brief on tidal power"
PLANNER_MARKER = "Plan this goal"  # first line of the planner's request
OUTPUT_KEYS = {"goal", "plan", "results", "output", "totals", "aggregate_error", "planner_usage"}

TOPIC_PLAN = {
    "task": "Brief on {topic}",
    "subtasks": [
        {"id": "facts", "prompt": "[facts] facts about {topic}"},
        {"id": "rivals", "prompt": "[rivals] rivals of {topic}"},
        {
            "id": "brief",
            "prompt": "[brief] combine\n{facts}\n{rivals}",
            "depends_on": ["facts", "rivals"],
        },
    ],
}
"""What the scripted planner answers: two independent subtasks and one that joins them."""


def joined(results: dict[str, SubtaskResult]) -> str:
    return " | ".join(f"{sid}={results[sid].output}" for sid in sorted(results))


@pytest.fixture
def planner_echo(echo_factory):
    """An echo model that answers planner requests with TOPIC_PLAN as JSON text."""
    return echo_factory(replies={PLANNER_MARKER: json.dumps(TOPIC_PLAN)})


@pytest.fixture
def refusing_planner(echo_factory):
    """An echo model that never answers a planner request with a plan."""
    return echo_factory(replies={PLANNER_MARKER: "I would rather not plan that."})


def planner_calls(model) -> list:
    return model.calls_for("planner")


def plain(value: Any) -> bool:
    """Whether `value` is JSON-like data only (what a checkpoint may hold)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


# -- invoke --------------------------------------------------------------------------------


def test_invoke_plans_the_goal_then_runs_every_planned_subtask(planner_echo):
    graph = compile_goal(model=planner_echo, inputs={"topic": "the subject"}, aggregator=joined)
    state = graph.invoke({"goal": GOAL, "inputs": {"topic": "tides"}})

    assert set(state) == OUTPUT_KEYS
    assert state["goal"] == GOAL
    assert state["plan"] == TaskPlan.model_validate(state["plan"]).model_dump(mode="json")
    assert [s["id"] for s in state["plan"]["subtasks"]] == ["facts", "rivals", "brief"]
    assert {sid: r.status for sid, r in state["results"].items()} == dict.fromkeys(
        ["facts", "rivals", "brief"], "succeeded"
    )
    assert state["results"]["facts"].output == "echo: [facts] facts about tides"
    assert state["output"] == joined(state["results"])
    assert state["totals"].succeeded == 3 and state["aggregate_error"] is None
    assert isinstance(state["planner_usage"], TokenUsage)
    assert state["planner_usage"].total_tokens > 0
    # The planner saw the goal and the described input, and was called once.
    (request,) = planner_calls(planner_echo)
    assert GOAL in request.human and "- {topic}: the subject" in request.human
    assert sorted(c.node for c in planner_echo.calls if c.node != "planner") == [
        "brief",
        "facts",
        "rivals",
    ]


async def test_ainvoke_plans_and_runs_like_invoke():
    graph = compile_goal(model=SimulatedChatModel(latency=0))
    sync_state = graph.invoke({"goal": GOAL})
    async_state = await graph.ainvoke({"goal": GOAL})
    assert async_state["plan"] == sync_state["plan"]
    assert async_state["plan"]["task"] == f"{SIMULATED_MARK} {GOAL}"
    assert {sid: r.output for sid, r in async_state["results"].items()} == {
        sid: r.output for sid, r in sync_state["results"].items()
    }
    assert async_state["output"] == sync_state["output"]
    assert async_state["planner_usage"] == sync_state["planner_usage"]


def test_planner_model_plans_and_model_runs_the_subtasks(planner_echo, echo_factory):
    runner_model = echo_factory()
    graph = compile_goal(model=runner_model, planner_model=planner_echo, aggregator=None)
    state = graph.invoke({"goal": GOAL, "inputs": {"topic": "kelp"}})
    assert [c.node for c in planner_echo.calls] == ["planner"]
    assert sorted(c.node for c in runner_model.calls) == ["brief", "facts", "rivals"]
    assert state["results"]["rivals"].output == "echo: [rivals] rivals of kelp"


def test_run_input_names_are_offered_to_the_planner(planner_echo):
    graph = compile_goal(model=planner_echo, aggregator=None)
    graph.invoke({"goal": GOAL, "inputs": {"topic": "kelp", "notes": "long text"}})
    (request,) = planner_calls(planner_echo)
    assert "- {topic}\n- {notes}" in request.human
    assert "long text" not in request.human  # names only, never the values


def test_a_planned_input_the_run_lacks_raises_missing_input_error(planner_echo):
    graph = compile_goal(model=planner_echo, inputs={"topic": "the subject"})
    with pytest.raises(MissingInputError, match="topic"):
        graph.invoke({"goal": GOAL})
    assert [c.node for c in planner_echo.calls] == ["planner"]  # no subtask ran


# -- planner failures ----------------------------------------------------------------------


def test_a_planner_without_a_valid_plan_raises_planner_error_from_invoke(refusing_planner):
    graph = compile_goal(model=refusing_planner, attempts=2)
    with pytest.raises(PlannerError, match="no valid plan .* after 2 attempts") as caught:
        graph.invoke({"goal": GOAL})
    assert isinstance(caught.value, PlanError)
    assert [c.node for c in refusing_planner.calls] == ["planner", "planner"]


async def test_a_planner_without_a_valid_plan_raises_planner_error_from_ainvoke(
    refusing_planner,
):
    graph = compile_goal(model=refusing_planner, attempts=1)
    with pytest.raises(PlannerError, match="after 1 attempt;"):
        await graph.ainvoke({"goal": GOAL})
    assert len(refusing_planner.calls) == 1


def test_an_empty_goal_raises_before_any_model_call(planner_echo):
    graph = compile_goal(model=planner_echo)
    with pytest.raises(PlanError, match="the goal is empty"):
        graph.invoke({"goal": "   "})
    assert planner_echo.calls == []


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"attempts": 0}, ValueError),
        ({"max_subtasks": 0}, ValueError),
        ({"max_concurrency": 0}, ValueError),
        ({"model": "nosuchprovider:x"}, ModelResolutionError),
        ({"no_such_option": 1}, TypeError),
    ],
)
def test_bad_options_fail_at_compile_time(options, error, planner_echo):
    options = {"model": planner_echo, **options}
    with pytest.raises(error):
        compile_goal(**options)
    assert planner_echo.calls == []


# -- streaming -----------------------------------------------------------------------------


def test_stream_with_subgraphs_shows_plan_nodes_under_run_plan_and_early_calls_under_the_planner(
    planner_echo,
):
    graph = compile_goal(model=planner_echo, aggregator=joined)
    top_updates: list[str] = []
    nested_updates: list[str] = []
    events: dict[str, list[str]] = {}
    event_namespaces: dict[str, set[tuple[str, ...]]] = {}
    tokens: dict[tuple[tuple[str, ...], str], str] = {}
    namespaces: set[tuple[str, ...]] = set()
    for namespace, mode, chunk in graph.stream(
        {"goal": GOAL, "inputs": {"topic": "tides"}},
        stream_mode=["updates", "custom", "messages"],
        subgraphs=True,
    ):
        if namespace:
            namespaces.add(namespace)
        if mode == "updates":
            (top_updates if not namespace else nested_updates).extend(chunk)
        elif mode == "custom":
            assert chunk["type"] == EVENT_TYPE
            events.setdefault(chunk["subtask"], []).append(chunk["status"])
            event_namespaces.setdefault(chunk["subtask"], set()).add(namespace)
        else:
            message, metadata = chunk
            key = (namespace, metadata["langgraph_node"])
            tokens[key] = tokens.get(key, "") + message.content

    assert top_updates == ["planner", "run_plan"]
    assert len(namespaces) == 1
    (inner,) = namespaces
    assert len(inner) == 1 and inner[0].startswith("run_plan:")
    # The plan's nodes commit their results under run_plan, as LangGraph nodes.
    assert sorted(nested_updates) == ["aggregate", "brief", "facts", "rivals"]
    # The planner is a step with its own events; the echo model streams the plan word
    # by word, so every subtask started (and reports) while the planner node ran.
    steps = ["planner", "facts", "rivals", "brief", "aggregate"]
    assert events == dict.fromkeys(steps, ["started", "succeeded"])
    # The aggregate step reports from the nested run, after the planner finished.
    assert event_namespaces.pop("aggregate") and event_namespaces == dict.fromkeys(steps[:-1], {()})
    assert tokens[((), "planner")] == json.dumps(TOPIC_PLAN)  # the planner's own reply
    by_node = {node: text for (_, node), text in tokens.items()}
    assert by_node["facts"] == "echo: [facts] facts about tides"
    assert by_node["brief"] == "echo: [brief] combine"


async def test_astream_with_subgraphs_shows_the_planner_and_every_subtask_finishing():
    graph = compile_goal(model=SimulatedChatModel(latency=0))
    finished: list[str] = []
    top: list[str] = []
    async for namespace, mode, chunk in graph.astream(
        {"goal": GOAL}, stream_mode=["updates", "custom"], subgraphs=True
    ):
        if mode == "updates" and not namespace:
            top.extend(chunk)
        elif mode == "custom" and chunk["status"] == "succeeded":
            assert not namespace or namespace[0].startswith("run_plan:")
            finished.append(chunk["subtask"])
    plan = make_plan(GOAL, model=SimulatedChatModel(latency=0))
    assert top == ["planner", "run_plan"]
    assert sorted(finished) == sorted(["planner", *plan.ids, "aggregate"])


def test_stream_without_subgraphs_shows_only_the_planner_and_run_plan(planner_echo):
    graph = compile_goal(model=planner_echo, aggregator=None)
    chunks = list(
        graph.stream({"goal": GOAL, "inputs": {"topic": "x"}}, stream_mode=["updates", "custom"])
    )
    updates = [chunk for mode, chunk in chunks if mode == "updates"]
    assert [list(chunk) for chunk in updates] == [["planner"], ["run_plan"]]
    # Events of the planner, and of the calls it started, come from the planner node.
    custom = {chunk["subtask"] for mode, chunk in chunks if mode == "custom"}
    assert custom == {"planner", "facts", "rivals", "brief"}
    # Each run replaces the thread's results, so the update is an Overwrite of plain data.
    written = updates[1]["run_plan"]["results"]
    assert isinstance(written, Overwrite)
    assert set(written.value) == {"facts", "rivals", "brief"}
    assert plain(written.value)


# -- a given plan instead of a goal -------------------------------------------------------


def test_a_plan_in_the_input_runs_as_given_without_a_planner_call(planner_echo):
    graph = compile_goal(model=planner_echo, aggregator=joined)
    state = graph.invoke({"plan": TOPIC_PLAN, "inputs": {"topic": "tides"}})

    assert set(state) == OUTPUT_KEYS
    assert planner_calls(planner_echo) == []
    assert state["goal"] is None and state["planner_usage"] is None
    assert state["plan"] == TaskPlan.model_validate(TOPIC_PLAN).model_dump(mode="json")
    assert plain(state["plan"])
    assert state["results"]["facts"].output == "echo: [facts] facts about tides"
    assert state["output"] == joined(state["results"])
    assert state["totals"].succeeded == 3


async def test_ainvoke_runs_a_given_plan_like_invoke(planner_echo):
    graph = compile_goal(model=planner_echo, aggregator=joined)
    state = await graph.ainvoke({"plan": TOPIC_PLAN, "goal": "  ", "inputs": {"topic": "kelp"}})
    assert planner_calls(planner_echo) == []  # a blank goal next to a plan is no goal
    assert state["goal"] is None
    assert state["output"] == joined(state["results"])
    assert state["results"]["rivals"].output == "echo: [rivals] rivals of kelp"


def test_a_goal_and_a_plan_together_raise_before_anything_runs(planner_echo):
    graph = compile_goal(model=planner_echo, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "both"}}
    with pytest.raises(PlanValidationError, match="both a goal and a plan.*not both"):
        graph.invoke({"goal": GOAL, "plan": TOPIC_PLAN}, config)
    assert planner_echo.calls == []
    assert graph.get_state(config).values == {}  # not even the input was written


@pytest.mark.parametrize(
    ("plan", "error", "message"),
    [
        ({"task": "t", "subtasks": []}, EmptyPlanError, "no subtasks"),
        (
            {"task": "t", "subtasks": [{"id": "a", "prompt": "x", "depends_on": ["nope"]}]},
            UnknownDependencyError,
            "unknown subtask 'nope'",
        ),
        ("task: t", PlanValidationError, "plan as JSON data.*not str"),
    ],
)
def test_a_given_plan_that_does_not_validate_raises_a_plan_error_before_any_call(
    plan, error, message, planner_echo
):
    graph = compile_goal(model=planner_echo)
    with pytest.raises(error, match=message):
        graph.invoke({"plan": plan})
    assert planner_echo.calls == []


def test_an_input_with_neither_a_goal_nor_a_plan_raises(planner_echo):
    graph = compile_goal(model=planner_echo)
    with pytest.raises(PlanValidationError, match="neither a goal nor a plan"):
        graph.invoke({"inputs": {"topic": "x"}})
    assert planner_echo.calls == []


def test_a_thread_runs_whichever_of_goal_or_plan_each_new_input_gives(planner_echo):
    graph = compile_goal(model=planner_echo, checkpointer=InMemorySaver(), aggregator=None)
    config = {"configurable": {"thread_id": "mixed"}}
    only = {"task": "t", "subtasks": [{"id": "only", "prompt": "[only] {topic}"}]}

    planned = graph.invoke({"goal": GOAL, "inputs": {"topic": "tides"}}, config)
    assert list(planned["results"]) == ["facts", "rivals", "brief"]
    given = graph.invoke({"plan": only, "inputs": {"topic": "kelp"}}, config)
    assert given["goal"] is None and given["planner_usage"] is None
    assert list(given["results"]) == ["only"]
    # Neither: the thread's given plan runs again, with the new inputs.
    again = graph.invoke({"inputs": {"topic": "reefs"}}, config)
    assert again["results"]["only"].output == "echo: [only] reefs"
    assert len(planner_calls(planner_echo)) == 1
    # A goal again clears the given plan and is planned afresh.
    replanned = graph.invoke({"goal": GOAL, "inputs": {"topic": "tides"}}, config)
    assert replanned["goal"] == GOAL and list(replanned["results"]) == ["facts", "rivals", "brief"]
    assert len(planner_calls(planner_echo)) == 2
    for saved in graph.checkpointer.list(None):
        assert plain(saved.checkpoint["channel_values"]), saved.checkpoint["channel_values"]


def test_a_given_plan_can_be_reviewed_before_run_plan(planner_echo):
    graph = compile_goal(model=planner_echo, checkpointer=InMemorySaver(), aggregator=None)
    config = {"configurable": {"thread_id": "given-review"}}
    graph.invoke(
        {"plan": TOPIC_PLAN, "inputs": {"topic": "x"}}, config, interrupt_before=["run_plan"]
    )
    paused = graph.get_state(config)
    assert paused.next == ("run_plan",)
    assert [s["id"] for s in paused.values["plan"]["subtasks"]] == ["facts", "rivals", "brief"]
    state = graph.invoke(None, config)
    assert list(state["results"]) == ["facts", "rivals", "brief"]
    assert planner_calls(planner_echo) == []


def test_the_input_schema_shows_goal_plan_and_inputs_and_the_output_schema_the_results():
    graph = compile_goal(model=SimulatedChatModel(latency=0))
    shown = graph.get_input_jsonschema()
    assert list(shown["properties"]) == ["goal", "plan", "inputs"]
    assert shown.get("required", []) == []
    assert shown["properties"]["plan"]["type"] == "object"
    assert set(graph.get_output_jsonschema()["properties"]) == OUTPUT_KEYS | {"rounds"}


def test_stream_of_a_given_plan_shows_the_planner_and_run_plan(planner_echo):
    graph = compile_goal(model=planner_echo, aggregator=None)
    chunks = list(graph.stream({"plan": TOPIC_PLAN, "inputs": {"topic": "x"}}))
    assert [list(chunk) for chunk in chunks] == [["planner"], ["run_plan"]]
    assert chunks[0]["planner"]["planner_usage"] is None


# -- checkpoints ---------------------------------------------------------------------------


def test_a_reviewed_and_edited_plan_runs_from_the_checkpoint_without_planning_again(
    planner_echo,
):
    saver = InMemorySaver()
    graph = compile_goal(model=planner_echo, checkpointer=saver, aggregator=None)
    config = {"configurable": {"thread_id": "review"}}
    graph.invoke(
        {"goal": GOAL, "inputs": {"topic": "tides"}}, config, interrupt_before=["run_plan"]
    )

    paused = graph.get_state(config)
    assert paused.next == ("run_plan",)
    assert paused.values["results"] == {}
    edited = dict(paused.values["plan"])
    edited["subtasks"] = [s for s in edited["subtasks"] if s["id"] == "facts"]
    graph.update_state(config, {"plan": edited})

    state = graph.invoke(None, config)
    assert list(state["results"]) == ["facts"]
    assert state["results"]["facts"].output == "echo: [facts] facts about tides"
    assert [c.node for c in planner_echo.calls].count("planner") == 1
    for saved in saver.list(None):
        assert plain(saved.checkpoint["channel_values"]), saved.checkpoint["channel_values"]


def test_a_new_goal_on_the_same_thread_replaces_the_earlier_results(planner_echo):
    graph = compile_goal(model=planner_echo, checkpointer=InMemorySaver(), aggregator=None)
    config = {"configurable": {"thread_id": "again"}}
    first = graph.invoke({"goal": GOAL, "inputs": {"topic": "tides"}}, config)
    assert set(first["results"]) == {"facts", "rivals", "brief"}
    planner_echo.replies = {
        PLANNER_MARKER: json.dumps({"task": "t", "subtasks": [{"id": "only", "prompt": "[only]"}]})
    }
    second = graph.invoke({"goal": "Something else"}, config)
    assert list(second["results"]) == ["only"]
    assert graph.get_state(config).values["plan"]["subtasks"][0]["id"] == "only"


# -- command line --------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def cli_model(monkeypatch) -> Callable[[BaseModel], str]:
    """`cli_model(model)` returns a `--model` name that resolves to `model`.

    The command line takes model names only; this makes the name "scripted" resolve to
    a recording fake where the planner and the goal graph resolve models.
    """

    def install(model: Any) -> str:
        for module in (planner_module, goal_module):
            original = module.resolve_model

            def resolve(spec: Any, _original: Any = original, **kwargs: Any) -> Any:
                return model if spec == "scripted" else _original(spec, **kwargs)

            monkeypatch.setattr(module, "resolve_model", resolve)
        return "scripted"

    return install


def assert_one_line_error(result, *needles: str) -> str:
    """Exit status 1, no traceback, and exactly one `Error: ...` line on stderr."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


def test_plan_writes_a_yaml_file_that_loads_back_as_the_simulated_plan(runner, tmp_path):
    path = tmp_path / "plan.yaml"
    result = runner.invoke(app, ["plan", GOAL, "-m", "simulated", "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    loaded = TaskPlan.from_file(path)
    assert loaded.task == f"{SIMULATED_MARK} {GOAL}"
    assert all(s.prompt.startswith(SIMULATED_MARK) for s in loaded.subtasks)
    assert loaded == make_plan(GOAL, model="simulated")
    assert str(path) in result.stderr and f"fanfold run {path}" in result.stderr


def test_plan_prints_the_yaml_to_stdout_without_an_output_file(runner):
    result = runner.invoke(app, ["plan", GOAL, "--model", "simulated", "--max-subtasks", "2"])
    assert result.exit_code == 0, result.output
    plan = TaskPlan.model_validate(yaml.safe_load(result.stdout))
    assert plan.task.startswith(SIMULATED_MARK)
    assert len(plan.subtasks) == 2
    assert "planned 2 subtasks" in result.stderr


def test_plan_offers_described_inputs_and_the_file_declares_the_used_ones(
    runner, tmp_path, planner_echo, cli_model
):
    path = tmp_path / "topic.yaml"
    model = cli_model(planner_echo)
    result = runner.invoke(
        app, ["plan", GOAL, "-m", model, "-i", "topic=the subject", "-i", "unused", "-o", str(path)]
    )
    assert result.exit_code == 0, result.output
    (request,) = planner_echo.calls
    assert "- {topic}: the subject\n- {unused}" in request.human
    loaded = TaskPlan.from_file(path)
    assert loaded.ids == ["facts", "rivals", "brief"]
    assert {name: spec.description for name, spec in loaded.inputs.items()} == {
        "topic": "the subject"
    }


def test_plan_failing_after_all_attempts_is_one_error_line(runner, refusing_planner, cli_model):
    model = cli_model(refusing_planner)
    result = runner.invoke(app, ["plan", GOAL, "-m", model, "--attempts", "2"])
    assert_one_line_error(result, "no valid plan", "after 2 attempts")
    assert len(refusing_planner.calls) == 2


def test_plan_into_a_missing_folder_is_one_error_line_before_any_model_call(
    runner, tmp_path, planner_echo, cli_model
):
    target = tmp_path / "nope" / "plan.yaml"
    result = runner.invoke(app, ["plan", GOAL, "-m", cli_model(planner_echo), "-o", str(target)])
    assert_one_line_error(result, str(target), "does not exist")
    assert planner_echo.calls == []


@pytest.mark.parametrize("pair", ["=description", " =x"])
def test_plan_input_without_a_name_is_one_error_line(runner, pair):
    result = runner.invoke(app, ["plan", GOAL, "-m", "simulated", "-i", pair])
    assert_one_line_error(result, "name=description")


def test_run_goal_plans_and_runs_offline_and_reports_the_planned_subtasks(runner):
    result = runner.invoke(app, ["run", "--goal", GOAL, "--model", "simulated"])
    assert result.exit_code == 0, result.output
    plan = make_plan(GOAL, model="simulated")
    lines = result.stdout.splitlines()
    assert lines[0] == f"Task: {SIMULATED_MARK} {GOAL}"
    for sid in plan.ids:
        matching = [line for line in lines if line.split() and line.split()[-1] == sid]
        assert len(matching) == 1 and matching[0].split()[0] == "succeeded", sid
    assert f"{len(plan.ids)} succeeded, 0 failed, 0 skipped" in result.stdout
    progress = [line.split() for line in result.stderr.splitlines() if line.strip()]
    assert progress[0] == ["succeeded", "planner"]
    assert progress[1][:3] == ["planned", str(len(plan.ids)), "subtasks,"]
    assert sorted(p[-1] for p in progress[2:]) == sorted([*plan.ids, "aggregate"])


def test_run_goal_json_holds_the_plan_and_every_planned_result(runner):
    result = runner.invoke(app, ["run", "-g", GOAL, "-m", "simulated", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    payload = json.loads(result.stdout)
    plan = TaskPlan.model_validate(payload["plan"])
    assert plan == make_plan(GOAL, model="simulated")
    assert list(payload["results"]) == plan.ids
    assert all(r["status"] == "succeeded" for r in payload["results"].values())
    assert payload["goal"] == GOAL
    assert payload["planner_usage"]["total_tokens"] > 0
    assert payload["totals"]["succeeded"] == len(plan.ids)


def test_run_goal_passes_inputs_to_the_plan(runner, planner_echo, cli_model):
    result = runner.invoke(
        app, ["run", "--goal", GOAL, "-m", cli_model(planner_echo), "-i", "topic=kelp", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["results"]["facts"]["output"] == "echo: [facts] facts about kelp"
    assert "- {topic}" in planner_calls(planner_echo)[0].human


def test_run_goal_exits_3_when_a_planned_subtask_fails(runner, echo_factory, cli_model):
    model = echo_factory(replies={PLANNER_MARKER: json.dumps(TOPIC_PLAN)}, fail_on=("[rivals]",))
    result = runner.invoke(app, ["run", "--goal", GOAL, "-m", cli_model(model), "-i", "topic=x"])
    assert result.exit_code == 3, result.output
    lines = result.stdout.splitlines()[1:4]
    expected = {"facts": "succeeded", "rivals": "failed", "brief": "skipped"}
    for (sid, status), line in zip(expected.items(), lines, strict=True):
        assert line.split()[0] == status and f"  {sid}" in line, line
    assert "scripted failure on '[rivals]'" in lines[1]


def test_run_goal_planner_failure_is_one_error_line(runner, refusing_planner, cli_model):
    model = cli_model(refusing_planner)
    args = ["run", "--goal", GOAL, "-m", model, "--plan-attempts", "1"]
    result = runner.invoke(app, [*args, "--quiet"])
    assert_one_line_error(result, "no valid plan", "after 1 attempt;")
    # Without --quiet, the planner's progress line comes first, as a subtask's would.
    shown = runner.invoke(app, args)
    assert shown.exit_code == 1
    assert [line.split() for line in shown.stderr.splitlines()][0] == ["failed", "planner"]


def test_run_without_plan_or_goal_is_one_error_line(runner):
    assert_one_line_error(runner.invoke(app, ["run", "-m", "simulated"]), "PLAN", "--goal")


def test_run_with_both_plan_and_goal_is_one_error_line(runner, research_plan_path):
    result = runner.invoke(app, ["run", str(research_plan_path), "--goal", GOAL, "-m", "simulated"])
    assert_one_line_error(result, "not both")


def test_run_goal_with_checkpoint_prints_a_run_id_that_resumes_as_finished(runner, tmp_path):
    db = tmp_path / "runs.db"
    result = runner.invoke(
        app, ["run", "--goal", GOAL, "-m", "simulated", "--checkpoint", str(db), "--json"]
    )
    assert result.exit_code == 0, result.output
    run_id = result.stderr.split("run id: ", 1)[1].split()[0]
    again = runner.invoke(app, ["resume", run_id, "--checkpoint", str(db), "--json"])
    assert again.exit_code == 0, again.output
    assert "already finished" in again.stderr
    assert json.loads(again.stdout)["plan"] == json.loads(result.stdout)["plan"]


@pytest.mark.parametrize("option", ["--max-subtasks", "--plan-attempts"])
def test_goal_only_options_with_a_plan_file_are_one_error_line(runner, research_plan_path, option):
    result = runner.invoke(app, ["run", str(research_plan_path), "-m", "simulated", option, "2"])
    assert_one_line_error(result, option, "--goal")


def test_run_goal_with_an_empty_goal_is_one_error_line(runner):
    assert_one_line_error(
        runner.invoke(app, ["run", "--goal", " ", "-m", "simulated"]), "the goal is empty"
    )


def test_plan_help_starts_with_an_imperative_line_and_shows_examples(runner):
    result = runner.invoke(app, ["plan", "--help"])
    assert result.exit_code == 0
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("Usage:")
    assert lines[1] == "Ask a model to split a goal into subtasks and write the plan for review."
    assert "Examples:" in result.stdout
    assert 'fanfold plan "' in result.stdout


def test_run_help_shows_a_goal_example(runner):
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert "[PLAN]" in result.stdout
    assert 'fanfold run --goal "' in result.stdout
