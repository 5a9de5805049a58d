"""Model settings per subtask: `model: {name: ..., temperature: 0, max_tokens: 400}`.

The settings reach the chat model's constructor (and so the provider, checked on the
loopback server's request log), take part in the cache key and the estimate, and a wrong
setting is one readable error in `run`, `show` and `estimate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fanfold import (
    ModelSpec,
    PlanError,
    ResultCache,
    SimulatedChatModel,
    TaskPlan,
    UnknownModelSettingError,
    compile_goal,
    compile_plan,
    estimate_plan,
    make_plan,
    plan_to_yaml,
    resolve_model,
)
from fanfold.cli import app
from fanfold.testing import SimServer, SimServerConfig

API_KEY = "sk-test-settings-0123456789abcdef"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    with SimServer(SimServerConfig(api_key=API_KEY)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        yield srv


def one_subtask(model: Any, prompt: str = "Write one line about tides.") -> dict[str, Any]:
    return {"task": "Notes", "subtasks": [{"id": "a", "prompt": prompt, "model": model}]}


def write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_subtasks_model_settings_reach_the_provider(server: SimServer):
    model = {"name": "openai:sim-model", "temperature": 0, "max_tokens": 400, "top_p": 0.5}
    graph = compile_plan(one_subtask(model), aggregator=None)
    state = graph.invoke({"inputs": {}})
    assert state["results"]["a"].ok
    (request,) = server.log
    assert request.params["temperature"] == 0
    assert request.params["top_p"] == 0.5
    assert 400 in (request.params.get("max_tokens"), request.params.get("max_completion_tokens"))


def test_the_aggregation_and_the_default_model_take_a_mapping_too(server: SimServer):
    plan = {
        **one_subtask(None),
        "aggregation": {"model": {"name": "openai:sim-model", "temperature": 0.25}},
    }
    graph = compile_plan(plan, model={"name": "openai:sim-model", "temperature": 0.75})
    graph.invoke({"inputs": {}})
    temperatures = sorted(r.params["temperature"] for r in server.log)
    assert temperatures == [0.25, 0.75]


def test_the_planner_and_the_goal_graph_take_a_mapping():
    plan = make_plan("Compare two bikes", model={"name": "simulated", "seed": 7})
    assert plan.subtasks
    graph = compile_goal(model='{"name": "simulated", "output_tokens": 3}')
    state = graph.invoke({"goal": "Compare two bikes"})
    assert state["plan"]["subtasks"]


def test_an_unknown_setting_names_the_field_it_resembles():
    with pytest.raises(UnknownModelSettingError, match="did you mean 'temperature'") as caught:
        resolve_model({"name": "openai:gpt-4o-mini", "temprature": 0})
    assert caught.value.setting == "temprature"
    with pytest.raises(UnknownModelSettingError, match="did you mean 'output_tokens'"):
        resolve_model(ModelSpec(name="simulated", settings={"output_tokns": 3}))


def test_resolving_a_mapping_gives_the_model_its_settings():
    model = resolve_model({"name": "simulated", "output_tokens": 3, "seed": 5})
    assert isinstance(model, SimulatedChatModel)
    assert (model.output_tokens, model.seed) == (3, 5)


@pytest.mark.parametrize("command", ["run", "show", "estimate"])
def test_a_mistyped_setting_is_one_error_line_in_every_command(command: str, tmp_path: Path):
    plan = write(
        tmp_path / "plan.yaml", one_subtask({"name": "openai:gpt-4o-mini", "temprature": 0})
    )
    result = CliRunner().invoke(app, [command, str(plan)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: model 'openai:gpt-4o-mini': unknown setting 'temprature' for ChatOpenAI; "
        "did you mean 'temperature'?"
    ]


@pytest.mark.parametrize("command", ["run", "show", "estimate"])
def test_a_model_mapping_runs_shows_and_estimates(command: str, tmp_path: Path):
    data = {
        **one_subtask({"name": "simulated", "output_tokens": 3}),
        "aggregation": {"model": {"name": "simulated", "seed": 1}},
    }
    plan = write(tmp_path / "plan.yaml", data)
    result = CliRunner().invoke(app, [command, str(plan), "--no-cache"][: 2 + (command == "run")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("value", [42, ["openai:gpt-4o"], {"temperature": 0}, {"name": ""}])
def test_a_model_of_the_wrong_shape_is_one_readable_error(value: Any, tmp_path: Path):
    plan = write(tmp_path / "plan.yaml", one_subtask(value))
    result = CliRunner().invoke(app, ["run", str(plan)])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: invalid TaskPlan: subtasks.0")
    assert "subtask 'a'" in line
    assert "function-after" not in line and "BaseChatModel]" not in line
    assert "name" in line


def test_a_setting_that_would_hold_a_secret_is_refused_without_echoing_it():
    with pytest.raises(PlanError, match="'api_key' would put a secret in the plan") as caught:
        TaskPlan.model_validate(one_subtask({"name": "openai:gpt-4o", "api_key": "sk-abcdef1234"}))
    assert "sk-abcdef1234" not in str(caught.value)


def test_model_json_on_the_command_line(tmp_path: Path):
    plan = write(tmp_path / "plan.yaml", one_subtask(None))
    model = json.dumps({"name": "simulated", "output_tokens": 2})
    result = CliRunner().invoke(app, ["run", str(plan), "-m", model, "--json", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"]["a"]["model"] == "simulated"
    wrong = json.dumps({"name": "simulated", "output_tokns": 2})
    result = CliRunner().invoke(app, ["estimate", str(plan), "-m", wrong])
    assert result.exit_code == 1
    assert "did you mean 'output_tokens'" in result.stderr
    result = CliRunner().invoke(app, ["run", str(plan), "-m", '{"name": "simulated"'])
    assert result.exit_code == 1
    assert "is not valid JSON" in result.stderr


def test_settings_take_part_in_the_cache_key(server: SimServer, tmp_path: Path):
    cache = ResultCache(tmp_path / "calls.db")

    def run(model: Any) -> None:
        compile_plan(one_subtask(model), aggregator=None, cache=cache).invoke({"inputs": {}})

    run({"name": "openai:sim-model", "temperature": 0})
    run({"name": "openai:sim-model", "temperature": 0})
    assert server.request_count == 1
    run({"name": "openai:sim-model", "temperature": 1})
    assert server.request_count == 2
    run({"name": "openai:sim-model", "temperature": 0, "max_tokens": 20})
    assert server.request_count == 3


def test_max_tokens_caps_the_estimated_reply_and_its_price():
    free = estimate_plan(one_subtask({"name": "openai:gpt-4o"}), aggregator=None)
    capped = estimate_plan(
        one_subtask({"name": "openai:gpt-4o", "max_tokens": 10}), aggregator=None
    )
    by_default = estimate_plan(
        one_subtask(None), model='{"name": "openai:gpt-4o", "max_tokens": 10}', aggregator=None
    )
    assert free.subtasks[0].model == capped.subtasks[0].model == "gpt-4o"
    assert free.subtasks[0].output_tokens_per_call == 256
    assert capped.subtasks[0].output_tokens_per_call == 10
    assert by_default.subtasks[0].output_tokens_per_call == 10
    assert capped.cost is not None and free.cost is not None and capped.cost < free.cost


def test_a_plan_with_settings_round_trips_and_has_its_own_fingerprint(tmp_path: Path):
    plan = TaskPlan.model_validate(one_subtask({"name": "openai:gpt-4o", "temperature": 0}))
    assert plan.subtasks[0].model == ModelSpec(name="openai:gpt-4o", settings={"temperature": 0})
    dumped = plan.model_dump(mode="json")
    assert dumped["subtasks"][0]["model"] == {"name": "openai:gpt-4o", "temperature": 0}
    assert TaskPlan.model_validate(dumped) == plan
    (tmp_path / "plan.yaml").write_text(plan_to_yaml(plan), encoding="utf-8")
    assert TaskPlan.from_file(tmp_path / "plan.yaml") == plan
    plain = TaskPlan.model_validate(one_subtask("openai:gpt-4o"))
    assert plan.fingerprint() != plain.fingerprint()
