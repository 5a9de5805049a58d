"""The graphs of `langgraph.json`, served by `langgraph dev` and driven with langgraph-sdk.

One server runs for the module, offline: on a free loopback port, in a temporary
working folder (its `.langgraph_api` state), with tracing, telemetry, analytics and the
version check turned off, and the served graphs on the simulated model. A fixture
finalizer stops it (terminate, then kill), so a failing test never leaves it running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from fanfold import EVENT_TYPE, TaskPlan, make_plan

pytestmark = pytest.mark.slow
"""Each test talks to a real LangGraph Server process."""

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "langgraph.json"
EXAMPLES = ROOT / "examples"
STARTUP_TIMEOUT = 90.0
"""Seconds the server may take to answer `/ok` (it starts in about two here)."""

RECIPES = {
    "research": ["topic"],
    "document_analysis": ["doc"],
    "data_processing": ["data"],
    "content_generation": ["topic"],
}
"""Served recipe graph -> the run inputs its plan declares."""
PLAN_OR_GOAL = "plan_or_goal"
RESEARCH_IDS = TaskPlan.from_file(EXAMPLES / "research.yaml").ids
GOAL = "Write a short brief on tidal power"
GIVEN_PLAN = {
    "task": "Brief on {topic}",
    "inputs": {"topic": {"description": "What the brief is about."}},
    "subtasks": [
        {"id": "facts", "prompt": "Facts about {topic}"},
        {"id": "rivals", "prompt": "Rivals of {topic}"},
        {"id": "brief", "prompt": "Combine\n{facts}\n{rivals}", "depends_on": ["facts", "rivals"]},
    ],
}

_DROPPED_ENV = (
    # keys, licences and endpoints the server must not see, so it calls nothing outside
    "LANGSMITH_API_KEY",
    "LANGCHAIN_API_KEY",
    "LANGSMITH_CONTROL_PLANE_API_KEY",
    "LANGGRAPH_CLOUD_LICENSE_KEY",
    "LANGSMITH_ENDPOINT",
    "LANGCHAIN_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
)
OFFLINE_ENV = {
    "LANGSMITH_TRACING": "false",  # no LangSmith traces
    "LANGSMITH_TRACING_V2": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGCHAIN_TRACING": "false",
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # the CLI's usage report
    "LANGGRAPH_NO_VERSION_CHECK": "true",  # the server's PyPI version check
    "OTEL_ENABLED": "false",
    "FANFOLD_MODEL": "simulated",
    "PYTHONUNBUFFERED": "1",
}
"""With no key or licence set, the server also skips its usage-metadata loop."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env.update(OFFLINE_ENV)
    env["FANFOLD_HOME"] = str(workdir / "fanfold-home")
    return env


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"langgraph dev exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    pytest.fail(f"langgraph dev did not answer {url}/ok in {STARTUP_TIMEOUT:.0f}s:\n{tail(log)}")


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server's process group; kill it if it has not stopped in 10 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a `langgraph dev` server serving the repository's langgraph.json."""
    workdir = tmp_path_factory.mktemp("langgraph-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    command = [
        sys.executable,
        "-m",
        "langgraph_cli",
        "dev",
        "--no-browser",
        "--no-reload",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(CONFIG),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=workdir,  # the server keeps its state in ./.langgraph_api
            env=server_env(workdir),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    try:
        wait_until_ready(url, process, log)
        yield url
    finally:
        stop(process)


@pytest.fixture
def client(server_url: str) -> LangGraphClient:
    return get_client(url=server_url)


def statuses(results: dict[str, Any]) -> dict[str, str]:
    return {sid: result["status"] for sid, result in results.items()}


def all_succeeded(ids: list[str]) -> dict[str, str]:
    return dict.fromkeys(ids, "succeeded")


async def assistant_id(client: LangGraphClient, graph_id: str) -> str:
    (assistant,) = await client.assistants.search(graph_id=graph_id)
    found: str = assistant["assistant_id"]
    return found


def recipe_inputs(name: str) -> dict[str, str]:
    if name == "document_analysis":
        return {"doc": (EXAMPLES / "document_analysis" / "incident_review.md").read_text()}
    if name == "data_processing":
        return {"data": (EXAMPLES / "data_processing" / "orders.csv").read_text()}
    return {}


# -- what the server serves ----------------------------------------------------------------


async def test_the_server_serves_the_four_recipes_and_the_plan_or_goal_graph(client, server_url):
    assistants = await client.assistants.search(limit=50)
    assert sorted(a["graph_id"] for a in assistants) == sorted([*RECIPES, PLAN_OR_GOAL])
    with urllib.request.urlopen(f"{server_url}/info", timeout=5) as reply:
        assert reply.status == 200


@pytest.mark.parametrize("name", list(RECIPES))
async def test_a_recipe_input_schema_shows_only_its_inputs_and_the_output_schema_the_results(
    client, name
):
    schemas = await client.assistants.get_schemas(await assistant_id(client, name))
    shown = schemas["input_schema"]["properties"]
    assert list(shown) == ["inputs"]
    assert list(shown["inputs"]["properties"]) == RECIPES[name]
    assert set(schemas["output_schema"]["properties"]) == {
        "output",
        "results",
        "totals",
        "aggregate_error",
    }


async def test_the_plan_or_goal_input_schema_shows_goal_plan_and_inputs(client):
    schemas = await client.assistants.get_schemas(await assistant_id(client, PLAN_OR_GOAL))
    assert list(schemas["input_schema"]["properties"]) == ["goal", "plan", "inputs"]
    assert schemas["input_schema"].get("required", []) == []
    assert {"output", "results", "totals", "aggregate_error", "plan", "planner_usage"} <= set(
        schemas["output_schema"]["properties"]
    )


# -- running recipes -----------------------------------------------------------------------


async def test_a_streamed_recipe_run_sends_every_lifecycle_event_and_each_subtasks_tokens(client):
    thread = await client.threads.create()
    events: dict[str, list[str]] = {}
    tokens: dict[str, str] = {}
    values: list[dict[str, Any]] = []
    async for part in client.runs.stream(
        thread["thread_id"],
        "research",
        input={"inputs": {"topic": "kelp farming"}},
        stream_mode=["custom", "messages-tuple", "values"],
        context={"user_id": "u-1"},  # a caller's context must not displace fanfold's own
    ):
        if part.event == "custom":
            assert part.data["type"] == EVENT_TYPE
            events.setdefault(part.data["subtask"], []).append(part.data["status"])
        elif part.event == "messages":
            message, metadata = part.data
            node = metadata["langgraph_node"]
            tokens[node] = tokens.get(node, "") + message["content"]
        elif part.event == "values":
            values.append(part.data)
        else:
            assert part.event == "metadata", part

    assert events == {sid: ["started", "succeeded"] for sid in [*RESEARCH_IDS, "aggregate"]}
    assert set(tokens) == {*RESEARCH_IDS, "aggregate"}
    assert all(text.startswith("[simulated reply]") for text in tokens.values())
    assert statuses(values[-1]["results"]) == all_succeeded(RESEARCH_IDS)
    assert values[-1]["output"] == tokens["aggregate"]

    state = await client.threads.get_state(thread["thread_id"])
    assert state["next"] == []
    assert statuses(state["values"]["results"]) == all_succeeded(RESEARCH_IDS)
    assert tokens["market_size"] == state["values"]["results"]["market_size"]["output"]
    assert "market size and growth rate of kelp" in tokens["market_size"]
    assert state["values"]["totals"]["succeeded"] == len(RESEARCH_IDS)


@pytest.mark.parametrize("name", ["document_analysis", "data_processing", "content_generation"])
async def test_every_other_recipe_runs_to_the_end_on_the_server(client, name):
    thread = await client.threads.create()
    final = await client.runs.wait(thread["thread_id"], name, input={"inputs": recipe_inputs(name)})
    assert final["aggregate_error"] is None and final["output"]
    assert final["results"] and set(statuses(final["results"]).values()) == {"succeeded"}
    state = await client.threads.get_state(thread["thread_id"])
    assert statuses(state["values"]["results"]) == statuses(final["results"])


async def test_a_thread_interrupted_before_the_aggregate_resumes_through_the_api(client):
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    run = await client.runs.create(
        thread_id, "research", input={"inputs": {}}, interrupt_before=["aggregate"]
    )
    await client.runs.join(thread_id, run["run_id"])

    assert (await client.threads.get(thread_id))["status"] == "interrupted"
    paused = await client.threads.get_state(thread_id)
    assert paused["next"] == ["aggregate"]
    assert statuses(paused["values"]["results"]) == all_succeeded(RESEARCH_IDS)
    assert paused["values"]["output"] is None

    final = await client.runs.wait(thread_id, "research", input=None)
    assert final["output"] and final["aggregate_error"] is None
    state = await client.threads.get_state(thread_id)
    assert state["next"] == []
    assert (await client.threads.get(thread_id))["status"] == "idle"
    # The resumed run kept the subtasks' results: nothing was requested again.
    assert state["values"]["results"] == paused["values"]["results"]


# -- the plan-or-goal graph ----------------------------------------------------------------


async def test_the_plan_or_goal_graph_plans_a_goal_then_runs_a_given_plan_on_the_same_thread(
    client,
):
    thread_id = (await client.threads.create())["thread_id"]
    planned = await client.runs.wait(
        thread_id, PLAN_OR_GOAL, input={"goal": GOAL}, context={"user_id": "u-1"}
    )
    expected = make_plan(GOAL, model="simulated")
    assert planned["goal"] == GOAL
    assert TaskPlan.model_validate(planned["plan"]) == expected
    assert statuses(planned["results"]) == all_succeeded(expected.ids)
    assert planned["planner_usage"]["total_tokens"] > 0
    assert planned["output"] and planned["totals"]["succeeded"] == len(expected.ids)

    given = await client.runs.wait(
        thread_id, PLAN_OR_GOAL, input={"plan": GIVEN_PLAN, "inputs": {"topic": "tides"}}
    )
    assert given["goal"] is None and given["planner_usage"] is None
    assert TaskPlan.model_validate(given["plan"]) == TaskPlan.model_validate(GIVEN_PLAN)
    assert statuses(given["results"]) == all_succeeded(["facts", "rivals", "brief"])
    assert "tides" in given["results"]["facts"]["output"]
    state = await client.threads.get_state(thread_id)
    assert list(state["values"]["results"]) == ["facts", "rivals", "brief"]


async def test_the_plan_or_goal_graph_streams_the_plans_events_nested_under_run_plan(client):
    thread_id = (await client.threads.create())["thread_id"]
    finished: list[str] = []
    namespaces: set[str] = set()
    async for part in client.runs.stream(
        thread_id,
        PLAN_OR_GOAL,
        input={"plan": GIVEN_PLAN, "inputs": {"topic": "tides"}},
        stream_mode=["custom"],
        stream_subgraphs=True,
    ):
        if part.event.startswith("custom"):
            namespaces.add(part.event)
            if part.data["status"] == "succeeded":
                finished.append(part.data["subtask"])
    assert sorted(finished) == ["aggregate", "brief", "facts", "rivals"]
    (namespace,) = namespaces
    assert namespace.startswith("custom|run_plan:")


async def test_a_goal_graph_input_with_both_a_goal_and_a_plan_fails_the_run(client):
    thread_id = (await client.threads.create())["thread_id"]
    run = await client.runs.create(
        thread_id, PLAN_OR_GOAL, input={"goal": GOAL, "plan": GIVEN_PLAN}
    )
    await client.runs.join(thread_id, run["run_id"])
    assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "error"
    assert (await client.threads.get(thread_id))["status"] == "error"
    state = await client.threads.get_state(thread_id)
    assert state["values"].get("results") is None  # nothing ran


async def test_a_plan_reviewed_on_the_server_runs_as_edited_without_planning_again(client):
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(
        thread_id, PLAN_OR_GOAL, input={"goal": GOAL}, interrupt_before=["run_plan"]
    )
    paused = await client.threads.get_state(thread_id)
    assert paused["next"] == ["run_plan"]
    plan = paused["values"]["plan"]
    kept = plan["subtasks"][0]
    edited = {**plan, "subtasks": [{**kept, "depends_on": []}]}
    await client.threads.update_state(thread_id, {"plan": edited})

    final = await client.runs.wait(thread_id, PLAN_OR_GOAL, input=None)
    assert list(final["results"]) == [kept["id"]]
    assert final["planner_usage"] == paused["values"]["planner_usage"]
    assert final["goal"] == GOAL


@pytest.mark.parametrize(
    ("graph_id", "input", "name"),
    [
        ("document_analysis", {"inputs": {}}, "doc"),
        (PLAN_OR_GOAL, {"plan": GIVEN_PLAN, "inputs": {}}, "topic"),
    ],
)
async def test_a_missing_input_on_the_server_names_the_inputs_field_not_the_cli_flag(
    client, graph_id, input, name
):
    thread_id = (await client.threads.create())["thread_id"]
    final = await client.runs.wait(thread_id, graph_id, input=input, raise_error=False)
    error = final["__error__"]
    assert error["error"] == "MissingInputError"
    assert error["message"].endswith(
        f'pass it as {{"inputs": {{"{name}": ...}}}} (the "inputs" field of the run\'s input)'
    )


# -- what clients may not choose -----------------------------------------------------------


async def failed_run(client: LangGraphClient, graph: str, input: Any) -> tuple[str, dict]:
    """Run `graph` on a new thread; the error it failed with and the thread's state."""
    thread_id = (await client.threads.create())["thread_id"]
    final = await client.runs.wait(thread_id, graph, input=input, raise_error=False)
    assert isinstance(final, dict) and "__error__" in final, final
    error = final["__error__"]
    state = await client.threads.get_state(thread_id)
    return f"{error['error']}: {error['message']}", state["values"]


async def test_a_plan_may_not_choose_a_model_the_operator_did_not_allow(client):
    plan = {
        "task": "Spend the operator's money",
        "subtasks": [{"id": "a", "prompt": "x", "model": "openai:gpt-4o"}],
        "aggregation": {"model": "openai:o3-mini"},
    }
    error, values = await failed_run(client, PLAN_OR_GOAL, {"plan": plan})
    assert error.startswith("ModelNotAllowedError: subtask 'a' asks for model 'openai:gpt-4o'")
    assert "which this server does not allow (allowed: 'simulated')" in error
    assert not values.get("results")  # nothing ran

    plan["subtasks"][0]["model"] = "simulated"  # the operator's model: allowed
    error, _ = await failed_run(client, PLAN_OR_GOAL, {"plan": plan})
    assert error.startswith("ModelNotAllowedError: the aggregation asks for model 'openai:o3-mini'")

    plan["aggregation"] = {"model": {"name": "simulated", "base_url": "http://127.0.0.1:9/v1"}}
    error, _ = await failed_run(client, PLAN_OR_GOAL, {"plan": plan})
    assert "the aggregation gives model settings (base_url)" in error

    del plan["aggregation"]
    thread_id = (await client.threads.create())["thread_id"]
    final = await client.runs.wait(thread_id, PLAN_OR_GOAL, input={"plan": plan})
    assert statuses(final["results"]) == {"a": "succeeded"}


@pytest.mark.parametrize(
    ("graph", "given"),
    [("research", {"inputs": {}}), (PLAN_OR_GOAL, {"plan": GIVEN_PLAN, "inputs": {"topic": "t"}})],
)
async def test_a_run_input_carrying_results_is_refused(client, graph, given):
    forged = {"market_size": {"id": "market_size", "status": "succeeded", "output": "FAKE"}}
    error, values = await failed_run(client, graph, {**given, "results": forged})
    assert error.startswith("PlanValidationError: a run's input holds only ")
    assert "not 'results'; fanfold writes results, output and totals itself" in error
    assert "FAKE" not in repr(values)


@pytest.mark.parametrize("graph", ["research", PLAN_OR_GOAL])
async def test_run_inputs_that_are_not_a_mapping_get_a_clear_error(client, graph):
    given = {"inputs": "str"} if graph == "research" else {"plan": GIVEN_PLAN, "inputs": "str"}
    error, _ = await failed_run(client, graph, given)
    assert "a run's inputs must be a mapping of input name -> value, not str" in error
    assert "dictionary update sequence" not in error
